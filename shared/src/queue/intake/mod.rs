//! An intake's queue, whole: where the ingest worker puts events, the order the uplink takes
//! them in, what an orderly stop saves, and the journal settings that hold them.
//!
//! Tiers, in the order they are drained:
//! 1. **saved** (`SPOOL_DIR/saved-<key>/`): what the ring still held at the last orderly stop
//!    ([`save_ring`], run by the supervisor once every worker has exited);
//! 2. **ring** (shared memory): the memory tier, bounded by `queue_size` events and by bytes;
//! 3. **journal** (`SPOOL_DIR/journal-<key>/`): the ring's overflow.
//!
//! **The ordering invariant**: every event in an earlier tier is older than every event in a
//! later one, so "read the first tier that has something" ([`IntakeQueue`]) sends an intake's
//! events oldest first. It holds because of two rules, both kept here and nowhere else:
//! - the spill rule ([`IntakeWriter`]): once the ring is full, every new event goes to the
//!   journal until the journal is fully delivered; only then does the ring take events again.
//!   So the ring never holds an event younger than one in the journal. The one exception is
//!   a journal that cannot be opened at all: then events go to the ring whenever it has room
//!   (holding senders back forever would be worse than an order the journal cannot give);
//! - the stop rule ([`save_ring`]): the saved tier is written only while no worker runs, from
//!   the ring's committed position, and a new start drains it before the ring.
//!
//! Files and folders are named by `queue::layout`; this module decides what goes where.

mod age;
mod drain;
mod stop_save;
mod writer;

#[cfg(test)]
mod tests;

pub use drain::{IntakeQueue, JournalTier, RingTier, Tier};
pub use stop_save::{save_ring, Saved};
pub use writer::{IntakeWriter, JournalOpener, Push, QueueSnapshot};

use std::time::Duration;

use crate::queue::journal::{JournalOptions, SyncPolicy, SEGMENT_HEADER_LEN};
use crate::queue::layout::{QueueKey, SpoolDir};
use crate::queue::record::{record_len, RECORD_HEADER_LEN};
use crate::queue::{DiskBudget, RingConsumer};

/// Largest record payload an ingest worker writes: an output line of at most 256000 bytes
/// (`syslog::MAX_MESSAGE`) behind its octet count (`256000 `).
pub const MAX_EVENT_PAYLOAD: usize = 256_000 + 7;

/// Largest journal segment; smaller when `DISK_SPACE` is small, so the budget holds a few
/// segments of every journal.
const MAX_SEGMENT: u64 = 64 << 20;
/// Smallest journal segment: it must hold the largest event, or that event could never
/// spill (its TCP sender would wait forever, its datagram would be dropped).
pub const MIN_SEGMENT: u64 =
    (SEGMENT_HEADER_LEN + record_len(MAX_EVENT_PAYLOAD)).next_multiple_of(4096) as u64;

const _: () = assert!(RECORD_HEADER_LEN < 4096);

/// Journal settings for `intakes` port intakes sharing `disk_space` bytes: a segment size that
/// lets every journal (overflow and saved) hold four segments, within
/// [`MIN_SEGMENT`]..=64 MiB; fsync after every write (`always`) or at most every second.
pub fn journal_options(disk_space: u64, intakes: usize, sync_always: bool) -> JournalOptions {
    let journals = (intakes.max(1) as u64) * 2;
    let segment = (disk_space / (4 * journals)).clamp(MIN_SEGMENT, MAX_SEGMENT) & !7;
    JournalOptions {
        segment_bytes: segment,
        sync: if sync_always {
            SyncPolicy::Always
        } else {
            SyncPolicy::Batch {
                interval: Duration::from_secs(1),
            }
        },
        ..JournalOptions::default()
    }
}

/// An intake's queue as the uplink's source: saved, then ring, then journal. A ring that
/// cannot be attached is logged and left as it is (its events stay in shared memory) rather
/// than stopping the other tiers; journals that cannot be opened are retried by their tier.
pub fn open_queue(
    key: QueueKey,
    ring: Option<&std::path::Path>,
    spool: &SpoolDir,
    budget: &DiskBudget,
    opts: &JournalOptions,
) -> IntakeQueue {
    let mut tiers: Vec<Box<dyn Tier>> = Vec::new();
    let saved = spool.saved_dir(key);
    if saved.is_dir() {
        tiers.push(Box::new(JournalTier::new(&saved, "saved", budget, opts)));
    }
    if let Some(ring) = ring {
        match RingConsumer::attach(ring) {
            Ok(consumer) => tiers.push(Box::new(RingTier::new(consumer))),
            Err(e) => {
                tracing::error!(ring = %ring.display(), error = %e, "cannot attach the ring; skipping it")
            }
        }
    }
    let journal = spool.journal_dir(key);
    tiers.push(Box::new(JournalTier::new(
        &journal, "journal", budget, opts,
    )));
    IntakeQueue::new(key.to_string(), tiers)
}
