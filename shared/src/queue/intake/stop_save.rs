//! At an orderly stop, whatever the uplink could not send from a ring is written to the
//! spool's saved tier, so it survives a reboot or a new container, where `/dev/shm` does not.
//! The next start drains it before the ring and the journal: it is the oldest part of the
//! intake's queue.
//!
//! Order of operations, so no crash loses anything: records are appended and fsync'ed
//! first, and only then freed from the ring (a crash in between gives duplicates, never a
//! loss). If `DISK_SPACE` is exhausted, what does not fit stays in the ring (shared memory)
//! and is said in the log.

use std::path::Path;

use crate::queue::{DiskBudget, RingError};
use crate::queue::{JournalError, JournalOptions, JournalWriter, RecordMeta, RingConsumer};

/// What [`save_ring`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Saved {
    pub events: u64,
    pub bytes: u64,
    /// Bytes left in the ring because `DISK_SPACE` was exhausted.
    pub left_bytes: u64,
}

/// Why a ring could not be saved (its events stay in shared memory).
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    #[error("saved tier: {0}")]
    Journal(#[from] JournalError),
}

/// Saves the ring at `ring`'s undelivered records into the journal at `saved_dir`. Call only
/// once every worker has exited (the stop rule of the parent module).
pub fn save_ring(
    ring: &Path,
    saved_dir: &Path,
    intake_id: u16,
    budget: DiskBudget,
    opts: JournalOptions,
) -> Result<Saved, SaveError> {
    let mut consumer = RingConsumer::attach(ring)?;
    let (mut pos, head) = (consumer.committed(), consumer.head());
    let mut saved = Saved::default();
    if pos == head {
        return Ok(saved);
    }
    let mut writer = JournalWriter::open(saved_dir, intake_id, budget, opts)?;
    let meta = RecordMeta {
        intake_id,
        recv_time_us: crate::queue::journal::unix_micros(),
        flags: 0,
    };
    let mut payload = Vec::new();
    // One record per read, so the ring is freed exactly up to what was written.
    loop {
        payload.clear();
        let Some(span) = consumer.read(pos, None, 1, &mut payload)? else {
            break;
        };
        if span.records > 0 && !writer.append(&meta, &payload)? {
            saved.left_bytes = head - pos;
            break;
        }
        pos = span.end;
        saved.events += u64::from(span.records);
        saved.bytes += span.bytes;
    }
    writer.flush()?;
    writer.sync()?;
    writer.close()?;
    consumer.commit(pos);
    Ok(saved)
}
