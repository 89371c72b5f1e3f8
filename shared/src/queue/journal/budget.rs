//! `DISK_SPACE`: one byte budget over every journal of an instance, enforced across processes.
//!
//! The counter lives in a small file mapped `MAP_SHARED` (the supervisor creates it in the
//! instance's shared-memory directory; every worker maps it):
//!
//! ```text
//! struct DiskBudgetFile {        // changing a field means a new BUDGET_VERSION
//!     magic:    [u8; 8],  //  0  b"SKFBUDGT"
//!     version:  u32,      //  8  BUDGET_VERSION = 1; "ready" word, stored last (Release)
//!     _pad:     [u8; 4],  // 12
//!     limit:    u64,      // 16  atomic: the bound in bytes
//!     _pad:     [u8; 40], // 24
//!     used:     u64,      // 64  atomic: bytes charged (CAS in try_reserve, fetch_sub in release)
//!     _pad:     [u8; 4024]// 72  up to one page
//! }
//! ```
//!
//! What is charged (the invariant every party keeps): per journal, the file length of every
//! segment except the newest, plus `max(file length, capacity)` of the newest (the writer's
//! active segment, reserved whole when it is started, so the bound holds while it fills).
//! [`scan_usage`] computes exactly that from the files, for the supervisor to initialise the
//! counter at start; the counter can drift only if a process dies between a reservation and
//! the file operation it covers, and the next supervisor start corrects it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use memmap2::{MmapMut, MmapOptions};

use super::segment::{list_dir, SegmentHeader, SEGMENT_HEADER_LEN};
use super::JournalError;
use crate::queue::sync::{shm, Ordering};

const MAGIC: [u8; 8] = *b"SKFBUDGT";
const BUDGET_VERSION: u32 = 1;
const BUDGET_LEN: u64 = 4096;
const OFF_VERSION: usize = 8;
const OFF_LIMIT: usize = 16;
const OFF_USED: usize = 64;

struct Mapped {
    base: NonNull<u8>,
    path: PathBuf,
    _map: MmapMut,
    _file: File,
}

// SAFETY: `base` points into `_map`, owned here and mapped at one address until drop; every
// access through it is atomic, so sharing between threads is as safe as sharing the atomics.
unsafe impl Send for Mapped {}
// SAFETY: as above; `&Mapped` only hands out `&AtomicU64`/`&AtomicU32`, which are Sync.
unsafe impl Sync for Mapped {}

impl Mapped {
    fn u64_at(&self, off: usize) -> &shm::AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && (off as u64) < BUDGET_LEN);
        // SAFETY: 8-aligned offset inside the page-aligned 4096-byte mapping owned by `self`;
        // AtomicU64 has u64's layout; all processes access these words only atomically.
        unsafe { &*(self.base.as_ptr().add(off) as *const shm::AtomicU64) }
    }

    fn u32_at(&self, off: usize) -> &shm::AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && (off as u64) < BUDGET_LEN);
        // SAFETY: as in `u64_at`, for a 4-aligned u32 word.
        unsafe { &*(self.base.as_ptr().add(off) as *const shm::AtomicU32) }
    }
}

/// A handle on the shared disk budget. Cheap to clone (one mapping per process is enough).
#[derive(Clone)]
pub struct DiskBudget {
    inner: Arc<Mapped>,
}

impl std::fmt::Debug for DiskBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBudget")
            .field("path", &self.inner.path)
            .field("used", &self.used())
            .field("limit", &self.limit())
            .finish()
    }
}

fn budget_err(path: &Path, source: std::io::Error) -> JournalError {
    JournalError::Budget {
        path: path.to_path_buf(),
        source,
    }
}

fn map(file: File, path: &Path) -> Result<Mapped, JournalError> {
    // SAFETY: MAP_SHARED of the budget file is the point (every worker updates the counter).
    // We only ever access its words as atomics or, before the version word is published,
    // through the raw copy of the magic in `create`. It is never truncated while mapped.
    let mut map = unsafe { MmapOptions::new().len(BUDGET_LEN as usize).map_mut(&file) }
        .map_err(|e| budget_err(path, e))?;
    let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| JournalError::BadBudget {
        path: path.to_path_buf(),
        reason: "mapping returned a null address".into(),
    })?;
    Ok(Mapped {
        base,
        path: path.to_path_buf(),
        _map: map,
        _file: file,
    })
}

