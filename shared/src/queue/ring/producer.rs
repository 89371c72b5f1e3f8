//! The producer side of a ring: the ingest worker appends records and publishes them.
//!
//! `try_push` writes a whole record (header, payload, zero padding) at the producer's private
//! cursor and does not make it visible; `publish` makes every pushed record visible with one
//! Release store of `head`, then rings the doorbell (a no-op unless the uplink sleeps).
//! If a record does not fit before the end of the data area, the producer first fills the
//! rest with a PAD record, or, when fewer than 32 bytes (a header) remain, leaves them as
//! *implicit padding* that both sides skip. Records therefore never straddle the end, and
//! position `k * capacity` is always a record boundary.
//!
//! Crash behaviour: bytes pushed but not published are invisible; a re-attached producer
//! continues from the published `head` and overwrites them. The producer's view of
//! `committed` is a cache, re-read (Acquire) only when the cache says the ring is full.

use std::path::Path;

use super::layout::MappedRing;
use super::locks::Role;
use super::memory::{check_indices, RingMemory};
use crate::queue::doorbell::Doorbell;
use crate::queue::record::{
    encode_data_header, encode_pad_header, pad8, record_len, RECORD_HEADER_LEN,
};
use crate::queue::sync::Ordering;
use crate::queue::{RecordMeta, RingError};

const HDR: u64 = RECORD_HEADER_LEN as u64;
const ZEROS: [u8; 8] = [0; 8];
/// Free space is given back to the system in steps of this much (or a quarter of the ring,
/// when smaller), and that much ahead of `head` is kept for the next pushes.
pub(crate) const RELEASE_STEP: u64 = 1 << 20;
/// When free space is given back, the pages ahead of `head` are faulted in this much at a
/// time (at most the release step, so a prefaulted page is never given back unwritten).
pub(crate) const PREFAULT_STEP: u64 = 256 << 10;

/// The protocol half, generic over the memory so loom can run it (see memory.rs).
pub(crate) struct ProducerCore<M: RingMemory> {
    mem: M,
    capacity: u64,
    /// Position after the last pushed record (published or not).
    head: u64,
    /// `head % capacity`, kept incrementally.
    offset: u64,
    /// Last value stored to the shared `head`.
    published: u64,
    /// Last `committed` loaded from the consumer; only ever grows.
    committed_cache: u64,
    next_seq: u64,
    max_payload: usize,
    /// Bound on records held (published, not committed); None: bytes only.
    max_records: Option<u64>,
    /// Last `committed_seq` loaded; only ever grows.
    committed_seq_cache: u64,
    /// Bytes pushed between two looks for free space to give back; 0: never (the memory
    /// cannot release).
    release_step: u64,
    /// `head` at which the next look happens.
    next_release_check: u64,
    /// Free space up to this position was given back already.
    released_to: u64,
    /// Pages up to this position were prefaulted (only while giving memory back).
    prefaulted_to: u64,
}

impl<M: RingMemory> ProducerCore<M> {
    pub(crate) fn new(mem: M) -> Result<Self, String> {
        let capacity = mem.capacity();
        // Our own previous value (or a dead predecessor's); Acquire so that a successor
        // producer sees everything its predecessor published.
        let head = mem.load_head(Ordering::Acquire);
        // Pairs with the consumer's Release store in `commit`.
        let committed = mem.load_committed(Ordering::Acquire);
        check_indices(head, committed, capacity)?;
        let max_payload = (capacity / 2 - HDR).min(u32::MAX as u64) as usize;
        let release_step = if mem.can_release() {
            (RELEASE_STEP.min(capacity / 4) & !7).max(8)
        } else {
            0
        };
        Ok(ProducerCore {
            release_step,
            next_release_check: head,
            released_to: head,
            prefaulted_to: head,
            next_seq: mem.load_next_seq(),
            mem,
            capacity,
            head,
            offset: head % capacity,
            published: head,
            committed_cache: committed,
            max_payload,
            max_records: None,
            committed_seq_cache: 0,
        })
    }

    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    pub(crate) fn set_max_records(&mut self, max: Option<u64>) {
        self.max_records = max.map(|m| m.max(1));
        self.committed_seq_cache = self.mem.load_committed_seq();
    }

    fn free_with(&self, committed: u64) -> u64 {
        // `min` keeps a misbehaving consumer (committed beyond head) from inventing space.
        self.capacity - (self.head - committed.min(self.head))
    }

    pub(crate) fn free_bytes(&self) -> u64 {
        // Pairs with the consumer's Release store in `commit`.
        self.free_with(self.mem.load_committed(Ordering::Acquire))
    }

