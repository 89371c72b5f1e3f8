//! The ingest worker's side of an intake's queue: the spill rule (see the parent module).
//!
//! [`IntakeWriter::push`] puts one rendered event into the ring or, while spilling, into the
//! journal; [`IntakeWriter::end_batch`] makes a batch visible (one ring publish, one journal
//! flush, one doorbell ring). When neither tier can take an event the answer is
//! [`Push::HeldBack`]: TCP/TLS inputs stop reading (senders are slowed), UDP drops and counts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::age::AgeMarks;
use crate::log_limit::{Repeating, Report, SUMMARY_EVERY};
use crate::queue::{DiskBudget, Doorbell, JournalOptions, JournalWriter, RecordMeta, RingProducer};

/// How often an unopenable journal is tried again.
const JOURNAL_RETRY_EVERY: Duration = Duration::from_secs(10);

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// In the ring or the journal.
    Queued,
    /// Refused by the ring as invalid (a bug if it ever happens): dropped, counted, logged.
    Rejected,
    /// No tier can take it now; the caller keeps it (TCP) or drops and counts it (UDP).
    HeldBack,
}

/// How to (re)open the intake's journal.
pub struct JournalOpener {
    dir: PathBuf,
    intake_id: u16,
    budget: DiskBudget,
    options: JournalOptions,
    last_try: Option<Instant>,
}

impl JournalOpener {
    pub fn new(dir: PathBuf, intake_id: u16, budget: DiskBudget, options: JournalOptions) -> Self {
        Self {
            dir,
            intake_id,
            budget,
            options,
            last_try: None,
        }
    }

    /// Opens the journal, at most once per `JOURNAL_RETRY_EVERY`; failures are logged with
    /// the path and the reason.
    fn try_open(&mut self, intake: &str) -> Option<JournalWriter> {
        if self
            .last_try
            .is_some_and(|at| at.elapsed() < JOURNAL_RETRY_EVERY)
        {
            return None;
        }
        self.last_try = Some(Instant::now());
        let opened = JournalWriter::open(
            &self.dir,
            self.intake_id,
            self.budget.clone(),
            self.options.clone(),
        );
        opened
            .map_err(|e| {
                error!(intake = %intake, journal = %self.dir.display(), error = %e,
                    "cannot open the disk journal; serving from memory only, retrying");
            })
            .ok()
    }
}

/// One intake's ring and journal, with the rule that keeps them in order.
pub struct IntakeWriter {
    name: String,
    ring: RingProducer,
    /// None while the journal cannot be opened (unwritable spool, bad segment): events go to
    /// the ring whenever it has room, and the journal is retried.
    journal: Option<JournalWriter>,
    opener: JournalOpener,
    doorbell: Doorbell,
    /// True from the moment the ring was full until the journal is fully delivered.
    spilling: bool,
    /// Something went to the journal since the last `end_batch`.
    journaled: bool,
    rejected: u64,
    /// The journal cannot take events (full disk, exhausted budget, failing writes): logged
    /// by the one rule for repeating conditions.
    held: Repeating,
    /// When the journal last could not take an event.
    last_held: Option<Instant>,
    /// What went where (the monitoring counters of this queue).
    counts: QueueSnapshot,
    /// Reception times by record number, per tier, for the age of the oldest event.
    ring_ages: AgeMarks,
    journal_ages: AgeMarks,
}

