//! An intake's queue as the uplink sees it: its tiers, drained oldest first, behind one
//! monotonic position space.
//!
//! Tiers, in the order they are drained: events saved to disk at the last orderly stop (the
//! memory tier written out), the shared-memory ring, then the ring's on-disk overflow (the
//! journal). The order is right because of the producer's rule: once the ring is full, new
//! events go to the journal until the journal is fully delivered; so everything in the ring
//! is older than everything in the journal, and the ring only gets new events again once the
//! journal is empty. Reading "the first tier that has something" therefore keeps the
//! intake's order.
//!
//! Each tier has its own positions; the uplink gets *virtual* positions (a running byte
//! count) and commits them in order. `outstanding` maps each virtual end back to its tier's
//! real end, so a commit frees exactly what was delivered, tier by tier.

use std::collections::VecDeque;
use std::io;

use std::path::Path;

use crate::queue::{DiskBudget, JournalOptions, JournalReader, ReadSpan, RingConsumer};
use crate::uplink::{self, BatchSource};

/// One place an intake's events are read from, in that tier's own positions.
pub trait Tier: Send + 'static {
    /// Start position: everything before it was delivered.
    fn committed(&self) -> u64;
    /// Payloads of whole records from record boundary `from`, about `max_bytes` (at least one
    /// record when there is one); None when nothing is there now.
    fn read(
        &mut self,
        from: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<ReadSpan>>;
    /// Everything before `pos` was delivered.
    fn commit(&mut self, pos: u64);
    /// Short name for logs.
    fn label(&self) -> &'static str;
}

/// The shared-memory ring as a tier.
pub struct RingTier(pub RingConsumer);

impl Tier for RingTier {
    fn committed(&self) -> u64 {
        self.0.committed()
    }

    fn read(
        &mut self,
        from: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<ReadSpan>> {
        self.0
            .read(from, None, max_bytes, out)
            .map_err(io::Error::other)
    }

    fn commit(&mut self, pos: u64) {
        self.0.commit(pos)
    }

    fn label(&self) -> &'static str {
        "ring"
    }
}

/// A journal (the ring's overflow, or what was saved at the last stop) as a tier.
pub struct JournalTier {
    reader: JournalReader,
    label: &'static str,
}

impl JournalTier {
    pub fn open(
        dir: &Path,
        label: &'static str,
        budget: &DiskBudget,
        opts: &JournalOptions,
    ) -> io::Result<Self> {
        let reader = JournalReader::open(dir, budget.clone(), opts.clone())
            .map_err(|e| io::Error::other(format!("cannot open journal {}: {e}", dir.display())))?;
        Ok(Self { reader, label })
    }
}

impl Tier for JournalTier {
    fn committed(&self) -> u64 {
        self.reader.committed()
    }

    fn read(
        &mut self,
        from: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<ReadSpan>> {
        self.reader
            .read(from, max_bytes, out)
            .map_err(io::Error::other)
    }

    fn commit(&mut self, pos: u64) {
        if let Err(e) = self.reader.commit(pos) {
            // The position is kept in memory; the checkpoint is retried at the next commit.
            tracing::warn!(journal = %self.reader.dir().display(), error = %e,
                "cannot persist the journal checkpoint");
        }
    }

    fn label(&self) -> &'static str {
        self.label
    }
}

/// A span handed out: where it ends in virtual positions and in its tier.
#[derive(Debug, Clone, Copy)]
struct Handed {
    virtual_end: u64,
    tier: usize,
    real_end: u64,
}

/// An intake's tiers behind one [`BatchSource`].
pub struct IntakeQueue {
    name: String,
    tiers: Vec<Box<dyn Tier>>,
    /// Next read position in each tier.
    cursors: Vec<u64>,
    /// Virtual position of the next read.
    next_virtual: u64,
    outstanding: VecDeque<Handed>,
    corrupt_skipped: u64,
}

impl IntakeQueue {
    /// `tiers` in drain order (oldest first).
    pub fn new(name: impl Into<String>, tiers: Vec<Box<dyn Tier>>) -> Self {
        let cursors = tiers.iter().map(|t| t.committed()).collect();
        Self {
            name: name.into(),
            tiers,
            cursors,
            next_virtual: 0,
            outstanding: VecDeque::new(),
            corrupt_skipped: 0,
        }
    }

    /// Records skipped as corrupt so far, over all tiers.
    pub fn corrupt_skipped(&self) -> u64 {
        self.corrupt_skipped
    }
}

