//! The uplink's side of an intake's queue: its tiers, drained oldest first, behind one
//! monotonic position space (why that order is the intake's: see the parent module).
//!
//! Each tier has its own positions and read cursor; the uplink gets *virtual* positions (a
//! running byte count) and commits them in order. `outstanding` maps each virtual end back
//! to its tier's real end, so a commit frees exactly what was delivered, tier by tier.
//!
//! A span handed out and not committed yet can be read again (the uplink re-sends a failed
//! batch from here instead of keeping its bytes): `outstanding` also knows where each span
//! starts, and the tier reads exactly that range again without moving its cursor.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::log_limit::{Repeating, Report};
use crate::queue::{
    DiskBudget, JournalError, JournalOptions, JournalReader, ReadSpan, RingConsumer,
};

/// How often a journal that cannot be opened is tried again.
const JOURNAL_RETRY_EVERY: Duration = Duration::from_secs(10);

/// One place an intake's events are read from, in that tier's own positions. A tier keeps
/// its read cursor (starting at what was committed) and moves it with every read.
pub trait Tier: Send + 'static {
    /// Payloads of the next whole records, about `max_bytes` (at least one record when there
    /// is one); None when nothing is there now.
    fn read(&mut self, max_bytes: usize, out: &mut Vec<u8>) -> io::Result<Option<ReadSpan>>;
    /// Payloads of the records of `from..until` again, exactly (a span this tier returned
    /// and that is not committed yet); the cursor does not move.
    fn read_range(
        &mut self,
        from: u64,
        until: u64,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<ReadSpan>>;
    /// Everything before `pos` (an `end` this tier returned) was delivered.
    fn commit(&mut self, pos: u64);
    /// Short name for logs.
    fn label(&self) -> &'static str;
}

/// The shared-memory ring as a tier.
pub struct RingTier {
    ring: RingConsumer,
    cursor: u64,
}

impl RingTier {
    pub fn new(ring: RingConsumer) -> Self {
        let cursor = ring.committed();
        Self { ring, cursor }
    }
}

impl Tier for RingTier {
    fn read(&mut self, max_bytes: usize, out: &mut Vec<u8>) -> io::Result<Option<ReadSpan>> {
        let span = self
            .ring
            .read(self.cursor, None, max_bytes, out)
            .map_err(io::Error::other)?;
        if let Some(span) = &span {
            self.cursor = span.end;
        }
        Ok(span)
    }

    fn read_range(
        &mut self,
        from: u64,
        until: u64,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<ReadSpan>> {
        self.ring
            .read(from, Some(until), usize::MAX, out)
            .map_err(io::Error::other)
    }

    fn commit(&mut self, pos: u64) {
        self.ring.commit(pos)
    }

    fn label(&self) -> &'static str {
        "ring"
    }
}

/// A journal (the ring's overflow, or what was saved at the last stop) as a tier. A journal
/// that cannot be opened (unreadable directory, a segment of an unknown format) is logged
/// and retried; it never stops the other tiers or intakes.
pub struct JournalTier {
    dir: PathBuf,
    label: &'static str,
    budget: DiskBudget,
    opts: JournalOptions,
    reader: Option<JournalReader>,
    cursor: u64,
    last_try: Option<Instant>,
    /// The checkpoint cannot be persisted (a read-only or failing disk): one rule for the
    /// log lines (`log_limit`).
    checkpoint_failing: Repeating,
}

impl JournalTier {
    pub fn new(
        dir: &Path,
        label: &'static str,
        budget: &DiskBudget,
        opts: &JournalOptions,
    ) -> Self {
        let mut tier = Self {
            dir: dir.to_path_buf(),
            label,
            budget: budget.clone(),
            opts: opts.clone(),
            reader: None,
            cursor: 0,
            last_try: None,
            checkpoint_failing: Repeating::default(),
        };
        tier.try_open();
        tier
    }

    fn try_open(&mut self) {
        if self
            .last_try
            .is_some_and(|at| at.elapsed() < JOURNAL_RETRY_EVERY)
        {
            return;
        }
        self.last_try = Some(Instant::now());
        match JournalReader::open(&self.dir, self.budget.clone(), self.opts.clone()) {
            Ok(reader) => {
                self.cursor = reader.committed();
                self.reader = Some(reader);
            }
            Err(e) => tracing::error!(journal = %self.dir.display(), error = %e,
                "cannot open the journal for reading; retrying (other queues go on)"),
        }
    }
}

