//! The per-intake on-disk journal: the ring's overflow, append-only segment files under
//! `SPOOL_DIR/journal-<proto>-<port>/`.
//!
//! One [`JournalWriter`] (the ingest worker) appends rendered events as `record.rs` records to
//! a logical, monotonic byte stream (u64 positions, like the ring) cut into segment files of
//! at most `segment_bytes`; one [`JournalReader`] (the uplink) reads whole records from any
//! record boundary, commits what was delivered, and deletes segments it has fully passed. A
//! [`DiskBudget`] shared by every journal of the instance keeps the total on disk under
//! `DISK_SPACE`, across processes.
//!
//! Promises:
//! - The reader sees only records the writer flushed *and* published (`JournalWriter::flush`),
//!   never a partial one; when no writer is alive it finds the end by scanning the files.
//! - No crash makes the reader skip data: the persisted checkpoint is always at or behind what
//!   was really delivered, and a segment is deleted only after a durable checkpoint passed it.
//! - A corrupt record or a torn tail is skipped and counted (`ReadSpan::corrupt_skipped`);
//!   nothing makes the reader stop or loop forever.
//! - No name or position read from the files is trusted: a segment name or checkpoint
//!   position that makes no sense is moved aside (`quarantine/`) or moved back to a record
//!   boundary, logged, and reading goes on; positions stay below [`MAX_POSITION`], so their
//!   arithmetic never overflows (`docs/journal.md`, "Bad positions and names").
//! - Exactly one writer and one reader per journal, enforced with OFD locks on the `state` file.
//!
//! Files: `segment.rs` (segment header, naming, listing, the record walker shared by recovery
//! and reading), `state.rs` (the mapped `state` file: published end, committed, locks),
//! `checkpoint.rs` (the file, and where reading starts for it), `budget.rs`, `fs_room.rs`
//! (what the spool's file system can hold), `writer.rs`, `reader.rs`, `tests.rs`. `docs/journal.md`
//! draws every format and argues the crash cases.

mod budget;
mod checkpoint;
mod fs_room;
mod reader;
mod segment;
mod state;
mod writer;

#[cfg(all(test, not(loom)))]
mod tests;

pub use budget::{scan_usage, usage_of, DiskBudget, DiskFigures, FsRoom};
pub use checkpoint::Checkpoint;
pub use reader::JournalReader;
pub use segment::{segment_file_name, SEGMENT_HEADER_LEN, SEGMENT_VERSION};
pub use writer::JournalWriter;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the mapped state file (published end, committed position, role locks).
pub const STATE_FILE: &str = "state";
/// Name of the durable reader checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Temporary name the checkpoint is written under before the atomic rename.
pub const CHECKPOINT_TMP_FILE: &str = "checkpoint.tmp";
/// Extension of segment files (`00000000000000000000.seg`).
pub const SEGMENT_EXT: &str = "seg";
/// Subdirectory segment files are moved to when they cannot be part of the stream (an absurd
/// or overlapping name, an unknown format, a file that keeps failing to read). Nothing there
/// is read or deleted again; an operator decides.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Largest position a segment name or a checkpoint may hold (2^62: a century of writing at
/// 1 GB/s). Anything beyond comes from damage or a hand edit, never from a writer, and keeping
/// every position below it means `position + length` cannot overflow a u64.
pub const MAX_POSITION: u64 = 1 << 62;

/// Smallest accepted `segment_bytes` (tests use small segments; production uses 64 MiB).
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Largest accepted `segment_bytes`.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 32;

/// When the writer calls `fdatasync` on the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// After a flush when at least `interval` passed since the last one, on every segment
    /// roll, on [`JournalWriter::sync`] and on close. A power cut can cost up to `interval`
    /// of flushed records (plus whatever was never flushed).
    Batch { interval: Duration },
    /// After every flush: a power cut costs nothing that `flush` returned `Ok` for.
    Always,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy::Batch {
            interval: Duration::from_millis(1000),
        }
    }
}