impl DiskBudget {
    /// Creates (or takes over and resets) the budget file at `path` with `limit_bytes` and
    /// `initial_used` (from [`scan_usage`]). The supervisor calls this before any worker runs.
    pub fn create(path: &Path, limit_bytes: u64, initial_used: u64) -> Result<Self, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| budget_err(dir, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| budget_err(path, e))?;
        // SAFETY: flock on a descriptor we own; released when `file`'s description closes
        // or below once the header is published.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(budget_err(path, std::io::Error::last_os_error()));
        }
        let len = file.metadata().map_err(|e| budget_err(path, e))?.len();
        if len != BUDGET_LEN {
            file.set_len(BUDGET_LEN).map_err(|e| budget_err(path, e))?;
        }
        let m = map(file, path)?;
        m.u32_at(OFF_VERSION).store(0, Ordering::Relaxed);
        // SAFETY: the first 8 bytes of our 4096-byte mapping; version is 0, so no opener
        // accepts the file while we write it.
        unsafe { std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), m.base.as_ptr(), 8) };
        m.u64_at(OFF_LIMIT).store(limit_bytes, Ordering::Relaxed);
        m.u64_at(OFF_USED).store(initial_used, Ordering::Relaxed);
        // Pairs with the Acquire load in `open`: limit, used and magic are visible first.
        m.u32_at(OFF_VERSION)
            .store(BUDGET_VERSION, Ordering::Release);
        // SAFETY: as above.
        unsafe { libc::flock(m._file.as_raw_fd(), libc::LOCK_UN) };
        Ok(DiskBudget { inner: Arc::new(m) })
    }

    /// Maps an existing budget file (workers).
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| budget_err(path, e))?;
        let len = file.metadata().map_err(|e| budget_err(path, e))?.len();
        let bad = |reason: String| JournalError::BadBudget {
            path: path.to_path_buf(),
            reason,
        };
        if len != BUDGET_LEN {
            return Err(bad(format!("{len} bytes, expected {BUDGET_LEN}")));
        }
        let m = map(file, path)?;
        // Pairs with the Release store at the end of `create`.
        let version = m.u32_at(OFF_VERSION).load(Ordering::Acquire);
        let mut magic = [0u8; 8];
        // SAFETY: first 8 bytes of the mapping, written before the version word we loaded.
        unsafe { std::ptr::copy_nonoverlapping(m.base.as_ptr(), magic.as_mut_ptr(), 8) };
        if magic != MAGIC {
            return Err(bad(format!(
                "magic {magic:02x?} is not a sekoia-forwarder disk budget's"
            )));
        }
        if version != BUDGET_VERSION {
            return Err(bad(format!(
                "format version {version} (0 = never completely created), this build understands only version {BUDGET_VERSION}"
            )));
        }
        Ok(DiskBudget { inner: Arc::new(m) })
    }

    /// Charges `n` bytes if they fit under the limit; false (nothing charged) otherwise.
    pub fn try_reserve(&self, n: u64) -> bool {
        let used = self.inner.u64_at(OFF_USED);
        let limit = self.limit();
        let mut cur = used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|&v| v <= limit) else {
                return false;
            };
            // Relaxed is enough: the counter orders nothing but itself (RMWs on one word are
            // totally ordered), and no other memory is published through it.
            match used.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Returns `n` bytes to the budget (saturating at zero: a drifted counter never wraps).
    pub fn release(&self, n: u64) {
        let used = self.inner.u64_at(OFF_USED);
        let mut cur = used.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_sub(n);
            // Relaxed: see `try_reserve`.
            match used.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Bytes currently charged.
    pub fn used(&self) -> u64 {
        self.inner.u64_at(OFF_USED).load(Ordering::Relaxed)
    }

    /// The bound.
    pub fn limit(&self) -> u64 {
        self.inner.u64_at(OFF_LIMIT).load(Ordering::Relaxed)
    }

    /// Changes the bound (configuration reload); charged bytes are kept.
    pub fn set_limit(&self, limit_bytes: u64) {
        self.inner
            .u64_at(OFF_LIMIT)
            .store(limit_bytes, Ordering::Relaxed);
    }

    /// The budget file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// Bytes the journals under `spool_dir` are charged for, by the rule in this module's doc:
/// every subdirectory holding segment files counts as a journal. A missing spool directory
/// counts 0. Only segment files are counted (state and checkpoint files are a few KiB).
pub fn scan_usage(spool_dir: &Path) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(spool_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut total = 0u64;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        total += journal_usage(&entry.path())?;
    }
    Ok(total)
}

/// Charge of one journal directory (see [`scan_usage`]).
pub(crate) fn journal_usage(dir: &Path) -> std::io::Result<u64> {
    let listing = list_dir(dir)?;
    let mut total = 0u64;
    for (i, &start) in listing.segments.iter().enumerate() {
        let path = dir.join(super::segment_file_name(start));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // deleted meanwhile
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let mut charge = len;
        if i + 1 == listing.segments.len() {
            let mut raw = [0u8; SEGMENT_HEADER_LEN];
            if file.read_exact_at(&mut raw, 0).is_ok() {
                if let Ok(h) = SegmentHeader::decode(&raw) {
                    charge = len.max(h.capacity);
                }
            }
        }
        total += charge;
    }
    Ok(total)
}