/// What an intake's queue took and holds, as its writer sees it: counters since the writer
/// started, and the backlog of each tier now. The monitoring objects `ruleset-<name>` (the
/// ring) and `ruleset-<name>[DA]` (the journal) are made of these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueSnapshot {
    /// Events put in the ring.
    pub ring_enqueued: u64,
    /// Times the ring was found full (the spill to the journal starts, or an event waits).
    pub ring_full: u64,
    /// Events in the ring now (published, not yet delivered), and their bytes.
    pub ring_events: u64,
    pub ring_bytes: u64,
    /// Most events seen in the ring at once.
    pub ring_max_events: u64,
    /// Events put in the journal.
    pub journal_enqueued: u64,
    /// Times no tier could take an event (the journal is full or failing): TCP/TLS senders
    /// wait, UDP datagrams are dropped (`dropped_full` of the input).
    pub journal_full: u64,
    /// Events in the journal not yet delivered, and their bytes (records and headers).
    pub journal_events: u64,
    pub journal_bytes: u64,
    /// Most events seen in the journal at once.
    pub journal_max_events: u64,
    /// How long the oldest event the queue holds has waited, in milliseconds (the ring's
    /// oldest when the ring holds any: it is older than the journal's). None when the queue
    /// is empty, or its oldest event was queued by a previous worker (its time is unknown
    /// here). Exact to 100 ms, never younger than the truth.
    #[serde(default)]
    pub oldest_age_ms: Option<u64>,
}

impl IntakeWriter {
    pub fn new(name: &str, ring: RingProducer, opener: JournalOpener, doorbell: Doorbell) -> Self {
        let mut w = Self {
            name: name.to_string(),
            ring,
            journal: None,
            opener,
            doorbell,
            spilling: false,
            journaled: false,
            rejected: 0,
            held: Repeating::default(),
            last_held: None,
            counts: QueueSnapshot::default(),
            ring_ages: AgeMarks::default(),
            journal_ages: AgeMarks::default(),
        };
        w.open_journal();
        w
    }

    /// Opens the journal; one left with undelivered events (by a previous run, or written
    /// before it became unopenable) keeps the spill going: new events queue behind them.
    fn open_journal(&mut self) {
        self.journal = self.opener.try_open(&self.name);
        if self.journal.as_ref().is_some_and(|j| !j.is_drained()) {
            self.spilling = true;
            info!(intake = %self.name, "journal holds undelivered events; new events queue behind them on disk");
        }
    }

    /// Puts one event in the tier the spill rule says.
    pub fn push(&mut self, meta: &RecordMeta, payload: &[u8]) -> Push {
        if self.spilling && self.journal.as_ref().is_some_and(JournalWriter::is_drained) {
            self.spilling = false;
            info!(intake = %self.name, "journal delivered; events go to memory again");
        }
        if !self.spilling || self.journal.is_none() {
            let seq = self.ring.next_seq();
            match self.ring.try_push(meta, payload) {
                Ok(true) => {
                    self.ring_ages.pushed(seq, meta.recv_time_us);
                    self.counts.ring_enqueued += 1;
                    self.spilling = false;
                    if self.held.is_active() {
                        self.writes_work();
                    }
                    return Push::Queued;
                }
                Ok(false) if !self.spilling => {
                    self.counts.ring_full += 1;
                    self.spilling = true;
                    info!(intake = %self.name, "memory queue full; spilling to disk");
                }
                Ok(false) => self.counts.ring_full += 1,
                Err(e) => {
                    self.rejected += 1;
                    error!(intake = %self.name, error = %e, rejected = self.rejected,
                        "ring refused a record; it is dropped");
                    return Push::Rejected;
                }
            }
        }
        self.append_to_journal(meta, payload)
    }

    fn append_to_journal(&mut self, meta: &RecordMeta, payload: &[u8]) -> Push {
        let Some(journal) = self.journal.as_mut() else {
            self.counts.journal_full += 1;
            return Push::HeldBack;
        };
        let seq = journal.next_seq();
        match journal.append(meta, payload) {
            Ok(true) => {
                self.journal_ages.pushed(seq, meta.recv_time_us);
                self.counts.journal_enqueued += 1;
                self.journaled = true;
                Push::Queued
            }
            Ok(false) => {
                self.counts.journal_full += 1;
                self.held_back(&"the disk budget in force (DISK_SPACE, or the free space of SPOOL_DIR) is exhausted");
                Push::HeldBack
            }
            Err(e) => {
                self.counts.journal_full += 1;
                self.held_back(&e);
                Push::HeldBack
            }
        }
    }

    /// The counters and each tier's backlog now (the gauges are read from the ring header
    /// and the journal's state page, so they follow the uplink's deliveries).
    pub fn snapshot(&mut self) -> QueueSnapshot {
        self.note_backlog();
        self.counts.oldest_age_ms = self.oldest_age_ms();
        self.counts
    }