/// Tunables of a journal; the defaults suit production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// Maximum size of one segment file, header included (default 64 MiB). Also the amount
    /// reserved from the [`DiskBudget`] when a segment is started.
    pub segment_bytes: u64,
    /// Records are gathered in memory up to this many bytes, then written with one syscall.
    pub buffer_bytes: usize,
    /// Fsync policy of the writer.
    pub sync: SyncPolicy,
    /// The reader persists its checkpoint at most this often (and always when it passes a
    /// whole segment, before deleting it).
    pub checkpoint_interval: Duration,
    /// Bytes the reader reads per `pread` (its only buffer besides the caller's `out`).
    pub read_window: usize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_bytes: 64 << 20,
            buffer_bytes: 256 << 10,
            sync: SyncPolicy::default(),
            checkpoint_interval: Duration::from_millis(200),
            read_window: 1 << 20,
        }
    }
}

impl JournalOptions {
    /// Largest payload a record may carry with these options (one record per segment).
    pub fn max_payload(&self) -> usize {
        let room = self.segment_bytes.saturating_sub(
            SEGMENT_HEADER_LEN as u64 + crate::queue::record::RECORD_HEADER_LEN as u64,
        );
        (room & !7).min(u32::MAX as u64) as usize
    }

    pub(crate) fn validate(&self) -> Result<(), JournalError> {
        let bad = |reason: String| Err(JournalError::BadOptions { reason });
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes)
            || !self.segment_bytes.is_multiple_of(8)
        {
            return bad(format!(
                "segment_bytes {} must be a multiple of 8 between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.buffer_bytes == 0 || self.read_window < 4096 {
            return bad("buffer_bytes must be > 0 and read_window >= 4096".into());
        }
        Ok(())
    }
}

/// Everything that can fail in the journal. Each variant names what failed and the path.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal directory {path} is not usable: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {path} already has a {role} (another process or handle holds its lock)")]
    Locked { path: PathBuf, role: &'static str },
    #[error("open segment {path}: {source}")]
    OpenSegment {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read segment {path}: {source}")]
    ReadSegment {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("append to segment {path}: {source}")]
    Append {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fdatasync segment {path}: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("delete segment {path}: {source}")]
    DeleteSegment {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} has an unusable segment header: {reason}")]
    BadSegmentHeader { path: PathBuf, reason: String },
    #[error("checkpoint {path}: {source}")]
    Checkpoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is unusable: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("journal state file {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal state file {path} is unusable: {reason}")]
    BadState { path: PathBuf, reason: String },
    #[error("disk budget file {path}: {source}")]
    Budget {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk budget file {path} is unusable: {reason}")]
    BadBudget { path: PathBuf, reason: String },
    #[error("journal {path}: the disk budget cannot hold a new segment now")]
    BudgetExhausted { path: PathBuf },
    #[error("record payload of {len} bytes exceeds this journal's maximum of {max} bytes")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("read position {pos} is outside the readable range {committed}..={end}")]
    PositionOutOfRange { pos: u64, committed: u64, end: u64 },
    #[error("invalid journal options: {reason}")]
    BadOptions { reason: String },
    #[error(transparent)]
    SharedFile(#[from] crate::queue::shared_file::SharedFileError),
}

impl JournalError {
    /// The underlying I/O error, if any.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        use JournalError::*;
        match self {
            Directory { source, .. }
            | OpenSegment { source, .. }
            | ReadSegment { source, .. }
            | Append { source, .. }
            | Sync { source, .. }
            | DeleteSegment { source, .. }
            | Checkpoint { source, .. }
            | State { source, .. }
            | Budget { source, .. } => Some(source),
            SharedFile(e) => e.io_error(),
            _ => None,
        }
    }

    /// True when the filesystem is full (ENOSPC) or over quota (EDQUOT): the caller treats the
    /// journal as full (back-pressure) and retries later. Nothing buffered was dropped.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, JournalError::BudgetExhausted { .. })
            || self
                .io_error()
                .and_then(std::io::Error::raw_os_error)
                .is_some_and(|c| c == libc::ENOSPC || c == libc::EDQUOT)
    }

    /// True when retrying the same call later can succeed: a lock still held by a dying
    /// peer, a full disk, an interrupted or would-block I/O.
    pub fn is_retryable(&self) -> bool {
        if matches!(self, JournalError::Locked { .. }) || self.is_disk_full() {
            return true;
        }
        self.io_error().is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            )
        })
    }
}

/// Turns a failure to create or write in `dir` into [`JournalError::Directory`].
pub(crate) fn dir_error(dir: &Path, source: std::io::Error) -> JournalError {
    JournalError::Directory {
        path: dir.to_path_buf(),
        source,
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `fsync` of a directory, so a create, rename or unlink in it survives a power cut.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
