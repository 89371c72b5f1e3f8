//! The consumer side of a ring: the uplink copies whole records out and frees them later.
//!
//! The uplink keeps its own *read* and *sent* cursors; only *committed* lives in the file,
//! and only it frees space. After (re)attaching, reading restarts at [`RingConsumer::committed`]
//! (so a consumer crash means duplicates, never loss).
//!
//! Walking from a record boundary `pos` up to the limit `min(head, until)`:
//! - fewer than 32 bytes before the end of the data area: implicit padding, skip to the end;
//! - a PAD record whose CRC verifies and which reaches exactly the end: skip it;
//! - a DATA record whose header decodes and whose length is *sane* (the record ends before
//!   the end of the data area and at or before `head`): copy its payload, check the CRC-32C;
//!   on mismatch drop the copy, count one corrupt record and skip its declared length;
//! - anything else (unknown version/kind, insane length, bad PAD): count one corrupt stretch
//!   and skip to the end of the contiguous segment, `min(end of data area, head)`. The end of
//!   the data area is always a record boundary, because records never straddle it.
//!
//! Every step advances by at least 8 bytes and never past the limit, so a read terminates and
//! never touches unpublished bytes, whatever the ring contains. `head` itself comes from the
//! other process: a value no producer could publish (not 8-aligned, behind the last one seen,
//! more than the capacity past `committed`) is ignored and the last good one kept, so reads
//! stay on record boundaries and within one lap of the ring (found by the fuzz target).

use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use super::layout::MappedRing;
use super::locks::Role;
use super::memory::{check_indices, RingMemory};
use crate::log_limit::{Repeating, Report, SUMMARY_EVERY};
use crate::queue::record::{decode_header, verify, RecordKind, RECORD_HEADER_LEN};
use crate::queue::sync::Ordering;
use crate::queue::{ReadSpan, RingError};

const HDR: u64 = RECORD_HEADER_LEN as u64;

/// The protocol half, generic over the memory so loom can run it (see memory.rs).
pub(crate) struct ConsumerCore<M: RingMemory> {
    mem: M,
    capacity: u64,
    /// Last `head` loaded (Acquire); re-read only when a read reaches it.
    head_cache: u64,
    committed: u64,
    /// For each span read and not yet committed: its end and the seq of the record after it,
    /// so a commit can publish `committed_seq` (the producer's count bound).
    seq_marks: VecDeque<(u64, u64)>,
    /// Impossible heads seen (logged under the repeating rule).
    bad_head: Repeating,
}

impl<M: RingMemory> ConsumerCore<M> {
    pub(crate) fn new(mem: M) -> Result<Self, String> {
        // Our own previous value (or a dead predecessor's).
        let committed = mem.load_committed(Ordering::Acquire);
        // Pairs with the producer's Release store in `publish`.
        let head = mem.load_head(Ordering::Acquire);
        check_indices(head, committed, mem.capacity())?;
        Ok(ConsumerCore {
            capacity: mem.capacity(),
            mem,
            head_cache: head,
            committed,
            seq_marks: VecDeque::new(),
            bad_head: Repeating::new(SUMMARY_EVERY),
        })
    }

    /// Loads `head` and keeps it only if a producer could have published it (see the module
    /// doc); returns the head to read up to.
    fn refresh_head(&mut self) -> u64 {
        // Pairs with the producer's Release store in `publish`: the bytes of every record
        // below the loaded head are visible to the copies that follow.
        let head = self.mem.load_head(Ordering::Acquire);
        let possible =
            head >= self.head_cache && check_indices(head, self.committed, self.capacity).is_ok();
        if possible {
            self.head_cache = head;
            if self.bad_head.is_active() {
                if let Some(Report::Ended { total, .. }) = self.bad_head.cleared(Instant::now()) {
                    tracing::info!(
                        head,
                        total,
                        "ring: the producer publishes possible heads again"
                    );
                }
            }
        } else if let Some(report) = self.bad_head.occurred(Instant::now()) {
            tracing::warn!(
                head,
                last_good = self.head_cache,
                committed = self.committed,
                capacity = self.capacity,
                ?report,
                "ring: ignoring a head no producer could publish (damage or a broken producer)"
            );
        }
        self.head_cache
    }

    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    pub(crate) fn head(&self) -> u64 {
        // Pairs with the producer's Release store in `publish`.
        self.mem.load_head(Ordering::Acquire)
    }

