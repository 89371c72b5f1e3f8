//! The ring file: header layout, creation, validation on attach, and the mapping itself.
//!
//! ```text
//! struct RingFile {              // changing a field means a new FORMAT_VERSION
//!     magic:        [u8; 8],  //    0  b"SKFRING\0"
//!     version:      u32,      //    8  FORMAT_VERSION; the "ready" word, stored last (Release)
//!     header_len:   u32,      //   12  HEADER_LEN = 4096 (data starts page-aligned)
//!     capacity:     u64,      //   16  data bytes, multiple of 8
//!     intake_id:    u16,      //   24
//!     _reserved:    [u8; 6],  //   26
//!     created_us:   i64,      //   32  creation time, µs since the Unix epoch
//!     _pad:         [u8; 88], //   40
//!     head:         u64,      //  128  atomic; producer stores Release, consumer loads Acquire
//!     next_seq:     u64,      //  136  atomic; producer only (Relaxed), stored before head
//!     _pad:         [u8; 112],//  144  head's 128-byte line ends here
//!     committed:    u64,      //  256  atomic; consumer stores Release, producer loads Acquire
//!     committed_seq: u64,     //  264  atomic; seq of the first uncommitted record, stored
//!                             //       (Relaxed) just before committed; 0 in a new file
//!     _pad:         [u8; 3824],// 272  committed's line, then zero up to the data
//!     data:   [u8; capacity], // 4096  records (see record.rs), never straddling the end
//! }
//! ```
//!
//! All integers little-endian (native on every target we ship). The creator holds `flock`
//! on the file while it creates or re-initialises it, and stores `version` last with Release;
//! attachers load it with Acquire, so they see either a complete header or "not initialised".
//! Each attached role (producer, consumer) holds an OFD byte lock (locks.rs), so a second
//! producer or consumer on the same ring is refused; the kernel drops the lock when the
//! holder dies, however it dies. Nobody may truncate a mapped ring file (SIGBUS).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use memmap2::{MmapMut, MmapOptions};

use super::locks::{lock_role, Role};
use super::memory::{check_indices, RingMemory};
use crate::queue::shared_file::{open_for_creation, open_private_file, Create, PrivateDir};
use crate::queue::sync::{shm, Ordering};
use crate::queue::RingError;

pub(crate) const MAGIC: [u8; 8] = *b"SKFRING\0";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_LEN: u64 = 4096;
pub(crate) const MIN_CAPACITY: u64 = 256;
pub(crate) const MAX_CAPACITY: u64 = 1 << 40;

const OFF_VERSION: usize = 8;
const OFF_HEADER_LEN: usize = 12;
const OFF_CAPACITY: usize = 16;
const OFF_INTAKE: usize = 24;
const OFF_CREATED: usize = 32;
pub(crate) const OFF_HEAD: usize = 128;
const OFF_NEXT_SEQ: usize = 136;
pub(crate) const OFF_COMMITTED: usize = 256;
const OFF_COMMITTED_SEQ: usize = 264;

/// A mapped, validated ring file.
pub(crate) struct MappedRing {
    base: NonNull<u8>,
    capacity: u64,
    intake_id: u16,
    path: PathBuf,
    /// Hole punching still worth trying (cleared after the file system refused it).
    punch: std::sync::atomic::AtomicBool,
    /// Prefaulting still worth trying (cleared after the kernel refused it: before 5.14).
    prefault: std::sync::atomic::AtomicBool,
    /// The system's page size: only whole pages are given back.
    page: u64,
    _map: MmapMut,
    _file: File,
}

// SAFETY: `base` points into `_map`, which this struct owns and which stays mapped at the
// same address until drop; moving the struct to another thread changes nothing about the
// memory. Every access through `base` is an atomic or a protocol-guarded copy (see memory.rs).
unsafe impl Send for MappedRing {}

/// The capacity a request turns into: rounded up to a multiple of 8, within bounds.
pub(crate) fn normalise_capacity(requested: u64) -> Result<u64, RingError> {
    let bad = |reason| RingError::BadCapacity {
        capacity: requested,
        reason,
    };
    if requested < MIN_CAPACITY {
        return Err(bad("smaller than the 256-byte minimum"));
    }
    if requested > MAX_CAPACITY {
        return Err(bad("larger than the 1 TiB maximum"));
    }
    Ok(requested.next_multiple_of(8))
}

