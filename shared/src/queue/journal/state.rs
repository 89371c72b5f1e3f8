//! The journal's `state` file: a 4096-byte page mapped `MAP_SHARED` by the writer and the
//! reader, holding what each side publishes to the other, and the role locks.
//!
//! ```text
//! struct JournalState {           // changing a field means a new STATE_VERSION
//!     magic:      [u8; 8],   //   0  b"SKFJSTAT"
//!     version:    u32,       //   8  STATE_VERSION = 1; "ready" word, stored last (Release)
//!     _reserved:  [u8; 116], //  12
//!     end:        u64,       // 128  writer: published end (Release); reader loads (Acquire)
//!     next_seq:   u64,       // 136  writer (Relaxed, stored before `end`)
//!     generation: u64,       // 144  writer: +1 per writer open (Release)
//!     _pad:       [u8; 104], // 152  end's 128-byte line
//!     committed:  u64,       // 256  reader: delivered position (Release); writer loads (Acquire)
//!     _pad:       [u8; 3832],// 264
//! }
//! ```
//!
//! The state file is *derived* data: it lives on disk only because the journal directory is
//! the one place both workers know. After a reboot it may be stale, so `end` is trusted only
//! while a writer holds the "published" lock (byte 2, taken after it recovered and published
//! its end); otherwise the reader scans the files. `committed` is re-stored from the durable
//! checkpoint whenever a reader opens.
//!
//! Locks (OFD byte locks, dropped by the kernel when the holder dies, however it dies):
//! byte 0 = the writer, byte 1 = the reader, byte 2 = "a live writer has published `end`".
//! `flock` is held while the file is created or checked (OFD and flock locks are independent).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use memmap2::{MmapMut, MmapOptions};

use super::{dir_error, JournalError, STATE_FILE};
use crate::queue::sync::{shm, Ordering};

const MAGIC: [u8; 8] = *b"SKFJSTAT";
const STATE_VERSION: u32 = 1;
const STATE_LEN: u64 = 4096;
const OFF_VERSION: usize = 8;
const OFF_END: usize = 128;
const OFF_NEXT_SEQ: usize = 136;
const OFF_GENERATION: usize = 144;
const OFF_COMMITTED: usize = 256;

/// Lock bytes of the roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockByte {
    Writer = 0,
    Reader = 1,
    Published = 2,
}

/// The mapped state file of one journal.
pub(crate) struct SharedState {
    base: NonNull<u8>,
    path: PathBuf,
    _map: MmapMut,
    file: File,
}

// SAFETY: `base` points into `_map`, owned by this struct and mapped at the same address until
// drop; every access through it is an atomic (see `u64_at`), so moving the struct to another
// thread changes nothing about the memory.
unsafe impl Send for SharedState {}

/// `flock(LOCK_EX)` held while the state file is created or checked, through a duplicate
/// descriptor (the mapping keeps the open file description alive after the `File` closes).
struct CreationLock(std::os::fd::OwnedFd);

impl CreationLock {
    fn take(file: &File, path: &Path) -> Result<Self, JournalError> {
        let fd = file.try_clone().map_err(|e| state_err(path, e))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(state_err(path, std::io::Error::last_os_error()));
        }
        Ok(CreationLock(fd.into()))
    }
}

impl Drop for CreationLock {
    fn drop(&mut self) {
        // SAFETY: flock on the descriptor this guard owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn state_err(path: &Path, source: std::io::Error) -> JournalError {
    JournalError::State {
        path: path.to_path_buf(),
        source,
    }
}

fn ofd_lock(file: &File, byte: LockByte, cmd: libc::c_int) -> std::io::Result<libc::flock> {
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    // SAFETY: F_OFD_SETLK / F_OFD_GETLK read (and GETLK writes) the `flock` we pass by
    // pointer, valid and exclusively borrowed for the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    if rc == 0 {
        Ok(fl)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl SharedState {
    /// Opens (creating or re-initialising if needed) `dir/state` and maps it. Creates `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| dir_error(dir, e))?;
        let path = dir.join(STATE_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| dir_error(dir, e))?;
        let _creating = CreationLock::take(&file, &path)?;
        let len = file.metadata().map_err(|e| state_err(&path, e))?.len();
        if len != STATE_LEN {
            if len != 0 {
                tracing::warn!(path = %path.display(), len, "journal state file has the wrong size, re-initialising it (derived data)");
            }
            file.set_len(0).map_err(|e| state_err(&path, e))?;
            file.set_len(STATE_LEN).map_err(|e| state_err(&path, e))?;
        }
        // SAFETY: MAP_SHARED of the state file is the point: the other role's process stores
        // into it while we have it mapped. We never create references to its bytes other than
        // the atomics of `u64_at`/`u32_at` and the raw copies in `initialise` (done under the
        // creation flock before the version word is published). The file is never truncated
        // while mapped: only here, under flock, before mapping, when its size is wrong.
        let mut map = unsafe { MmapOptions::new().len(STATE_LEN as usize).map_mut(&file) }
            .map_err(|e| state_err(&path, e))?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| JournalError::BadState {
            path: path.clone(),
            reason: "mapping returned a null address".into(),
        })?;
        let state = SharedState {
            base,
            path,
            _map: map,
            file,
        };
        // Pairs with the Release store of the version in `initialise` (any earlier opener).
        let version = state.u32_at(OFF_VERSION).load(Ordering::Acquire);
        let magic = state.magic();
        if magic != MAGIC || version != STATE_VERSION {
            if magic != [0; 8] {
                tracing::warn!(path = %state.path.display(), ?magic, version, "journal state file not recognised, re-initialising it (derived data)");
            }
            state.initialise();
        }
        Ok(state)
    }