    pub(crate) fn read(
        &mut self,
        from: u64,
        until: Option<u64>,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<ReadSpan>, RingError> {
        let mut refreshed = from >= self.head_cache;
        if refreshed {
            self.refresh_head();
        }
        let mut head = self.head_cache;
        if from < self.committed || from > head || !from.is_multiple_of(8) {
            return Err(RingError::PositionOutOfRange {
                pos: from,
                committed: self.committed,
                head,
            });
        }
        let until = until.map_or(u64::MAX, |u| u & !7);
        let mut limit = until.min(head);
        let mut span = ReadSpan {
            start: from,
            end: from,
            ..ReadSpan::default()
        };
        let mut pos = from;
        let mut offset = from % self.capacity;
        let mut next_seq = None;
        loop {
            if pos >= limit {
                if refreshed || until <= head {
                    break;
                }
                // Reached the cached head: look once more, so one read returns everything
                // published when it started.
                refreshed = true;
                head = self.refresh_head();
                limit = until.min(head);
                continue;
            }
            let to_end = self.capacity - offset;
            let step = if to_end < HDR {
                to_end // implicit padding
            } else {
                let mut raw = [0u8; RECORD_HEADER_LEN];
                // SAFETY: `offset + 32 <= capacity` (to_end >= HDR); the bytes are published
                // (pos < head, and a published position with a header's room before the end
                // starts a whole record below head) and not freed (pos >= committed).
                unsafe { self.mem.read(offset, &mut raw) };
                match decode_header(&raw) {
                    Ok(h)
                        if h.kind == RecordKind::Pad
                            && h.record_len() == to_end
                            && verify(&raw, &[]) =>
                    {
                        to_end
                    }
                    Ok(h)
                        if h.kind == RecordKind::Data
                            && h.record_len() <= to_end
                            && pos + h.record_len() <= head =>
                    {
                        let total = h.record_len();
                        let len = h.len as usize;
                        if pos + total > limit
                            || (span.records > 0 && span.bytes + len as u64 > max_bytes as u64)
                        {
                            break;
                        }
                        let start = out.len();
                        out.resize(start + len, 0);
                        // SAFETY: the whole record lies in `offset..offset + total` <= capacity
                        // (checked by the guard) and below head, at or after committed.
                        unsafe { self.mem.read(offset + HDR, &mut out[start..]) };
                        if verify(&raw, &out[start..]) {
                            span.records += 1;
                            span.bytes += len as u64;
                            next_seq = Some(h.seq + 1);
                        } else {
                            out.truncate(start);
                            span.corrupt_skipped += 1;
                        }
                        total
                    }
                    _ => {
                        span.corrupt_skipped += 1;
                        (pos + to_end).min(limit) - pos
                    }
                }
            };
            if pos + step > limit {
                break; // padding crossing `until`: stop at the boundary before it.
            }
            pos += step;
            offset += step;
            if offset == self.capacity {
                offset = 0;
            }
        }
        span.end = pos;
        if let Some(seq) = next_seq {
            self.seq_marks.push_back((pos, seq));
        }
        if span.corrupt_skipped > 0 {
            tracing::warn!(
                from,
                to = pos,
                corrupt = span.corrupt_skipped,
                "ring: skipped corrupt records"
            );
        }
        Ok((pos > from).then_some(span))
    }

    pub(crate) fn commit(&mut self, pos: u64) {
        debug_assert!(
            pos >= self.committed && pos <= self.head_cache && pos.is_multiple_of(8),
            "commit({pos}) outside {}..={} or unaligned",
            self.committed,
            self.head_cache
        );
        if pos <= self.committed || pos > self.head_cache || !pos.is_multiple_of(8) {
            if pos != self.committed {
                tracing::warn!(
                    pos,
                    committed = self.committed,
                    head = self.head_cache,
                    "ring: ignoring commit outside the readable range"
                );
            }
            return;
        }
        self.committed = pos;
        let mut committed_seq = None;
        while let Some(&(end, seq)) = self.seq_marks.front() {
            if end > pos {
                break;
            }
            committed_seq = Some(seq);
            self.seq_marks.pop_front();
        }
        if let Some(seq) = committed_seq {
            // Published by the Release store below, with committed.
            self.mem.store_committed_seq(seq);
        }
        // Pairs with the producer's Acquire load of committed in `try_push`: our copies out
        // of the freed bytes happen before it overwrites them.
        self.mem.store_committed(pos, Ordering::Release);
    }
}

/// The single consumer of one ring (the uplink worker). The read cursor is the caller's.
pub struct RingConsumer {
    core: ConsumerCore<MappedRing>,
}

impl RingConsumer {
    /// Attaches to an existing ring as its only consumer.
    pub fn attach(path: &Path) -> Result<Self, RingError> {
        let ring = MappedRing::attach(path, Role::Consumer)?;
        let core = ConsumerCore::new(ring).map_err(|reason| RingError::BadHeader {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(RingConsumer { core })
    }

    /// Position to start reading from after (re)attach: everything before it was delivered.
    pub fn committed(&self) -> u64 {
        self.core.committed()
    }

    /// The producer's published position (Acquire load).
    pub fn head(&self) -> u64 {
        self.core.head()
    }

    /// Appends to `out` the payloads of whole records starting at record boundary `from`,
    /// stopping before `until` (if given) and before the record that would take the payload
    /// total past `max_bytes` (at least one record is always returned). `None`: nothing there.
    /// `from` must be `committed()` or an `end` returned earlier; otherwise
    /// `PositionOutOfRange`. Corrupt records are skipped and counted, never returned.
    pub fn read(
        &mut self,
        from: u64,
        until: Option<u64>,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<ReadSpan>, RingError> {
        self.core.read(from, until, max_bytes, out)
    }

    /// Frees everything before `pos` (Release). `pos` must be an `end` returned by `read`;
    /// a position behind `committed` or beyond what was read is ignored (debug builds assert).
    pub fn commit(&mut self, pos: u64) {
        self.core.commit(pos)
    }
}