impl BatchSource for IntakeQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn committed(&self) -> u64 {
        0
    }

    fn read(
        &mut self,
        from: u64,
        _until: Option<u64>,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<uplink::ReadSpan>> {
        debug_assert_eq!(
            from, self.next_virtual,
            "the uplink reads on from the last end"
        );
        for (idx, tier) in self.tiers.iter_mut().enumerate() {
            let Some(span) = tier.read(self.cursors[idx], max_bytes, out)? else {
                continue;
            };
            if span.corrupt_skipped > 0 {
                self.corrupt_skipped += u64::from(span.corrupt_skipped);
                tracing::warn!(intake = %self.name, tier = tier.label(),
                    skipped = span.corrupt_skipped, "skipped corrupt records");
            }
            self.cursors[idx] = span.end;
            let start = self.next_virtual;
            // At least 1, so every span (even one of only skipped records) moves the position.
            self.next_virtual += (span.end - span.start).max(1);
            self.outstanding.push_back(Handed {
                virtual_end: self.next_virtual,
                tier: idx,
                real_end: span.end,
            });
            return Ok(Some(uplink::ReadSpan {
                start,
                end: self.next_virtual,
                records: span.records,
                bytes: span.bytes,
            }));
        }
        Ok(None)
    }

    fn commit(&mut self, pos: u64) {
        let mut latest: Vec<Option<u64>> = vec![None; self.tiers.len()];
        while let Some(h) = self.outstanding.front().copied() {
            if h.virtual_end > pos {
                break;
            }
            latest[h.tier] = Some(h.real_end);
            self.outstanding.pop_front();
        }
        for (tier, end) in self.tiers.iter_mut().zip(latest) {
            if let Some(end) = end {
                tier.commit(end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tier over a list of payloads; positions are record indexes times 8.
    struct FakeTier {
        records: Vec<Vec<u8>>,
        committed: u64,
        label: &'static str,
    }

    impl Tier for FakeTier {
        fn committed(&self) -> u64 {
            self.committed
        }
        fn read(
            &mut self,
            from: u64,
            max_bytes: usize,
            out: &mut Vec<u8>,
        ) -> io::Result<Option<ReadSpan>> {
            let first = (from / 8) as usize;
            if first >= self.records.len() {
                return Ok(None);
            }
            let mut end = first;
            let mut bytes = 0;
            while end < self.records.len() && (end == first || bytes < max_bytes) {
                out.extend_from_slice(&self.records[end]);
                bytes += self.records[end].len();
                end += 1;
            }
            Ok(Some(ReadSpan {
                start: from,
                end: end as u64 * 8,
                records: (end - first) as u32,
                bytes: bytes as u64,
                corrupt_skipped: 0,
            }))
        }
        fn commit(&mut self, pos: u64) {
            assert!(pos >= self.committed, "{} commits go forward", self.label);
            self.committed = pos;
        }
        fn label(&self) -> &'static str {
            self.label
        }
    }

    fn tier(label: &'static str, items: &[&str]) -> Box<dyn Tier> {
        Box::new(FakeTier {
            records: items.iter().map(|s| s.as_bytes().to_vec()).collect(),
            committed: 0,
            label,
        })
    }

    #[test]
    fn drains_tiers_oldest_first_with_monotonic_positions() {
        let mut q = IntakeQueue::new(
            "t",
            vec![
                tier("saved", &["s1", "s2"]),
                tier("ring", &["r1"]),
                tier("journal", &["j1", "j2"]),
            ],
        );
        let mut out = Vec::new();
        let mut pos = q.committed();
        let mut ends = Vec::new();
        while let Some(span) = q.read(pos, None, 2, &mut out).unwrap() {
            assert_eq!(span.start, pos);
            assert!(span.end > span.start);
            pos = span.end;
            ends.push(pos);
        }
        assert_eq!(out, b"s1s2r1j1j2");
        for end in ends {
            q.commit(end);
        }
        assert!(q.outstanding.is_empty());
    }

    #[test]
    fn commit_frees_each_tier_only_up_to_what_was_delivered() {
        let mut q = IntakeQueue::new(
            "t",
            vec![tier("ring", &["a", "b"]), tier("journal", &["c"])],
        );
        let mut out = Vec::new();
        let a = q.read(0, None, 1, &mut out).unwrap().unwrap();
        let b = q.read(a.end, None, 1, &mut out).unwrap().unwrap();
        let c = q.read(b.end, None, 1, &mut out).unwrap().unwrap();
        q.commit(a.end);
        assert_eq!(q.tiers[0].committed(), 8);
        assert_eq!(q.tiers[1].committed(), 0);
        q.commit(c.end);
        assert_eq!(q.tiers[0].committed(), 16);
        assert_eq!(q.tiers[1].committed(), 8);
    }

    #[test]
    fn reads_resume_from_each_tiers_committed_position() {
        let mut ring = FakeTier {
            records: vec![b"old".to_vec(), b"new".to_vec()],
            committed: 8,
            label: "ring",
        };
        ring.committed = 8;
        let mut q = IntakeQueue::new("t", vec![Box::new(ring)]);
        let mut out = Vec::new();
        q.read(0, None, 100, &mut out).unwrap();
        assert_eq!(out, b"new");
    }
}
