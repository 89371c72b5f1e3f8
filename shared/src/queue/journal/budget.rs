//! `DISK_SPACE`: one byte budget over every journal of an instance, enforced across processes.
//!
//! The counter lives in a small file mapped `MAP_SHARED` (the supervisor creates it in the
//! instance's shared-memory directory; every worker maps it):
//!
//! ```text
//! struct DiskBudgetFile {        // changing a field means a new BUDGET_VERSION
//!     magic:    [u8; 8],  //  0  b"SKFBUDGT"
//!     version:  u32,      //  8  BUDGET_VERSION = 2; "ready" word, stored last (Release)
//!     _pad:     [u8; 4],  // 12
//!     limit:    u64,      // 16  atomic: the bound in force, min(configured, file system room)
//!     configured: u64,    // 24  atomic: DISK_SPACE
//!     checked_us: u64,    // 32  atomic: when the file system was last measured (µs, Unix)
//!     _pad:     [u8; 24], // 40
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
//!
//! The bound in force is the smaller of `DISK_SPACE` and what the spool's file system can
//! hold ([`FsRoom`]), measured when the supervisor creates the budget and again on the write
//! path ([`DiskBudget::recheck_fs`], at most once a second across all processes).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

pub use super::fs_room::FsRoom;
use super::segment::{list_dir, SegmentHeader, SEGMENT_HEADER_LEN};
use super::JournalError;
use crate::queue::shared_file::{
    open_for_creation, open_private_file, Create, PrivateDir, SharedPage,
};
use crate::queue::sync::Ordering;

const MAGIC: [u8; 8] = *b"SKFBUDGT";
const BUDGET_VERSION: u32 = 2;
const BUDGET_LEN: u64 = 4096;
const OFF_VERSION: usize = 8;
const OFF_LIMIT: usize = 16;
const OFF_CONFIGURED: usize = 24;
const OFF_CHECKED_US: usize = 32;
const OFF_USED: usize = 64;
/// The file system is measured at most this often (µs), by whichever process asks first.
const RECHECK_EVERY_US: u64 = 1_000_000;

/// The budget's figures, for monitoring (`DISK_SPACE` and the bound actually in force).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFigures {
    /// `DISK_SPACE` as configured.
    pub configured: u64,
    /// The bound in force: the smaller of `configured` and what the spool's file system can
    /// hold (minus a reserve), as last measured.
    pub in_force: u64,
    /// Bytes charged now.
    pub used: u64,
}

/// A handle on the shared disk budget. Cheap to clone (one mapping per process is enough).
#[derive(Clone)]
pub struct DiskBudget {
    inner: Arc<SharedPage>,
}

impl std::fmt::Debug for DiskBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBudget")
            .field("path", &self.inner.path())
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