    fn magic(&self) -> [u8; 8] {
        let mut m = [0u8; 8];
        // SAFETY: the first 8 bytes of a 4096-byte mapping owned by `self`; written only
        // under the creation flock, which every opener holds while calling this.
        unsafe { std::ptr::copy_nonoverlapping(self.base.as_ptr(), m.as_mut_ptr(), 8) };
        m
    }

    fn initialise(&self) {
        for off in (0..STATE_LEN as usize).step_by(8) {
            self.u64_at(off).store(0, Ordering::Relaxed);
        }
        // SAFETY: 8 bytes at offset 0 of our 4096-byte mapping; under the creation flock, with
        // the version word 0, so no other process uses the header.
        unsafe { std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), self.base.as_ptr(), 8) };
        // Pairs with the Acquire load in `open`: the zeroed words and magic are visible first.
        self.u32_at(OFF_VERSION)
            .store(STATE_VERSION, Ordering::Release);
    }

    fn u64_at(&self, off: usize) -> &shm::AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && (off as u64) < STATE_LEN);
        // SAFETY: `off` is 8-aligned and inside the page-aligned 4096-byte mapping that lives
        // as long as `self`; AtomicU64 has u64's size and alignment; every process touches
        // these words only atomically.
        unsafe { &*(self.base.as_ptr().add(off) as *const shm::AtomicU64) }
    }

    fn u32_at(&self, off: usize) -> &shm::AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && (off as u64) < STATE_LEN);
        // SAFETY: as in `u64_at`, for a 4-aligned u32 word.
        unsafe { &*(self.base.as_ptr().add(off) as *const shm::AtomicU32) }
    }

    /// Takes the role's lock byte; `Locked` if another handle (any process) holds it.
    pub(crate) fn lock(&self, byte: LockByte, role: &'static str) -> Result<(), JournalError> {
        match ofd_lock(&self.file, byte, libc::F_OFD_SETLK) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                Err(JournalError::Locked {
                    path: self.path.parent().unwrap_or(&self.path).to_path_buf(),
                    role,
                })
            }
            Err(e) => Err(state_err(&self.path, e)),
        }
    }

    /// True when another handle holds `byte` (one `fcntl(F_OFD_GETLK)`).
    pub(crate) fn is_locked_by_other(&self, byte: LockByte) -> Result<bool, JournalError> {
        let fl =
            ofd_lock(&self.file, byte, libc::F_OFD_GETLK).map_err(|e| state_err(&self.path, e))?;
        Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
    }

    /// Writer: makes `end` (and `next_seq`) visible to the reader.
    pub(crate) fn publish_end(&self, end: u64, next_seq: u64) {
        self.u64_at(OFF_NEXT_SEQ).store(next_seq, Ordering::Relaxed);
        // Pairs with the reader's Acquire load in `end`: the segment bytes written (pwrite)
        // before this store are in the page cache before the reader reads them (pread).
        self.u64_at(OFF_END).store(end, Ordering::Release);
    }

    /// Reader: the writer's published end (meaningful only while the writer is alive).
    pub(crate) fn end(&self) -> u64 {
        // Pairs with the writer's Release store in `publish_end`.
        self.u64_at(OFF_END).load(Ordering::Acquire)
    }

    /// The last `next_seq` a writer published (possibly stale after a reboot: a floor only).
    pub(crate) fn next_seq(&self) -> u64 {
        self.u64_at(OFF_NEXT_SEQ).load(Ordering::Relaxed)
    }

    /// Writer, at open: announces a new writer life.
    pub(crate) fn bump_generation(&self) {
        // Pairs with the reader's Acquire load in `generation`.
        self.u64_at(OFF_GENERATION).fetch_add(1, Ordering::Release);
    }

    pub(crate) fn generation(&self) -> u64 {
        // Pairs with the writer's Release in `bump_generation`.
        self.u64_at(OFF_GENERATION).load(Ordering::Acquire)
    }

    /// Reader: everything before `pos` is delivered.
    pub(crate) fn store_committed(&self, pos: u64) {
        // Pairs with the writer's Acquire load in `committed`.
        self.u64_at(OFF_COMMITTED).store(pos, Ordering::Release);
    }

    /// Writer: the reader's delivered position.
    pub(crate) fn committed(&self) -> u64 {
        // Pairs with the reader's Release store in `store_committed`.
        self.u64_at(OFF_COMMITTED).load(Ordering::Acquire)
    }
}
