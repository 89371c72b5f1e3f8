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
//!     committed_seq: u64,    // 264  reader: seq after the last delivered record (Relaxed,
//!                            //      stored before `committed`); 0: unknown (older readers)
//!     _pad:       [u8; 3824],// 272
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

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{JournalError, STATE_FILE};
use crate::queue::shared_file::{
    byte_locked_by_other, open_for_creation, try_lock_byte, PrivateDir, SharedPage,
};
use crate::queue::sync::{shm, Ordering};

const MAGIC: [u8; 8] = *b"SKFJSTAT";
const STATE_VERSION: u32 = 1;
const STATE_LEN: u64 = 4096;
const OFF_VERSION: usize = 8;
const OFF_END: usize = 128;
const OFF_NEXT_SEQ: usize = 136;
const OFF_GENERATION: usize = 144;
const OFF_COMMITTED: usize = 256;
const OFF_COMMITTED_SEQ: usize = 264;

/// Lock bytes of the roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockByte {
    Writer = 0,
    Reader = 1,
    Published = 2,
}

/// The mapped state file of one journal.
pub(crate) struct SharedState {
    page: SharedPage,
    path: PathBuf,
    file: File,
}

fn state_err(path: &Path, source: std::io::Error) -> JournalError {
    JournalError::State {
        path: path.to_path_buf(),
        source,
    }
}

/// Gives the first `len` bytes of `file` their disk blocks (`fallocate`, data unchanged), so
/// a store through the mapping never needs a new block: on a full file system, a store into
/// a hole of a mapped file kills the process with SIGBUS, where this returns ENOSPC. A file
/// system without `fallocate` is left as it is.
pub(crate) fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    match fallocate(file, FallocateFlags::empty(), 0, len as libc::off_t) {
        // A file system without fallocate: nothing better to do than to go on.
        Ok(()) | Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl SharedState {
    /// Opens (creating or re-initialising if needed) `dir/state` and maps it. Creates `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, JournalError> {
        PrivateDir::create(dir)?;
        let path = dir.join(STATE_FILE);
        let (file, _creating, len) = open_for_creation(&path)?;
        if len != STATE_LEN {
            if len != 0 {
                tracing::warn!(path = %path.display(), len, "journal state file has the wrong size, re-initialising it (derived data)");
            }
            file.set_len(0).map_err(|e| state_err(&path, e))?;
            file.set_len(STATE_LEN).map_err(|e| state_err(&path, e))?;
        }
        allocate(&file, STATE_LEN).map_err(|e| state_err(&path, e))?;
        let page = SharedPage::map(&file, STATE_LEN, &path)?;
        let state = SharedState { page, path, file };
        // Pairs with the Release store of the version in `initialise` (any earlier opener).
        let version = state.u32_at(OFF_VERSION).load(Ordering::Acquire);
        let magic = state.page.magic();
        if magic != MAGIC || version != STATE_VERSION {
            if magic != [0; 8] {
                tracing::warn!(path = %state.path.display(), ?magic, version, "journal state file not recognised, re-initialising it (derived data)");
            }
            state.initialise();
        }
        Ok(state)
    }

    fn initialise(&self) {
        self.u32_at(OFF_VERSION).store(0, Ordering::Relaxed);
        for off in (0..STATE_LEN as usize).step_by(8) {
            self.u64_at(off).store(0, Ordering::Relaxed);
        }
        self.page.write_magic(MAGIC);
        // Pairs with the Acquire load in `open`: the zeroed words and magic are visible first.
        self.u32_at(OFF_VERSION)
            .store(STATE_VERSION, Ordering::Release);
    }

    fn u64_at(&self, off: usize) -> &shm::AtomicU64 {
        self.page.u64_at(off)
    }

    fn u32_at(&self, off: usize) -> &shm::AtomicU32 {
        self.page.u32_at(off)
    }

    /// Takes the role's lock byte; `Locked` if another handle (any process) holds it.
    pub(crate) fn lock(&self, byte: LockByte, role: &'static str) -> Result<(), JournalError> {
        match try_lock_byte(&self.file, byte as u8) {
            Ok(true) => Ok(()),
            Ok(false) => Err(JournalError::Locked {
                path: self.path.parent().unwrap_or(&self.path).to_path_buf(),
                role,
            }),
            Err(e) => Err(state_err(&self.path, e)),
        }
    }

    /// True when another handle holds `byte` (one `fcntl(F_OFD_GETLK)`).
    pub(crate) fn is_locked_by_other(&self, byte: LockByte) -> Result<bool, JournalError> {
        byte_locked_by_other(&self.file, byte as u8).map_err(|e| state_err(&self.path, e))
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

    /// Reader: everything before `pos` is delivered; `next_seq` is the seq after the last
    /// delivered record (0 when the reader does not know it).
    pub(crate) fn store_committed(&self, pos: u64, next_seq: u64) {
        self.u64_at(OFF_COMMITTED_SEQ)
            .store(next_seq, Ordering::Relaxed);
        // Pairs with the writer's Acquire load in `committed`.
        self.u64_at(OFF_COMMITTED).store(pos, Ordering::Release);
    }

    /// Writer: the seq after the last record the reader delivered (0: unknown). Load it
    /// after [`SharedState::committed`] (whose Acquire makes it at least that new).
    pub(crate) fn committed_seq(&self) -> u64 {
        self.u64_at(OFF_COMMITTED_SEQ).load(Ordering::Relaxed)
    }

    /// Writer: the reader's delivered position.
    pub(crate) fn committed(&self) -> u64 {
        // Pairs with the reader's Release store in `store_committed`.
        self.u64_at(OFF_COMMITTED).load(Ordering::Acquire)
    }
}