    fn note_backlog(&mut self) {
        let c = &mut self.counts;
        (c.ring_events, c.ring_bytes) = self.ring.backlog();
        (c.journal_events, c.journal_bytes) =
            self.journal.as_ref().map_or((0, 0), JournalWriter::backlog);
        c.ring_max_events = c.ring_max_events.max(c.ring_events);
        c.journal_max_events = c.journal_max_events.max(c.journal_events);
    }

    /// The age of the oldest event held (see `QueueSnapshot::oldest_age_ms`).
    fn oldest_age_ms(&mut self) -> Option<u64> {
        let c = &self.counts;
        // Both are asked every time: asking forgets the marks of delivered records.
        let delivered = self.ring.next_seq().saturating_sub(c.ring_events);
        let ring = self.ring_ages.oldest(delivered, c.ring_events);
        let next = self.journal.as_ref().map_or(0, JournalWriter::next_seq);
        let delivered = next.saturating_sub(c.journal_events);
        let journal = self.journal_ages.oldest(delivered, c.journal_events);
        let oldest = if c.ring_events > 0 { ring } else { journal }?;
        let now = crate::queue::journal::unix_micros();
        Some(u64::try_from(now.saturating_sub(oldest)).unwrap_or(0) / 1000)
    }

    /// Makes what was pushed visible to the uplink and wakes it.
    pub fn end_batch(&mut self) {
        self.ring.publish();
        self.note_backlog();
        let buffered = self
            .journal
            .as_ref()
            .is_some_and(|j| j.buffered_bytes() > 0);
        if std::mem::take(&mut self.journaled) || buffered {
            match self.journal.as_mut().map(JournalWriter::flush) {
                // The records stay buffered in the writer and go out with the next flush.
                Some(Err(e)) => self.held_back(&e),
                _ => self.writes_work(),
            }
            self.doorbell.ring();
        }
    }

    /// Batch fsync of the journal when it is due, or another try at opening it (call
    /// periodically).
    pub fn sync_if_due(&mut self) {
        match self.journal.as_mut() {
            Some(journal) => match journal.sync_if_due() {
                Err(e) => self.held_back(&e),
                Ok(()) if self.held.is_active() => self.writes_work(),
                Ok(()) => {}
            },
            None => self.open_journal(),
        }
    }

    /// Writes out and fsyncs what the journal buffers (at stop).
    pub fn close(&mut self) {
        if let Some(Err(e)) = self.journal.as_mut().map(JournalWriter::sync) {
            error!(intake = %self.name, error = %e, "cannot sync the journal at stop");
        }
    }

    /// Records the ring refused as invalid so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The journal could not take or write events: a start line, then a counted summary at
    /// most every 10 s (`log_limit`).
    fn held_back(&mut self, why: &dyn std::fmt::Display) {
        let now = Instant::now();
        self.last_held = Some(now);
        match self.held.occurred(now) {
            Some(Report::Started) => warn!(intake = %self.name, reason = %why,
                "journal cannot take events; holding them back (TCP/TLS senders wait, UDP drops and counts) until it works again"),
            Some(Report::Ongoing {
                count,
                total,
                lasted,
            }) => warn!(intake = %self.name,
                reason = %why, count, total, lasted_s = lasted.as_secs(),
                "journal still cannot take events; holding them back"),
            _ => {}
        }
    }

    /// A journal write went through: ends the held-back condition once nothing was held back
    /// for a summary interval (a disk that frees room segment by segment holds back, then
    /// takes, then holds back again: one condition, not a start and an end line each time).
    fn writes_work(&mut self) {
        let quiet = self
            .last_held
            .is_none_or(|at| at.elapsed() >= SUMMARY_EVERY);
        if !quiet {
            return;
        }
        if let Some(Report::Ended { total, lasted }) = self.held.cleared(Instant::now()) {
            info!(intake = %self.name, occurrences = total, lasted_s = lasted.as_secs(),
                "journal takes events again");
        }
    }
}
