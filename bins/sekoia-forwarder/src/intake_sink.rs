//! Where an ingest worker puts events: rendered once, then into the intake's shared-memory
//! ring, or, when the ring is full, into its disk journal.
//!
//! Each read's frames are rendered into a per-thread batch outside any lock (so the uplink
//! only moves bytes), then pushed under one lock with one ring publish per batch.
//!
//! The spill rule keeps the intake's order: once the ring is full, every new event goes to
//! the journal until the uplink has delivered the whole journal; only then does the ring take
//! events again. The uplink drains the ring before the journal, so it always sends the
//! oldest first. When the journal's share of `DISK_SPACE` is gone too, the sink accepts
//! fewer frames: TCP/TLS inputs stop reading (senders are slowed), UDP drops and counts.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sekoia_shared::config::Intake;
use sekoia_shared::input::{Frame, MessageSink};
use sekoia_shared::queue::{
    DiskBudget, Doorbell, JournalOptions, JournalWriter, RecordMeta, RingProducer, FLAG_TRUNCATED,
};
use sekoia_shared::syslog::{render_event, EventContext, LocalClock};
use tracing::{error, info, warn};

/// How often an unopenable journal is tried again.
const JOURNAL_RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// How often a persisting disk problem is logged again.
const DISK_ERROR_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

pub struct IntakeSink {
    intake: Intake,
    queues: Mutex<Queues>,
    /// Records the ring refused as invalid (a bug if ever non-zero): counted, never retried.
    rejected: AtomicU64,
}

struct Queues {
    ring: RingProducer,
    /// None while the journal cannot be opened (unwritable spool, bad segment): the worker
    /// keeps serving from memory and retries; a full ring then holds senders back.
    journal: Option<JournalWriter>,
    opener: JournalOpener,
    doorbell: Doorbell,
    /// True from the moment the ring was full until the journal is fully delivered.
    spilling: bool,
    last_disk_error: Option<Instant>,
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
        match opened {
            Ok(w) => Some(w),
            Err(e) => {
                error!(intake = %intake, journal = %self.dir.display(), error = %e,
                    "cannot open the disk journal; serving from memory only, retrying");
                None
            }
        }
    }
}