/// The system's page size (4096 when it cannot be read).
fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

/// The whole pages of the file range `from..to`: `from` rounded up, `to` rounded down.
pub(crate) fn whole_pages(from: u64, to: u64, page: u64) -> Option<(u64, u64)> {
    let start = from.next_multiple_of(page);
    let end = to - to % page;
    if end > start {
        Some((start, end - start))
    } else {
        None
    }
}

fn unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl MappedRing {
    /// Maps `file` (already sized to `len`) read-write and shared.
    fn map(file: File, len: u64, path: &Path) -> Result<(MmapMut, NonNull<u8>, File), RingError> {
        let len = usize::try_from(len).map_err(|_| RingError::BadCapacity {
            capacity: len,
            reason: "does not fit in this platform's address space",
        })?;
        // SAFETY: MAP_SHARED of a ring file is the point: other processes modify it while it
        // is mapped. We never create Rust references to its bytes; header words are accessed
        // only as atomics and the data area only by raw copies under the ring protocol. Ring
        // files are never truncated while mapped (only unlinked), so the mapping stays valid.
        let mut map = unsafe { MmapOptions::new().len(len).map_mut(&file) }
            .map_err(|e| RingError::io("map ring file", path, e))?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| RingError::BadHeader {
            path: path.to_path_buf(),
            reason: "mapping returned a null address".into(),
        })?;
        Ok((map, base, file))
    }

    fn u64_at(&self, off: usize) -> &shm::AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && (off as u64) < HEADER_LEN);
        // SAFETY: `off` is one of the 8-aligned header offsets above, inside the 4096-byte
        // header of a page-aligned mapping that lives as long as `self`; AtomicU64 has the
        // size and alignment of u64, and every process touches these words only atomically.
        unsafe { &*(self.base.as_ptr().add(off) as *const shm::AtomicU64) }
    }

    fn u32_at(&self, off: usize) -> &shm::AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && (off as u64) < HEADER_LEN);
        // SAFETY: as in `u64_at`, for a 4-aligned u32 word of the header.
        unsafe { &*(self.base.as_ptr().add(off) as *const shm::AtomicU32) }
    }

    /// Creates, re-initialises or reopens the ring at `path`. Returns the mapping and
    /// whether an existing valid ring was reopened.
    pub(crate) fn create_or_open(
        path: &Path,
        capacity: u64,
        intake_id: u16,
    ) -> Result<(Self, bool), RingError> {
        let capacity = normalise_capacity(capacity)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            PrivateDir::create(dir)?;
        }
        let (file, _creating, len) = open_for_creation(path)?;
        if len >= HEADER_LEN {
            let (map, base, file) = Self::map(file, len, path)?;
            let ring = Self::from_parts(map, base, file, path)?;
            match ring.validate(len) {
                Ok(()) => return Ok((ring, true)),
                Err(RingError::NotInitialised { .. }) => {
                    tracing::warn!(path = %path.display(), "ring file was never fully created, re-initialising it");
                    let file = ring.into_file();
                    return Self::initialise(file, path, capacity, intake_id).map(|r| (r, false));
                }
                Err(e) => return Err(e),
            }
        }
        if len != 0 {
            tracing::warn!(path = %path.display(), len, "ring file shorter than its header, re-initialising it");
        }
        Self::initialise(file, path, capacity, intake_id).map(|r| (r, false))
    }

    fn initialise(
        file: File,
        path: &Path,
        capacity: u64,
        intake_id: u16,
    ) -> Result<Self, RingError> {
        let total = HEADER_LEN + capacity;
        let sized = |e| RingError::io("size ring file", path, e);
        file.set_len(0).map_err(sized)?;
        file.set_len(total).map_err(sized)?;
        // Reserve the memory now: on tmpfs a page first touched when /dev/shm is full would
        // kill the writer with SIGBUS; here it is a clean error at start-up instead.
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, total as libc::off_t) };
        if rc != 0 && rc != libc::EOPNOTSUPP && rc != libc::EINVAL {
            let e = std::io::Error::from_raw_os_error(rc);
            return Err(RingError::io("reserve memory for ring file", path, e));
        }
        let (map, base, file) = Self::map(file, total, path)?;
        let put = |off: usize, bytes: &[u8]| {
            // SAFETY: header offsets + lengths stay inside the 4096-byte header; nobody else
            // reads these bytes before the version word below is published (flock held,
            // version still 0 so attachers refuse the file).
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.as_ptr().add(off), bytes.len())
            }
        };
        put(0, &MAGIC);
        put(OFF_HEADER_LEN, &(HEADER_LEN as u32).to_le_bytes());
        put(OFF_CAPACITY, &capacity.to_le_bytes());
        put(OFF_INTAKE, &intake_id.to_le_bytes());
        put(OFF_CREATED, &unix_micros().to_le_bytes());
        let ring = Self::from_parts(map, base, file, path)?;
        // Pairs with the Acquire load in `validate` (any attacher): all of the header above
        // is visible to whoever sees the version.
        ring.u32_at(OFF_VERSION)
            .store(FORMAT_VERSION, std::sync::atomic::Ordering::Release);
        ring.validate(total)?;
        Ok(ring)
    }

    /// Opens an existing ring for one role, validating the header and taking the role lock.
    pub(crate) fn attach(path: &Path, role: Role) -> Result<Self, RingError> {
        let file = open_private_file(path, Create::No)?;
        lock_role(&file, path, role)?;
        let len = file
            .metadata()
            .map_err(|e| RingError::io("stat ring file", path, e))?
            .len();
        if len < HEADER_LEN {
            return Err(RingError::SizeMismatch {
                path: path.to_path_buf(),
                file_len: len,
                expected: HEADER_LEN,
            });
        }
        let (map, base, file) = Self::map(file, len, path)?;
        let ring = Self::from_parts(map, base, file, path)?;
        ring.validate(len)?;
        Ok(ring)
    }

    fn from_parts(
        map: MmapMut,
        base: NonNull<u8>,
        file: File,
        path: &Path,
    ) -> Result<Self, RingError> {
        let mut ring = MappedRing {
            base,
            capacity: 0,
            intake_id: 0,
            path: path.to_path_buf(),
            punch: std::sync::atomic::AtomicBool::new(true),
            prefault: std::sync::atomic::AtomicBool::new(true),
            page: page_size(),
            _map: map,
            _file: file,
        };
        ring.capacity = u64::from_le_bytes(ring.header_bytes(OFF_CAPACITY));
        ring.intake_id = u16::from_le_bytes(ring.header_bytes(OFF_INTAKE));
        Ok(ring)
    }

    /// Unmaps and returns the still-locked file (for re-initialisation).
    fn into_file(self) -> File {
        self._file
    }

    fn header_bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut out = [0u8; N];
        // SAFETY: `off + N` stays within the header (callers pass fixed small offsets); these
        // bytes are written once before the version word is published and never again.
        unsafe { std::ptr::copy_nonoverlapping(self.base.as_ptr().add(off), out.as_mut_ptr(), N) };
        out
    }

    /// Checks ready word, magic, version, sizes and indices, in that order.
    fn validate(&self, file_len: u64) -> Result<(), RingError> {
        let path = self.path.clone();
        // Pairs with the Release store at the end of `initialise`.
        let version = self
            .u32_at(OFF_VERSION)
            .load(std::sync::atomic::Ordering::Acquire);
        let magic: [u8; 8] = self.header_bytes(0);
        if magic != MAGIC {
            if version == 0 && magic == [0; 8] {
                return Err(RingError::NotInitialised { path });
            }
            return Err(RingError::BadMagic {
                path,
                what: "ring",
                found: magic,
            });
        }
        if version == 0 {
            return Err(RingError::NotInitialised { path });
        }
        if version != FORMAT_VERSION {
            return Err(RingError::UnsupportedVersion {
                path,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let header_len = u32::from_le_bytes(self.header_bytes(OFF_HEADER_LEN)) as u64;
        let bad = |reason: String| RingError::BadHeader {
            path: self.path.clone(),
            reason,
        };
        if header_len != HEADER_LEN {
            return Err(bad(format!(
                "header length {header_len}, expected {HEADER_LEN}"
            )));
        }
        if self.capacity < MIN_CAPACITY
            || self.capacity > MAX_CAPACITY
            || !self.capacity.is_multiple_of(8)
        {
            return Err(bad(format!(
                "capacity {} is not a valid ring capacity",
                self.capacity
            )));
        }
        let expected = HEADER_LEN + self.capacity;
        if file_len != expected {
            return Err(RingError::SizeMismatch {
                path,
                file_len,
                expected,
            });
        }
        let head = self.load_head(Ordering::Acquire);
        let committed = self.load_committed(Ordering::Acquire);
        check_indices(head, committed, self.capacity).map_err(bad)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl RingMemory for MappedRing {
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn intake_id(&self) -> u16 {
        self.intake_id
    }
    fn load_head(&self, order: Ordering) -> u64 {
        self.u64_at(OFF_HEAD).load(order)
    }
    fn store_head(&self, value: u64, order: Ordering) {
        self.u64_at(OFF_HEAD).store(value, order)
    }
    fn load_committed(&self, order: Ordering) -> u64 {
        self.u64_at(OFF_COMMITTED).load(order)
    }
    fn store_committed(&self, value: u64, order: Ordering) {
        self.u64_at(OFF_COMMITTED).store(value, order)
    }
    fn load_next_seq(&self) -> u64 {
        self.u64_at(OFF_NEXT_SEQ).load(Ordering::Relaxed)
    }
    fn store_next_seq(&self, value: u64) {
        self.u64_at(OFF_NEXT_SEQ).store(value, Ordering::Relaxed)
    }
    fn load_committed_seq(&self) -> u64 {
        self.u64_at(OFF_COMMITTED_SEQ).load(Ordering::Relaxed)
    }
    fn store_committed_seq(&self, value: u64) {
        self.u64_at(OFF_COMMITTED_SEQ)
            .store(value, Ordering::Relaxed)
    }
    unsafe fn write(&self, offset: u64, src: &[u8]) {
        assert!(
            offset + src.len() as u64 <= self.capacity,
            "ring write out of bounds"
        );
        // SAFETY: in bounds (checked above) of the data area, which starts HEADER_LEN into a
        // mapping of HEADER_LEN + capacity bytes; the caller owns these bytes (contract).
        unsafe {
            let dst = self.base.as_ptr().add((HEADER_LEN + offset) as usize);
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
        }
    }
    fn prefault(&self, offset: u64, len: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.prefault.load(Relaxed) || offset + len > self.capacity || len == 0 {
            return;
        }
        // madvise wants a page-aligned start: round down (the page holding `offset` is the
        // one being written; populating a present page is a no-op).
        let start = (HEADER_LEN + offset) / self.page * self.page;
        let end = HEADER_LEN + offset + len;
        let advised = self._map.advise_range(
            memmap2::Advice::PopulateWrite,
            start as usize,
            (end - start) as usize,
        );
        if let Err(e) = advised {
            self.prefault.store(false, Relaxed);
            tracing::debug!(path = %self.path.display(), error = %e,
                "cannot prefault ring pages (MADV_POPULATE_WRITE unsupported); pages fault one by one");
        }
    }
    fn can_release(&self) -> bool {
        self.punch.load(std::sync::atomic::Ordering::Relaxed)
    }
    unsafe fn release(&self, offset: u64, len: u64) {
        assert!(offset + len <= self.capacity, "ring release out of bounds");
        // File offsets: the data area starts after the header page, which is never touched
        // (its whole pages start at or after HEADER_LEN, and a rounded-up start stays there).
        let Some((start, len)) =
            whole_pages(HEADER_LEN + offset, HEADER_LEN + offset + len, self.page)
        else {
            return;
        };
        use nix::fcntl::{fallocate, FallocateFlags};
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        // The caller owns these bytes (contract): nobody reads them before the producer
        // writes them again, which faults in fresh zero pages. The mapping stays valid: the
        // file keeps its size (KEEP_SIZE), a hole reads as zeros.
        if let Err(e) = fallocate(&self._file, flags, start as libc::off_t, len as libc::off_t) {
            self.punch
                .store(false, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(path = %self.path.display(), error = %e,
                "cannot give ring memory back (hole punching unsupported); keeping every page");
        }
    }
    unsafe fn read(&self, offset: u64, dst: &mut [u8]) {
        assert!(
            offset + dst.len() as u64 <= self.capacity,
            "ring read out of bounds"
        );
        // SAFETY: in bounds (checked above); the caller owns these published bytes (contract);
        // `dst` is a distinct Rust buffer, so the ranges cannot overlap.
        unsafe {
            let src = self.base.as_ptr().add((HEADER_LEN + offset) as usize);
            std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len());
        }
    }
}
