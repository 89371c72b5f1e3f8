//! The per-intake ring: a file in `/dev/shm` mapped by one producer and one consumer process.
//!
//! The supervisor creates (or, after a crash, reopens) each ring with [`Ring::create_or_open`]
//! before it starts the workers; the ingest worker attaches a [`RingProducer`], the uplink a
//! [`RingConsumer`]. The file outlives all of them: only an explicit unlink (or a reboot)
//! removes it. Split: `layout.rs` (file header, mapping, validation), `memory.rs` (the seam
//! loom uses), `producer.rs`, `consumer.rs`.

mod consumer;
mod layout;
mod locks;
pub(crate) mod memory;
mod producer;
#[cfg(test)]
mod tests;

pub use consumer::RingConsumer;
pub use producer::RingProducer;

#[cfg(all(test, loom))]
pub(crate) use consumer::ConsumerCore;
#[cfg(all(test, loom))]
pub(crate) use producer::ProducerCore;

use std::path::Path;

use crate::queue::sync::Ordering;
use crate::queue::RingError;
use layout::MappedRing;
use memory::RingMemory;

/// Creation and inspection of ring files (used by the supervisor).
pub struct Ring;

/// What `create_or_open` found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingInfo {
    /// Data bytes of the ring. For a reopened ring this is the capacity it was created with,
    /// which may differ from the one requested now (its data is kept; resize after draining).
    pub capacity: u64,
    /// Producer's published position.
    pub head: u64,
    /// Consumer's committed position: `head - committed` bytes are waiting.
    pub committed: u64,
    /// True when an existing valid ring was reopened (its contents kept).
    pub reopened: bool,
}

impl Ring {
    /// Size of the file (header and data area) of a ring created with `data_capacity`: what
    /// `create_or_open` reserves in `/dev/shm` for a new ring.
    pub fn file_len(data_capacity: u64) -> u64 {
        layout::HEADER_LEN.saturating_add(data_capacity.next_multiple_of(8))
    }

    /// Creates the ring file at `path` with `data_capacity` bytes of data area (rounded up to
    /// a multiple of 8, at least 256), or reopens a valid existing one, keeping its contents:
    /// that is how a restarted supervisor finds the rings of its previous life and drains
    /// them. A file that was never completely created is re-initialised; a file with another
    /// magic, an unknown version or an inconsistent size is refused with an error saying so
    /// (it is left untouched). The memory is reserved up front (`posix_fallocate`), so a full
    /// `/dev/shm` is an error here rather than a SIGBUS in a worker later.
    pub fn create_or_open(
        path: &Path,
        data_capacity: u64,
        intake_id: u16,
    ) -> Result<RingInfo, RingError> {
        let (ring, reopened) = MappedRing::create_or_open(path, data_capacity, intake_id)?;
        let info = RingInfo {
            capacity: ring.capacity(),
            // Pairs with the producer's Release store in `publish` (of any earlier life).
            head: ring.load_head(Ordering::Acquire),
            // Pairs with the consumer's Release store in `commit`.
            committed: ring.load_committed(Ordering::Acquire),
            reopened,
        };
        if reopened
            && (info.capacity != data_capacity.next_multiple_of(8) || ring.intake_id() != intake_id)
        {
            tracing::warn!(
                path = %path.display(),
                capacity = info.capacity,
                requested = data_capacity,
                intake_id = ring.intake_id(),
                requested_intake_id = intake_id,
                "reopened ring keeps its original capacity and intake id"
            );
        }
        Ok(info)
    }
}