impl DiskBudget {
    /// Creates (or takes over and resets) the budget file at `path` with `limit_bytes` and
    /// `initial_used` (from [`scan_usage`]). The supervisor calls this before any worker runs.
    pub fn create(path: &Path, limit_bytes: u64, initial_used: u64) -> Result<Self, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            PrivateDir::create(dir)?;
        }
        let (file, _creating, len) = open_for_creation(path)?;
        if len != BUDGET_LEN {
            file.set_len(BUDGET_LEN).map_err(|e| budget_err(path, e))?;
        }
        super::state::allocate(&file, BUDGET_LEN).map_err(|e| budget_err(path, e))?;
        let m = SharedPage::map(&file, BUDGET_LEN, path)?;
        m.u32_at(OFF_VERSION).store(0, Ordering::Relaxed);
        m.write_magic(MAGIC);
        m.u64_at(OFF_LIMIT).store(limit_bytes, Ordering::Relaxed);
        m.u64_at(OFF_CONFIGURED)
            .store(limit_bytes, Ordering::Relaxed);
        m.u64_at(OFF_CHECKED_US).store(0, Ordering::Relaxed);
        m.u64_at(OFF_USED).store(initial_used, Ordering::Relaxed);
        // Pairs with the Acquire load in `open`: limit, used and magic are visible first.
        m.u32_at(OFF_VERSION)
            .store(BUDGET_VERSION, Ordering::Release);
        Ok(DiskBudget { inner: Arc::new(m) })
    }

    /// Maps an existing budget file (workers).
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let file = open_private_file(path, Create::No)?;
        let len = file.metadata().map_err(|e| budget_err(path, e))?.len();
        let bad = |reason: String| JournalError::BadBudget {
            path: path.to_path_buf(),
            reason,
        };
        if len != BUDGET_LEN {
            return Err(bad(format!("{len} bytes, expected {BUDGET_LEN}")));
        }
        let m = SharedPage::map(&file, BUDGET_LEN, path)?;
        // Pairs with the Release store at the end of `create`.
        let version = m.u32_at(OFF_VERSION).load(Ordering::Acquire);
        let magic = m.magic();
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

    /// Charges `n` bytes even past the limit (records already accepted from senders, see
    /// `JournalWriter`): the charge stays exact, so `release` balances it.
    pub fn force_reserve(&self, n: u64) {
        // Relaxed: see `try_reserve`.
        self.inner.u64_at(OFF_USED).fetch_add(n, Ordering::Relaxed);
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

    /// Changes the configured bound (`DISK_SPACE`, configuration reload) and the bound in
    /// force with it (measured again at the next [`Self::recheck_fs`]); charged bytes are kept.
    pub fn set_limit(&self, limit_bytes: u64) {
        self.inner
            .u64_at(OFF_CONFIGURED)
            .store(limit_bytes, Ordering::Relaxed);
        self.inner
            .u64_at(OFF_LIMIT)
            .store(limit_bytes, Ordering::Relaxed);
        self.inner
            .u64_at(OFF_CHECKED_US)
            .store(0, Ordering::Relaxed);
    }

    /// `DISK_SPACE`, the bound in force and what is charged.
    pub fn figures(&self) -> DiskFigures {
        DiskFigures {
            configured: self.inner.u64_at(OFF_CONFIGURED).load(Ordering::Relaxed),
            in_force: self.limit(),
            used: self.used(),
        }
    }

    /// Measures the file system holding `spool` now and sets the bound in force to the
    /// smaller of `DISK_SPACE` and what it can hold; returns the measurement.
    pub fn apply_fs(&self, spool: &Path) -> std::io::Result<FsRoom> {
        let room = FsRoom::of(spool)?;
        let configured = self.figures().configured;
        let in_force = configured.min(room.room_for_journals(self.used()));
        self.inner
            .u64_at(OFF_LIMIT)
            .store(in_force, Ordering::Relaxed);
        self.inner
            .u64_at(OFF_CHECKED_US)
            .store(super::unix_micros().max(1) as u64, Ordering::Relaxed);
        Ok(room)
    }

    /// [`Self::apply_fs`] if no process did it in the last second (one compare-exchange
    /// when not due). A failed measurement keeps the bound as it was.
    pub fn recheck_fs(&self, spool: &Path) {
        let now = super::unix_micros().max(1) as u64;
        let checked = self.inner.u64_at(OFF_CHECKED_US);
        let last = checked.load(Ordering::Relaxed);
        if now >= last && now - last < RECHECK_EVERY_US {
            return; // (a clock that went back makes it due)
        }
        // Relaxed: the word only elects one measurer per second; it publishes nothing.
        if checked
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            if let Err(e) = self.apply_fs(spool) {
                tracing::debug!(spool = %spool.display(), error = %e, "cannot measure the spool's file system");
            }
        }
    }

    /// The budget file's path.
    pub fn path(&self) -> &Path {
        self.inner.path()
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

/// [`scan_usage`] of some journal directories only (those of one destination's queues);
/// missing ones count 0.
pub fn usage_of<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> std::io::Result<u64> {
    let mut total = 0u64;
    for dir in dirs {
        match journal_usage(dir) {
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Charge of one journal directory (see [`scan_usage`]).
pub(crate) fn journal_usage(dir: &Path) -> std::io::Result<u64> {
    let listing = list_dir(dir)?;
    let mut total = 0u64;
    for (i, &start) in listing.segments.iter().enumerate() {
        let path = dir.join(super::segment_file_name(start));
        let file = match open_private_file(&path, Create::ReadOnly) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => continue, // deleted meanwhile
            Err(e) => return Err(std::io::Error::other(e)),
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