    /// `(records, bytes)` published and not yet committed by the consumer (what the memory
    /// tier holds now, as far as the producer can see).
    pub(crate) fn backlog(&self) -> (u64, u64) {
        // Pairs with the consumer's Release store of committed, which follows its store of
        // committed_seq: the seq loaded below is at least as new as this position.
        let committed = self.mem.load_committed(Ordering::Acquire);
        let committed_seq = self.mem.load_committed_seq();
        let records = self.next_seq.saturating_sub(committed_seq);
        (records, self.published - committed.min(self.published))
    }

    pub(crate) fn try_push(
        &mut self,
        meta: &RecordMeta,
        payload: &[u8],
    ) -> Result<bool, RingError> {
        if payload.len() > self.max_payload {
            return Err(RingError::PayloadTooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        if let Some(max) = self.max_records {
            if self.next_seq.saturating_sub(self.committed_seq_cache) >= max {
                // Pairs with the consumer's Release store of committed, which follows its
                // store of committed_seq.
                let _ = self.mem.load_committed(Ordering::Acquire);
                self.committed_seq_cache =
                    self.committed_seq_cache.max(self.mem.load_committed_seq());
                if self.next_seq.saturating_sub(self.committed_seq_cache) >= max {
                    return Ok(false);
                }
            }
        }
        let total = record_len(payload.len()) as u64;
        let to_end = self.capacity - self.offset;
        let skip = if to_end < total { to_end } else { 0 };
        let need = skip + total;
        if self.free_with(self.committed_cache) < need {
            // Pairs with the consumer's Release store in `commit`: its reads of the bytes it
            // freed happen before our writes into them.
            self.committed_cache = self.mem.load_committed(Ordering::Acquire);
            if self.free_with(self.committed_cache) < need {
                return Ok(false);
            }
        }
        if self.release_step > 0 && self.head + need > self.prefaulted_to {
            self.prefault_ahead(need);
        }
        if skip > 0 {
            if skip >= HDR {
                let pad =
                    encode_pad_header((skip - HDR) as u32, self.mem.intake_id(), self.next_seq);
                // SAFETY: `offset + 32 <= capacity` (skip >= HDR), and these bytes are free
                // space: `need` bytes from `head` were checked against `committed` above.
                unsafe { self.mem.write(self.offset, &pad) };
            }
            // else: fewer than a header's bytes remain; they are implicit padding.
            self.head += skip;
            self.offset = 0;
        }
        let header = encode_data_header(meta, self.next_seq, payload).map_err(|_| {
            RingError::PayloadTooLarge {
                len: payload.len(),
                max: self.max_payload,
            }
        })?;
        let fill = pad8(payload.len()) - payload.len();
        // SAFETY: the record's `total` bytes fit before the end (`skip` moved us to offset 0
        // otherwise, and total <= capacity / 2), and they are free space checked above.
        unsafe {
            self.mem.write(self.offset, &header);
            self.mem.write(self.offset + HDR, payload);
            self.mem
                .write(self.offset + HDR + payload.len() as u64, &ZEROS[..fill]);
        }
        self.head += total;
        self.offset += total;
        if self.offset == self.capacity {
            self.offset = 0;
        }
        self.next_seq += 1;
        if self.release_step > 0 && self.head >= self.next_release_check {
            self.release_free_space();
        }
        Ok(true)
    }

    /// Prefaults the free space from `head` to `PREFAULT_STEP` past it (at least `need`):
    /// pages given back a lap ago come back in one call instead of one fault per page.
    fn prefault_ahead(&mut self, need: u64) {
        let from = self.head.max(self.prefaulted_to);
        // Free space only (`committed_cache` was checked against `need` just before).
        // Within the release step: a prefaulted page is never given back before it is written.
        let ahead = PREFAULT_STEP.min(self.release_step).max(need);
        let to = (self.head + ahead).min(self.committed_cache + self.capacity);
        self.prefaulted_to = to;
        if to <= from {
            return;
        }
        let (start, len) = (from % self.capacity, to - from);
        let first = len.min(self.capacity - start);
        self.mem.prefault(start, first);
        if len > first {
            self.mem.prefault(0, len - first);
        }
    }

    /// [`Self::release_free_space`] if this memory can release at all.
    pub(crate) fn release_now(&mut self) {
        if self.release_step > 0 {
            self.release_free_space();
        }
    }

    /// Gives the memory of free space back (hole punch), except the `release_step` bytes
    /// after `head` that the next pushes write: free space is ours (positions from `head`
    /// to `committed + capacity`, with `committed` loaded Acquire), nobody reads it before
    /// we write it again, and writing it then faults in fresh zero pages. So the resident
    /// part of the ring follows the bytes queued instead of every page ever touched.
    ///
    /// Done here, not by the consumer after `commit`: once `committed` is stored the bytes
    /// are ours and we may be writing them while a consumer-side punch would zero them;
    /// before the store, the consumer could only give back each commit's own whole pages.
    fn release_free_space(&mut self) {
        self.next_release_check = self.head + self.release_step;
        // Pairs with the consumer's Release store in `commit`: its reads of the bytes it
        // freed happen before we zero them.
        self.committed_cache = self
            .committed_cache
            .max(self.mem.load_committed(Ordering::Acquire));
        let from = self.released_to.max(self.head + self.release_step);
        let to = self.committed_cache + self.capacity;
        if to <= from || to - from < self.release_step {
            return;
        }
        self.released_to = to;
        let (start, len) = (from % self.capacity, to - from);
        let first = len.min(self.capacity - start);
        // SAFETY: positions `from..to` are free space (after `head`, before `committed +
        // capacity` with `committed` just loaded Acquire), and `len <= capacity` because
        // `from > head >= committed`. Each call stays inside the data area: the first part
        // ends at or before the end, the rest starts at offset 0 (wrap).
        unsafe {
            self.mem.release(start, first);
            if len > first {
                self.mem.release(0, len - first);
            }
        }
    }

    /// Publishes everything pushed. Returns false when there was nothing new.
    pub(crate) fn publish(&mut self) -> bool {
        if self.head == self.published {
            return false;
        }
        // Before head: a crash in between leaves a gap in sequence numbers, never a repeat.
        self.mem.store_next_seq(self.next_seq);
        // Pairs with the consumer's Acquire load of head in `read`: the record bytes written
        // by `try_push` are visible to it before it sees the new head.
        self.mem.store_head(self.head, Ordering::Release);
        self.published = self.head;
        true
    }
}

/// The single producer of one ring (the intake's ingest worker).
pub struct RingProducer {
    core: ProducerCore<MappedRing>,
    doorbell: Option<Doorbell>,
}

impl RingProducer {
    /// Attaches to an existing ring as its only producer (no doorbell: set one with
    /// [`RingProducer::set_doorbell`] or use [`RingProducer::attach_with_doorbell`]).
    pub fn attach(path: &Path) -> Result<Self, RingError> {
        let ring = MappedRing::attach(path, Role::Producer)?;
        let mut core = ProducerCore::new(ring).map_err(|reason| RingError::BadHeader {
            path: path.to_path_buf(),
            reason,
        })?;
        // A new ring was reserved whole (posix_fallocate); a reopened one may hold pages of
        // events delivered since. Give the free space back now, not at the first push.
        core.release_now();
        Ok(RingProducer {
            core,
            doorbell: None,
        })
    }

    /// Attaches and rings `doorbell` on every `publish` that made something visible.
    pub fn attach_with_doorbell(path: &Path, doorbell: Doorbell) -> Result<Self, RingError> {
        let mut producer = Self::attach(path)?;
        producer.set_doorbell(doorbell);
        Ok(producer)
    }

    /// Sets (or replaces) the doorbell rung by `publish`.
    pub fn set_doorbell(&mut self, doorbell: Doorbell) {
        self.doorbell = Some(doorbell);
    }

    /// Appends one record (not yet visible). `Ok(false)`: no room now; the caller applies
    /// back-pressure and retries after the consumer commits. A payload larger than
    /// [`RingProducer::max_payload`] is an error, never a wait.
    pub fn try_push(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<bool, RingError> {
        self.core.try_push(meta, payload)
    }

    /// Makes everything pushed visible to the consumer (one Release store) and rings the
    /// doorbell if the consumer sleeps.
    pub fn publish(&mut self) {
        if self.core.publish() {
            if let Some(bell) = &self.doorbell {
                bell.ring();
            }
        }
    }

    /// Bytes free right now (re-reads `committed`).
    pub fn free_bytes(&self) -> u64 {
        self.core.free_bytes()
    }

    /// Largest payload `try_push` accepts: capacity / 2 minus the record header.
    pub fn max_payload(&self) -> usize {
        self.core.max_payload()
    }

    /// Sequence number the next pushed record gets.
    pub fn next_seq(&self) -> u64 {
        self.core.next_seq
    }

    /// `(records, bytes)` the ring holds now: pushed and published, not yet committed by the
    /// consumer. Records pushed and not yet published are counted in `records` only.
    pub fn backlog(&self) -> (u64, u64) {
        self.core.backlog()
    }

    /// Bounds the ring by records as well as bytes: `try_push` says "no room" once `max`
    /// records are published and not yet committed (the intake's `queue_size`).
    pub fn set_max_records(&mut self, max: Option<u64>) {
        self.core.set_max_records(max)
    }

    /// The ring file this producer is attached to.
    pub fn path(&self) -> &Path {
        self.core.mem_path()
    }
}

impl ProducerCore<MappedRing> {
    fn mem_path(&self) -> &Path {
        self.mem.path()
    }
}