impl JournalTier {
    /// Logs a checkpoint failure, or its end, by the rule for repeating conditions.
    fn checkpoint_result(&mut self, result: Result<(), JournalError>) {
        let now = Instant::now();
        let dir = self.dir.display();
        match (result, &mut self.checkpoint_failing) {
            (Ok(()), c) if c.is_active() => {
                if let Some(Report::Ended { total, lasted }) = c.cleared(now) {
                    tracing::info!(journal = %dir, failures = total, lasted_s = lasted.as_secs(),
                        "journal checkpoint persisted again");
                }
            }
            (Ok(()), _) => {}
            (Err(e), c) => match c.occurred(now) {
                Some(Report::Started) => tracing::warn!(journal = %dir, error = %e,
                    "cannot persist the journal checkpoint; delivery goes on, the position is kept in memory and retried (a restart meanwhile re-sends, never loses)"),
                Some(Report::Ongoing {
                    count,
                    total,
                    lasted,
                }) => tracing::warn!(journal = %dir,
                    error = %e, count, total, lasted_s = lasted.as_secs(),
                    "journal checkpoint still cannot be persisted"),
                _ => {}
            },
        }
    }
}

impl Tier for JournalTier {
    fn read(&mut self, max_bytes: usize, out: &mut Vec<u8>) -> io::Result<Option<ReadSpan>> {
        if self.reader.is_none() {
            self.try_open();
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        let span = reader
            .read(self.cursor, max_bytes, out)
            .map_err(io::Error::other)?;
        match &span {
            Some(span) => self.cursor = span.end,
            // Idle: make the last commit durable, so a quiet intake is not re-sent after a
            // crash (commits persist the checkpoint at most every checkpoint_interval).
            None if reader.persisted() < reader.committed() => {
                let synced = reader.sync_checkpoint();
                self.checkpoint_result(synced);
            }
            None => {}
        }
        Ok(span)
    }

    fn read_range(
        &mut self,
        from: u64,
        until: u64,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<ReadSpan>> {
        let Some(reader) = self.reader.as_mut() else {
            return Err(io::Error::other(format!(
                "journal {} is not open",
                self.dir.display()
            )));
        };
        reader
            .read_until(from, Some(until), usize::MAX, out)
            .map_err(io::Error::other)
    }

    fn commit(&mut self, pos: u64) {
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        // On error the position is kept in memory; the checkpoint is retried at the next
        // commit, or when the tier is idle.
        let committed = reader.commit(pos);
        self.checkpoint_result(committed);
    }

    fn label(&self) -> &'static str {
        self.label
    }
}

/// A span handed out: where it is in virtual positions and in its tier.
#[derive(Debug, Clone, Copy)]
struct Handed {
    virtual_start: u64,
    virtual_end: u64,
    tier: usize,
    real_start: u64,
    real_end: u64,
}

/// An intake's queue as the uplink reads it: its tiers in drain order, one position space.
pub struct IntakeQueue {
    name: String,
    tiers: Vec<Box<dyn Tier>>,
    /// Virtual position of the next read.
    next_virtual: u64,
    outstanding: VecDeque<Handed>,
    corrupt_skipped: u64,
}

impl IntakeQueue {
    /// `tiers` in drain order (oldest first).
    pub fn new(name: impl Into<String>, tiers: Vec<Box<dyn Tier>>) -> Self {
        Self {
            name: name.into(),
            tiers,
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

impl IntakeQueue {
    /// Reads again a span handed out earlier and not committed: exactly `from..until`, one
    /// span as it was handed out (the uplink re-reads whole batches). Corrupt records found
    /// again are not counted again.
    fn read_again(
        &mut self,
        from: u64,
        until: Option<u64>,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<ReadSpan>> {
        let handed = self
            .outstanding
            .iter()
            .find(|h| h.virtual_start == from)
            .copied()
            .filter(|h| until.is_none_or(|u| u == h.virtual_end));
        let Some(h) = handed else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: no span handed out at {from} (until {until:?}) to read again",
                    self.name
                ),
            ));
        };
        let len = out.len();
        let tier = &mut self.tiers[h.tier];
        match tier.read_range(h.real_start, h.real_end, out)? {
            Some(span) if span.start == h.real_start && span.end == h.real_end => {
                Ok(Some(ReadSpan {
                    start: h.virtual_start,
                    end: h.virtual_end,
                    records: span.records,
                    bytes: span.bytes,
                    corrupt_skipped: 0,
                }))
            }
            other => {
                // The tier lost part of the span since it was handed out (a journal segment
                // moved aside as unreadable): hand out what is left under the same positions,
                // so the uplink re-sends it and moves on instead of retrying forever.
                let (records, bytes) = match other {
                    Some(span) if span.start == h.real_start && span.end <= h.real_end => {
                        (span.records, span.bytes)
                    }
                    _ => (0, 0),
                };
                out.truncate(len + bytes as usize);
                tracing::warn!(intake = %self.name, tier = tier.label(), from = h.real_start,
                    until = h.real_end, records, "part of a span could not be read again; re-sending what is left");
                Ok(Some(ReadSpan {
                    start: h.virtual_start,
                    end: h.virtual_end,
                    records,
                    bytes,
                    corrupt_skipped: 1,
                }))
            }
        }
    }
}

/// The uplink's view (`uplink::BatchSource` is implemented on top of these).
impl IntakeQueue {
    /// The intake's name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Virtual positions start at 0 in every life: each tier resumes at its own committed
    /// position.
    pub fn committed(&self) -> u64 {
        0
    }

