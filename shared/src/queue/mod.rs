//! Queueing between the ingest workers and the uplink: per intake, a shared-memory ring
//! (the memory tier), its on-disk overflow (the journal) and what an orderly stop saved.
//!
//! An ingest worker (the single producer of its intake's ring) appends rendered events with
//! [`RingProducer::try_push`] and makes them visible with [`RingProducer::publish`]; the uplink
//! worker (the single consumer of every ring) copies whole records out with
//! [`RingConsumer::read`] and frees them with [`RingConsumer::commit`] once they are surely
//! received. The ring is a file in `/dev/shm` mapped `MAP_SHARED` by both workers, so it
//! outlives either of them and the supervisor: a restarted supervisor reopens it with
//! [`Ring::create_or_open`] and drains it. [`Doorbell`] wakes the sleeping uplink.
//!
//! Files: `intake/` (an intake's queue whole: the spill rule, the tiers' read order, the
//! stop-time save; its doc states the ordering invariant), `layout.rs` (the typed names of
//! every file and folder), `shared_file.rs` (how every one of them is created, checked,
//! locked and mapped), `record.rs` (the record format of the ring and the journal), `ring/`
//! (file layout, producer, consumer), `journal/` (segments, reader, writer, checkpoint, disk
//! budget), `doorbell.rs` (futex word), `sync.rs` (atomics, loom seam). `docs/ring.md` and
//! `docs/journal.md` draw the formats and argue the memory ordering and crash cases.
//!
//! Invariants every user can rely on: positions are monotonic u64 byte offsets of an
//! infinite stream; `committed <= head`; a record is either entirely visible (CRC-checked) or
//! not at all; nothing before `committed` is ever read again and nothing at or after it is
//! overwritten. Apart from one `ioctl` in `uplink/delivery.rs`, this is the only module of the
//! crate that uses `unsafe`.

mod doorbell;
#[cfg(not(loom))]
pub mod intake;
pub mod journal;
#[cfg(not(loom))]
pub mod layout;
pub mod record;
mod ring;
pub mod shared_file;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;

pub use doorbell::{Doorbell, WaitTicket};
pub use journal::{
    scan_usage, usage_of, DiskBudget, DiskFigures, FsRoom, JournalError, JournalOptions,
    JournalReader, JournalWriter, SyncPolicy,
};
pub use ring::{Ring, RingConsumer, RingInfo, RingProducer};

use std::path::PathBuf;

/// `RecordMeta::flags` bit: the event was cut at the maximum message size.
pub const FLAG_TRUNCATED: u16 = 1;

/// What the producer says about an event besides its bytes (stored in the record header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordMeta {
    pub intake_id: u16,
    /// Reception time, microseconds since the Unix epoch.
    pub recv_time_us: i64,
    /// `FLAG_TRUNCATED`, others reserved (zero).
    pub flags: u16,
}

/// What one [`RingConsumer::read`] covered: positions `start..end` (record boundaries),
/// `records` payloads totalling `bytes` appended to the caller's buffer, and how many
/// corrupt stretches were skipped on the way (each one counted once, see `RingConsumer::read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadSpan {
    pub start: u64,
    pub end: u64,
    pub records: u32,
    pub bytes: u64,
    pub corrupt_skipped: u32,
}

/// Everything that can fail in the queue layer. Messages say what was wrong in words.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a sekoia-forwarder {what} file (magic {found:02x?})")]
    BadMagic {
        path: PathBuf,
        what: &'static str,
        found: [u8; 8],
    },
    #[error("{path} has format version {found}, this build understands only version {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path} was never completely initialised (its creator died while creating it)")]
    NotInitialised { path: PathBuf },
    #[error("{path} is {file_len} bytes but its header says it should be {expected} bytes")]
    SizeMismatch {
        path: PathBuf,
        file_len: u64,
        expected: u64,
    },
    #[error("ring capacity {capacity} is invalid: {reason}")]
    BadCapacity { capacity: u64, reason: &'static str },
    #[error("{path} has an invalid header: {reason}")]
    BadHeader { path: PathBuf, reason: String },
    #[error("record payload of {len} bytes exceeds this ring's maximum of {max} bytes")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("{path} already has a {role} attached (another process holds its lock)")]
    AlreadyAttached { path: PathBuf, role: &'static str },
    #[error("read position {pos} is outside the readable range {committed}..={head}")]
    PositionOutOfRange { pos: u64, committed: u64, head: u64 },
    #[error(transparent)]
    SharedFile(#[from] shared_file::SharedFileError),
}

impl RingError {
    /// True when retrying the same call later can succeed (a lock still held by a dying peer,
    /// a file still being created).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RingError::AlreadyAttached { .. } | RingError::NotInitialised { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        RingError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
