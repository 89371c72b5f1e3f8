//! At an orderly stop, whatever the uplink could not send from a ring is written to the
//! spool's saved tier, so it survives a reboot or a new container, where `/dev/shm` does not.
//! The next start drains it before the ring and the journal: it is the oldest part of the
//! intake's queue.
//!
//! Order of operations, so no crash loses anything: records are appended and fsync'ed in
//! chunks, and each chunk is freed from the ring only once it is durable (a crash in between
//! gives duplicates, never a loss). When the disk budget is exhausted or the disk is full or
//! failing, what was not made durable stays in the ring (shared memory), where the next start
//! finds it; [`Saved`] says how much, and why, so the log never claims more than was saved.

use std::path::Path;

use crate::queue::{DiskBudget, RingError};
use crate::queue::{JournalError, JournalOptions, JournalWriter, RecordMeta, RingConsumer};

/// Records are made durable, then freed from the ring, every this many bytes. Each chunk
/// costs one fsync: at 64 KiB a full 1 GiB ring took 88 s to save (a container's grace
/// period kills it first); at 8 MiB the disk's write speed sets the pace. A crash during the
/// save re-sends at most one chunk (duplicates, never a loss).
const CHUNK_BYTES: usize = 8 << 20;

/// What [`save_ring`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Saved {
    /// Events written and synced to the saved tier (and freed from the ring).
    pub events: u64,
    pub bytes: u64,
    /// Ring bytes (records and headers) left in shared memory.
    pub left_bytes: u64,
    /// Why `left_bytes` were left (None when everything was saved).
    pub left_because: Option<String>,
}

/// Why a ring could not be saved at all (its events stay in shared memory).
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
    // Appended, not durable yet.
    let mut pending = Saved::default();
    // Why saving stopped early, and whether what is buffered may still be synced.
    let stop: Option<(String, bool)> = loop {
        payload.clear();
        // One record per read, so the ring is freed exactly up to what was written.
        let Some(span) = consumer.read(pos, None, 1, &mut payload)? else {
            break None;
        };
        match writer.append(&meta, &payload) {
            Ok(true) => {}
            Ok(false) => break Some(("the disk budget in force is exhausted".into(), true)),
            Err(e) => break Some((e.to_string(), true)),
        }
        pos = span.end;
        pending.events += u64::from(span.records);
        pending.bytes += span.bytes;
        if writer.buffered_bytes() >= CHUNK_BYTES {
            if let Err(e) = make_durable(&mut writer, &mut consumer, pos, &mut saved, &mut pending)
            {
                break Some((e.to_string(), false));
            }
        }
    };
    let stop = match stop {
        Some((why, false)) => Some(why),
        other => {
            let synced = make_durable(&mut writer, &mut consumer, pos, &mut saved, &mut pending);
            synced
                .err()
                .map(|e| e.to_string())
                .or(other.map(|(why, _)| why))
        }
    };
    // What is still buffered stays in the ring: the writer must not try to write it later.
    writer.discard_buffered();
    saved.left_bytes = head - consumer.committed();
    saved.left_because = stop.filter(|_| saved.left_bytes > 0);
    Ok(saved)
}

/// Flushes and syncs what is buffered, then frees it from the ring and counts it as saved.
fn make_durable(
    writer: &mut JournalWriter,
    consumer: &mut RingConsumer,
    pos: u64,
    saved: &mut Saved,
    pending: &mut Saved,
) -> Result<(), JournalError> {
    writer.sync()?;
    consumer.commit(pos);
    saved.events += std::mem::take(&mut pending.events);
    saved.bytes += std::mem::take(&mut pending.bytes);
    Ok(())
}