impl IntakeSink {
    pub fn new(
        intake: Intake,
        ring: RingProducer,
        mut opener: JournalOpener,
        doorbell: Doorbell,
    ) -> Self {
        let journal = opener.try_open(&intake.name);
        // A journal left with undelivered events by a previous run keeps the spill going:
        // new events must queue behind them.
        let spilling = journal.as_ref().is_some_and(|j| !j.is_drained());
        if spilling {
            info!(intake = %intake.name, "journal holds undelivered events; new events queue behind them on disk");
        }
        Self {
            intake,
            queues: Mutex::new(Queues {
                ring,
                journal,
                opener,
                doorbell,
                spilling,
                last_disk_error: None,
            }),
            rejected: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        match self.queues.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Batch fsync of the journal when it is due, or another try at opening it (called
    /// periodically).
    pub fn sync_if_due(&self) {
        let mut q = self.lock();
        let q = &mut *q;
        match q.journal.as_mut() {
            Some(journal) => {
                if let Err(e) = journal.sync_if_due() {
                    q.disk_error(&self.intake.name, &e);
                }
            }
            None => q.journal = q.opener.try_open(&self.intake.name),
        }
    }

    /// Writes out and fsyncs what the journal buffers (at stop).
    pub fn close(&self) {
        let mut q = self.lock();
        if let Some(journal) = q.journal.as_mut() {
            if let Err(e) = journal.sync() {
                error!(intake = %self.intake.name, error = %e, "cannot sync the journal at stop");
            }
        }
    }
}

impl Queues {
    fn disk_error(&mut self, intake: &str, e: &dyn std::fmt::Display) {
        let due = self
            .last_disk_error
            .is_none_or(|at| at.elapsed() >= DISK_ERROR_LOG_EVERY);
        if due {
            self.last_disk_error = Some(Instant::now());
            warn!(intake = %intake, error = %e, "journal write failed; holding events back until it works again");
        }
    }
}

/// Per-thread buffers: no allocation per event once warm.
struct RenderBuffers {
    clock: LocalClock,
    scratch: Vec<u8>,
    batch: Vec<u8>,
    /// For each rendered frame: its wire bytes and the output line without the length prefix.
    spans: Vec<(Range<usize>, Range<usize>, bool)>,
}

thread_local! {
    static BUFFERS: RefCell<RenderBuffers> = RefCell::new(RenderBuffers {
        clock: LocalClock::new(),
        scratch: Vec::new(),
        batch: Vec::new(),
        spans: Vec::new(),
    });
}

impl MessageSink for IntakeSink {
    fn deliver(&self, _peer: SocketAddr, host: &str, frames: &[Frame<'_>]) -> usize {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        BUFFERS.with(|cell| {
            let mut guard = cell.borrow_mut();
            let RenderBuffers {
                clock,
                scratch,
                batch,
                spans,
            } = &mut *guard;
            batch.clear();
            spans.clear();
            let ctx = EventContext {
                intake_key: &self.intake.intake_key,
                sender_host: host,
                timestamp: clock.format(now_us),
            };
            for frame in frames {
                let start = batch.len();
                let line = render_event(frame.bytes, &ctx, scratch, batch);
                spans.push((start..batch.len(), line, frame.truncated));
            }
            let accepted = self.push(batch, spans, now_us);
            if self.intake.debug {
                self.print_debug(frames, batch, &spans[..accepted]);
            }
            accepted
        })
    }
}

impl IntakeSink {
    fn push(
        &self,
        batch: &[u8],
        spans: &[(Range<usize>, Range<usize>, bool)],
        now_us: i64,
    ) -> usize {
        let mut q = self.lock();
        let q = &mut *q;
        if q.spilling && q.journal.as_ref().is_some_and(JournalWriter::is_drained) {
            q.spilling = false;
            info!(intake = %self.intake.name, "journal delivered; events go to memory again");
        }
        let mut accepted = 0;
        let mut journaled = false;
        for (wire, _, truncated) in spans {
            let meta = RecordMeta {
                intake_id: self.intake.id,
                recv_time_us: now_us,
                flags: if *truncated { FLAG_TRUNCATED } else { 0 },
            };
            let payload = &batch[wire.clone()];
            if !q.spilling {
                match q.ring.try_push(&meta, payload) {
                    Ok(true) => {
                        accepted += 1;
                        continue;
                    }
                    Ok(false) => {
                        q.spilling = true;
                        info!(intake = %self.intake.name, "memory queue full; spilling to disk");
                    }
                    Err(e) => {
                        let n = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                        error!(intake = %self.intake.name, error = %e, rejected = n,
                            "ring refused a record; it is dropped");
                        accepted += 1;
                        continue;
                    }
                }
            }
            let Some(journal) = q.journal.as_mut() else {
                // No disk tier: the rest waits with its sender (or is dropped, UDP).
                break;
            };
            match journal.append(&meta, payload) {
                Ok(true) => {
                    accepted += 1;
                    journaled = true;
                }
                // DISK_SPACE exhausted: the rest waits with its sender (or is dropped, UDP).
                Ok(false) => break,
                Err(e) => {
                    q.disk_error(&self.intake.name, &e);
                    break;
                }
            }
        }
        q.ring.publish();
        if journaled {
            if let Some(Err(e)) = q.journal.as_mut().map(JournalWriter::flush) {
                // The records stay buffered in the writer and go out with the next flush.
                q.disk_error(&self.intake.name, &e);
            }
            q.doorbell.ring();
        }
        accepted
    }

    /// `debug: true`: the reference printed `[Input "KEY"] raw` and `[Output "KEY"] line`.
    fn print_debug(
        &self,
        frames: &[Frame<'_>],
        batch: &[u8],
        spans: &[(Range<usize>, Range<usize>, bool)],
    ) {
        let key = &self.intake.intake_key;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for (frame, (_, line, _)) in frames.iter().zip(spans) {
            let _ = write!(out, "[Input \"{key}\"] ");
            let _ = out.write_all(frame.bytes);
            let _ = writeln!(out);
            let _ = write!(out, "[Output \"{key}\"] ");
            let _ = out.write_all(&batch[line.clone()]);
        }
        let _ = out.flush();
    }
}
