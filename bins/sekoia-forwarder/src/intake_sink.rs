//! Where an ingest worker puts events: rendered once, then handed to the intake's queue
//! (`queue::intake::IntakeWriter`, which owns the spill rule between ring and journal).
//!
//! Each read's frames are rendered into a per-thread batch outside any lock (so the uplink
//! only moves bytes), then pushed under one lock with one ring publish per batch.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use sekoia_shared::config::Intake;
use sekoia_shared::input::{Frame, MessageSink};
use sekoia_shared::queue::intake::{IntakeWriter, Push, QueueSnapshot};
use sekoia_shared::queue::{RecordMeta, FLAG_TRUNCATED};
use sekoia_shared::syslog::{render_event, EventContext, LocalClock};

pub struct IntakeSink {
    intake: Intake,
    queue: Mutex<IntakeWriter>,
}

impl IntakeSink {
    pub fn new(intake: Intake, queue: IntakeWriter) -> Self {
        Self {
            intake,
            queue: Mutex::new(queue),
        }
    }

    fn lock(&self) -> MutexGuard<'_, IntakeWriter> {
        match self.queue.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Batch fsync of the journal when it is due, or another try at opening it (called
    /// periodically).
    pub fn sync_if_due(&self) {
        self.lock().sync_if_due();
    }

    /// What the queue took and holds now (reported to the supervisor every second).
    pub fn queue_snapshot(&self) -> QueueSnapshot {
        self.lock().snapshot()
    }

    /// Writes out and fsyncs what the journal buffers (at stop).
    pub fn close(&self) {
        self.lock().close();
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
    /// Pushes the batch's events in order; stops at the first one no tier can take.
    fn push(
        &self,
        batch: &[u8],
        spans: &[(Range<usize>, Range<usize>, bool)],
        now_us: i64,
    ) -> usize {
        let mut q = self.lock();
        let mut accepted = 0;
        for (wire, _, truncated) in spans {
            let meta = RecordMeta {
                intake_id: self.intake.id,
                recv_time_us: now_us,
                flags: if *truncated { FLAG_TRUNCATED } else { 0 },
            };
            if q.push(&meta, &batch[wire.clone()]) == Push::HeldBack {
                break;
            }
            accepted += 1;
        }
        q.end_batch();
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