    /// Whole records from `from` (the end of the previous read, or the start of a span handed
    /// out and not committed, with `until` its end: then exactly that span again).
    pub fn read(
        &mut self,
        from: u64,
        until: Option<u64>,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<ReadSpan>> {
        if from != self.next_virtual {
            return self.read_again(from, until, out);
        }
        for (idx, tier) in self.tiers.iter_mut().enumerate() {
            let Some(span) = tier.read(max_bytes, out)? else {
                continue;
            };
            if span.corrupt_skipped > 0 {
                self.corrupt_skipped += u64::from(span.corrupt_skipped);
                tracing::warn!(intake = %self.name, tier = tier.label(),
                    skipped = span.corrupt_skipped, total = self.corrupt_skipped,
                    "skipped corrupt records");
            }
            let start = self.next_virtual;
            // At least 1, so every span (even one of only skipped records) moves the position.
            self.next_virtual += (span.end - span.start).max(1);
            self.outstanding.push_back(Handed {
                virtual_start: start,
                virtual_end: self.next_virtual,
                tier: idx,
                real_start: span.start,
                real_end: span.end,
            });
            return Ok(Some(ReadSpan {
                start,
                end: self.next_virtual,
                ..span
            }));
        }
        Ok(None)
    }

    /// Everything before the virtual position `pos` was delivered: each tier is freed up to
    /// the real end of the last span of it before `pos`.
    pub fn commit(&mut self, pos: u64) {
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
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A tier over a list of payloads; positions are record indexes times 8.
    struct FakeTier {
        records: Vec<Vec<u8>>,
        committed: Arc<AtomicU64>,
        cursor: u64,
        label: &'static str,
    }

    impl Tier for FakeTier {
        fn read(&mut self, max_bytes: usize, out: &mut Vec<u8>) -> io::Result<Option<ReadSpan>> {
            let from = self.cursor;
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
            self.cursor = end as u64 * 8;
            Ok(Some(ReadSpan {
                start: from,
                end: self.cursor,
                records: (end - first) as u32,
                bytes: bytes as u64,
                corrupt_skipped: 0,
            }))
        }

        fn read_range(
            &mut self,
            from: u64,
            until: u64,
            out: &mut Vec<u8>,
        ) -> io::Result<Option<ReadSpan>> {
            let (first, last) = ((from / 8) as usize, (until / 8) as usize);
            if first >= last || last > self.records.len() {
                return Ok(None);
            }
            let mut bytes = 0;
            for record in &self.records[first..last] {
                out.extend_from_slice(record);
                bytes += record.len();
            }
            Ok(Some(ReadSpan {
                start: from,
                end: until,
                records: (last - first) as u32,
                bytes: bytes as u64,
                corrupt_skipped: 0,
            }))
        }

        fn commit(&mut self, pos: u64) {
            let before = self.committed.swap(pos, Ordering::SeqCst);
            assert!(pos >= before, "{} commits go forward", self.label);
        }

        fn label(&self) -> &'static str {
            self.label
        }
    }

    fn tier(label: &'static str, items: &[&str], at: u64) -> (Box<dyn Tier>, Arc<AtomicU64>) {
        let committed = Arc::new(AtomicU64::new(at));
        let tier = Box::new(FakeTier {
            records: items.iter().map(|s| s.as_bytes().to_vec()).collect(),
            committed: committed.clone(),
            cursor: at,
            label,
        });
        (tier, committed)
    }

    #[test]
    fn drains_tiers_oldest_first_with_monotonic_positions() {
        let tiers = vec![
            tier("saved", &["s1", "s2"], 0).0,
            tier("ring", &["r1"], 0).0,
            tier("journal", &["j1", "j2"], 0).0,
        ];
        let mut q = IntakeQueue::new("t", tiers);
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
    fn a_span_not_yet_committed_reads_again_exactly_from_its_tier() {
        let (saved, _) = tier("saved", &["s1", "s2"], 0);
        let (ring, ring_committed) = tier("ring", &["r1", "r2", "r3"], 0);
        let mut q = IntakeQueue::new("t", vec![saved, ring]);
        let mut out = Vec::new();
        let a = q.read(0, None, 4, &mut out).unwrap().unwrap(); // s1 s2
        let b = q.read(a.end, None, 2, &mut out).unwrap().unwrap(); // r1
        let c = q.read(b.end, None, 100, &mut out).unwrap().unwrap(); // r2 r3
        assert_eq!(out, b"s1s2r1r2r3");

        // Out of order, as a failed connection's batches come back: each exactly as handed.
        let mut again = Vec::new();
        let c2 = q
            .read(c.start, Some(c.end), usize::MAX, &mut again)
            .unwrap();
        assert_eq!((again.as_slice(), c2), (&b"r2r3"[..], Some(c)));
        again.clear();
        let a2 = q
            .read(a.start, Some(a.end), usize::MAX, &mut again)
            .unwrap();
        assert_eq!((again.as_slice(), a2), (&b"s1s2"[..], Some(a)));

        // Reading again moved no cursor: the next read goes on after `c`.
        assert_eq!(q.read(c.end, None, 100, &mut again).unwrap(), None);

        // Only whole spans handed out and not committed can be read again.
        q.commit(b.end);
        assert_eq!(ring_committed.load(Ordering::SeqCst), 8);
        let gone = q.read(a.start, Some(a.end), usize::MAX, &mut again);
        assert_eq!(gone.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let partial = q.read(c.start, Some(c.end - 1), usize::MAX, &mut again);
        assert_eq!(partial.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        again.clear();
        let c3 = q
            .read(c.start, Some(c.end), usize::MAX, &mut again)
            .unwrap();
        assert_eq!((again.as_slice(), c3), (&b"r2r3"[..], Some(c)));
    }

    #[test]
    fn commit_frees_each_tier_only_up_to_what_was_delivered() {
        let (ring, ring_committed) = tier("ring", &["a", "b"], 0);
        let (journal, journal_committed) = tier("journal", &["c"], 0);
        let mut q = IntakeQueue::new("t", vec![ring, journal]);
        let mut out = Vec::new();
        let a = q.read(0, None, 1, &mut out).unwrap().unwrap();
        let b = q.read(a.end, None, 1, &mut out).unwrap().unwrap();
        let c = q.read(b.end, None, 1, &mut out).unwrap().unwrap();
        q.commit(a.end);
        assert_eq!(ring_committed.load(Ordering::SeqCst), 8);
        assert_eq!(journal_committed.load(Ordering::SeqCst), 0);
        q.commit(c.end);
        assert_eq!(ring_committed.load(Ordering::SeqCst), 16);
        assert_eq!(journal_committed.load(Ordering::SeqCst), 8);
    }

    #[test]
    fn reads_resume_from_each_tiers_committed_position() {
        let (ring, _) = tier("ring", &["old", "new"], 8);
        let mut q = IntakeQueue::new("t", vec![ring]);
        let mut out = Vec::new();
        q.read(0, None, 100, &mut out).unwrap();
        assert_eq!(out, b"new");
    }

    #[test]
    fn a_journal_that_cannot_be_opened_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let budget_path = dir.path().join("budget");
        let budget = DiskBudget::create(&budget_path, 1 << 20, 0).unwrap();
        let mut t = JournalTier::new(&file, "journal", &budget, &JournalOptions::default());
        let mut out = Vec::new();
        assert!(t.read(1000, &mut out).unwrap().is_none());
    }
}
