//! The dispatcher: owns the sources, decides what is sent next and what may be committed.
//!
//! It runs on a dedicated std thread because sources are synchronous (a `read` is a memcpy) and
//! [`Wakeup::wait`] may block on a futex; tokio workers never run it. Each loop:
//! 1. absorb outcomes from the connections: mark confirmed batches, commit per source the
//!    contiguous confirmed prefix (so commits stay in position order even when connections
//!    confirm out of order), queue failed batches for re-sending;
//! 2. fill the work channel: re-sends first, then one batch of at most `quantum_bytes` per source
//!    per round-robin turn (deficit-free round robin: a noisy source gets one quantum per round,
//!    like everyone else);
//! 3. if nothing moved, sleep on the wakeup (sources ring it on new data, connections after
//!    taking or finishing a batch; `idle_wait` bounds a lost wakeup), then `linger` so that
//!    what trickles in meanwhile leaves as one batch.
//!
//! Invariant: for every source, `outstanding` lists, in position order, every span read but not
//! committed; `commit(p)` is only called with the end of a confirmed span whose predecessors are
//! all confirmed. On shutdown it keeps going until everything read is confirmed and every source
//! is empty, or `drain_timeout` elapsed, or no connection is up after attempts failed (nothing
//! could be delivered);
//! then it closes the channel, tells connections to stop, and keeps committing what they still
//! confirm until the last one is gone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::uplink::{BatchSource, ReadSpan, UplinkConfig, UplinkCounters, Wakeup};

/// Bytes of one source, on their way to the intake.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Index of the source in the dispatcher's list.
    pub source: usize,
    pub span: ReadSpan,
    /// Concatenated octet-counted lines, written as is. Emptied once written (the buffer goes
    /// back to the dispatcher): the span is still in its source until committed, so a batch
    /// that must be re-sent is read again from there.
    pub data: Vec<u8>,
    /// Length of `data` when it was read.
    pub len: usize,
}

impl Batch {
    /// Its bytes were given back after the write; a re-send reads them again.
    pub(crate) fn is_spent(&self) -> bool {
        self.data.is_empty() && self.len > 0
    }
}

/// What a connection reports back about batches it took.
#[derive(Debug)]
pub(crate) enum Outcome {
    Confirmed(Batch),
    /// Unconfirmed when the connection failed, oldest first.
    Failed(Vec<Batch>),
    /// A written batch's buffer, for reuse.
    Spent(Vec<u8>),
}

/// How long a source whose read failed is left alone.
const SOURCE_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Spare batch buffers kept for reuse.
const SPARE_BUFFERS: usize = 16;

struct SourceState {
    source: Box<dyn BatchSource>,
    read_pos: u64,
    outstanding: VecDeque<Outstanding>,
    /// The last read found nothing.
    empty: bool,
    paused_until: Option<Instant>,
}

struct Outstanding {
    start: u64,
    end: u64,
    confirmed: bool,
}

pub(crate) struct Dispatcher {
    sources: Vec<SourceState>,
    work: async_channel::Sender<Batch>,
    outcomes: Receiver<Outcome>,
    wake: Arc<dyn Wakeup>,
    counters: Arc<UplinkCounters>,
    stopping: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    resend: VecDeque<Batch>,
    spare: Vec<Vec<u8>>,
    next_source: usize,
    quantum: usize,
    drain_timeout: Duration,
    idle_wait: Duration,
    linger: Duration,
    /// The last `fill` stopped because no source had data (not because the channel was full).
    starved: bool,
    wind_down: Duration,
}

impl Dispatcher {
    /// Some connection attempt or connection has failed since the uplink started.
    fn tried_and_failed(&self) -> bool {
        let c = &self.counters;
        let failed = c.connect_failures.load(Ordering::Relaxed)
            + c.tls_failures.load(Ordering::Relaxed)
            + c.write_failures.load(Ordering::Relaxed);
        failed > 0
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: &UplinkConfig,
        sources: Vec<Box<dyn BatchSource>>,
        work: async_channel::Sender<Batch>,
        outcomes: Receiver<Outcome>,
        wake: Arc<dyn Wakeup>,
        counters: Arc<UplinkCounters>,
        stopping: Arc<AtomicBool>,
        stop: watch::Sender<bool>,
    ) -> Self {
        counters.register_sources(sources.iter().map(|s| s.name()));
        let sources = sources
            .into_iter()
            .map(|source| SourceState {
                read_pos: source.committed(),
                source,
                outstanding: VecDeque::new(),
                empty: false,
                paused_until: None,
            })
            .collect();
        Self {
            sources,
            work,
            outcomes,
            wake,
            counters,
            stopping,
            stop,
            resend: VecDeque::new(),
            spare: Vec::new(),
            next_source: 0,
            quantum: cfg.quantum_bytes,
            drain_timeout: cfg.drain_timeout,
            idle_wait: cfg.idle_wait,
            linger: cfg.linger,
            starved: false,
            // Connections finish within their own timeouts once told to stop.
            wind_down: cfg.connect_timeout + cfg.handshake_timeout + 2 * cfg.write_timeout,
        }
    }

    /// The dispatcher thread's body; returns when every connection is gone after shutdown.
    pub(crate) fn run(mut self) {
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if self.work.is_closed() {
                // Every connection task is gone (the uplink future was dropped).
                warn!("uplink connections are gone, dispatcher stops");
                return;
            }
            let mut progressed = self.absorb_outcomes();
            if self.stopping.load(Ordering::Acquire) {
                let deadline =
                    *drain_deadline.get_or_insert_with(|| Instant::now() + self.drain_timeout);
                if self.all_delivered() {
                    debug!("uplink drained");
                    break;
                }
                if Instant::now() >= deadline {
                    warn!(timeout = ?self.drain_timeout, "uplink drain timed out, the rest stays queued");
                    break;
                }
                // With no connection up after attempts failed, nothing can be delivered:
                // waiting for the timeout would only delay the save of the rings (a container
                // would be killed first). A pool that has not tried yet (a stop right after
                // the start) still gets its chance.
                if self.counters.connections_up.load(Ordering::Relaxed) == 0
                    && self.tried_and_failed()
                {
                    warn!("uplink not connected at stop: no drain, the rest stays queued");
                    break;
                }
            }
            progressed |= self.fill();
            if !progressed {
                self.sleep_until_rung();
            }
        }
        self.work.close();
        let _ = self.stop.send(true);
        let give_up = Instant::now() + self.wind_down;
        while Instant::now() < give_up {
            match self.outcomes.recv_timeout(self.idle_wait) {
                Ok(Outcome::Confirmed(batch)) => self.confirmed(batch),
                // Left uncommitted: the next start sends them again.
                Ok(Outcome::Failed(_)) | Ok(Outcome::Spent(_)) => {}
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        warn!("uplink connections did not stop in time");
    }

    /// Nothing moved: sleep until rung; then, if it was for lack of data, linger (unless
    /// stopping). At low rates every event would otherwise cost a wakeup of this thread, of a
    /// connection task and of the peer; with the linger they share one per `linger`. A busy
    /// uplink sleeps only while the channel is full (connections behind), and then does not
    /// linger: it adds no latency under load, and at most `linger` to a trickle.
    pub(crate) fn sleep_until_rung(&self) {
        let asleep = Instant::now();
        self.wake.wait(self.idle_wait);
        let rung = asleep.elapsed() < self.idle_wait;
        if rung && self.starved && !self.linger.is_zero() && !self.stopping.load(Ordering::Acquire)
        {
            std::thread::sleep(self.linger);
        }
    }

    /// Apply every outcome reported so far. True if there was any.
    pub(crate) fn absorb_outcomes(&mut self) -> bool {
        let mut any = false;
        while let Ok(outcome) = self.outcomes.try_recv() {
            any = true;
            match outcome {
                Outcome::Confirmed(batch) => self.confirmed(batch),
                Outcome::Failed(batches) => self.failed(batches),
                Outcome::Spent(buffer) => self.recycle(buffer),
            }
        }
        any
    }

    fn confirmed(&mut self, mut batch: Batch) {
        self.counters
            .events_sent
            .fetch_add(u64::from(batch.span.records), Ordering::Relaxed);
        self.counters
            .bytes_sent
            .fetch_add(batch.len as u64, Ordering::Relaxed);
        if let Some(source) = self.counters.source(batch.source) {
            source
                .events_sent
                .fetch_add(u64::from(batch.span.records), Ordering::Relaxed);
            source
                .bytes_sent
                .fetch_add(batch.len as u64, Ordering::Relaxed);
        }
        self.mark_confirmed(batch.source, batch.span.start);
        self.recycle(std::mem::take(&mut batch.data));
    }

    /// Keeps a batch buffer for the next reads (a few; the rest is freed).
    fn recycle(&mut self, mut buffer: Vec<u8>) {
        if buffer.capacity() > 0 && self.spare.len() < SPARE_BUFFERS {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    fn mark_confirmed(&mut self, source: usize, start: u64) {
        let Some(state) = self.sources.get_mut(source) else {
            return;
        };
        // `outstanding` is in position order.
        if let Ok(i) = state.outstanding.binary_search_by_key(&start, |o| o.start) {
            state.outstanding[i].confirmed = true;
        }
        let mut commit_to = None;
        while state.outstanding.front().is_some_and(|o| o.confirmed) {
            commit_to = state.outstanding.pop_front().map(|o| o.end);
        }
        if let Some(pos) = commit_to {
            state.source.commit(pos);
        }
    }

    fn failed(&mut self, batches: Vec<Batch>) {
        for batch in batches {
            self.counters
                .resent_events
                .fetch_add(u64::from(batch.span.records), Ordering::Relaxed);
            if let Some(source) = self.counters.source(batch.source) {
                source
                    .resent_events
                    .fetch_add(u64::from(batch.span.records), Ordering::Relaxed);
            }
            self.resend.push_back(batch);
        }
        // Oldest first per source when they go out again.
        self.resend
            .make_contiguous()
            .sort_by_key(|b| (b.source, b.span.start));
    }

    /// Hand out work while the channel has room. True if anything was handed out.
    pub(crate) fn fill(&mut self) -> bool {
        let mut progressed = false;
        self.starved = false;
        while !self.work.is_full() {
            let batch = match self.next_resend() {
                Some(batch) => batch,
                None => match self.next_batch() {
                    Some(batch) => batch,
                    None => {
                        self.starved = true;
                        break;
                    }
                },
            };
            progressed = true;
            match self.work.try_send(batch) {
                Ok(()) => {}
                Err(e) => {
                    // Full (a race we cannot lose: only we send) or closed: keep it.
                    self.resend.push_front(e.into_inner());
                    break;
                }
            }
        }
        progressed
    }

    /// The oldest batch to re-send whose source is not paused, its bytes read again from the
    /// source if they were given back after the write. A source that cannot give them back
    /// is paused (its batches wait, in order) and reported.
    fn next_resend(&mut self) -> Option<Batch> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.resend.len() {
            let source = self.resend[i].source;
            let paused = self
                .sources
                .get(source)
                .and_then(|s| s.paused_until)
                .is_some_and(|until| now < until);
            if paused {
                i += 1;
                continue;
            }
            let mut batch = self.resend.remove(i)?;
            if !batch.is_spent() {
                return Some(batch);
            }
            match self.read_again(&mut batch) {
                Ok(()) => return Some(batch),
                Err(e) => {
                    let state = self.sources.get_mut(source)?;
                    warn!(source = state.source.name(), position = batch.span.start, error = %e,
                          "uplink cannot read a batch again to re-send it, pausing the source");
                    self.counters.set_last_error(format_args!(
                        "re-reading {} at {}: {e}",
                        state.source.name(),
                        batch.span.start
                    ));
                    state.paused_until = Some(now + SOURCE_ERROR_PAUSE);
                    self.resend.insert(i, batch);
                    i += 1;
                }
            }
        }
        None
    }

    /// Reads a spent batch's span again from its source, exactly.
    fn read_again(&mut self, batch: &mut Batch) -> std::io::Result<()> {
        let mut data = self.spare.pop().unwrap_or_default();
        let Some(state) = self.sources.get_mut(batch.source) else {
            return Err(std::io::Error::other("source is gone"));
        };
        let span = batch.span;
        let read = state
            .source
            .read(span.start, Some(span.end), usize::MAX, &mut data);
        match read {
            Ok(Some(again)) if again.start == span.start && again.end == span.end => {
                if data.len() != batch.len {
                    return Err(std::io::Error::other(format!(
                        "span {}..{} read again as {} bytes instead of {}",
                        span.start,
                        span.end,
                        data.len(),
                        batch.len
                    )));
                }
                batch.data = data;
                Ok(())
            }
            Ok(other) => Err(std::io::Error::other(format!(
                "span {}..{} read again as {other:?}",
                span.start, span.end
            ))),
            Err(e) => Err(e),
        }
    }

    /// One round-robin turn: the next source with data gives at most one quantum.
    fn next_batch(&mut self) -> Option<Batch> {
        let n = self.sources.len();
        for _ in 0..n {
            let index = self.next_source;
            self.next_source = (index + 1) % n;
            if let Some(batch) = self.read_source(index) {
                return Some(batch);
            }
        }
        None
    }

    fn read_source(&mut self, index: usize) -> Option<Batch> {
        let mut data = self.spare.pop().unwrap_or_default();
        let state = self.sources.get_mut(index)?;
        if let Some(until) = state.paused_until {
            if Instant::now() < until {
                return None;
            }
            state.paused_until = None;
        }
        match state
            .source
            .read(state.read_pos, None, self.quantum, &mut data)
        {
            Ok(Some(span)) => {
                state.empty = false;
                state.read_pos = span.end;
                let nothing_to_send = data.is_empty();
                state.outstanding.push_back(Outstanding {
                    start: span.start,
                    end: span.end,
                    confirmed: false,
                });
                if nothing_to_send {
                    // Only skipped (corrupt) records: nothing to send, confirmed as is.
                    self.spare.push(data);
                    self.mark_confirmed(index, span.start);
                    return None;
                }
                Some(Batch {
                    source: index,
                    span,
                    len: data.len(),
                    data,
                })
            }
            Ok(None) => {
                state.empty = true;
                self.spare.push(data);
                None
            }
            Err(e) => {
                warn!(source = state.source.name(), position = state.read_pos, error = %e,
                      "uplink cannot read source, pausing it");
                self.counters.set_last_error(format_args!(
                    "reading {} at {}: {e}",
                    state.source.name(),
                    state.read_pos
                ));
                state.paused_until = Some(Instant::now() + SOURCE_ERROR_PAUSE);
                // A failed read may have appended part of a span: never reuse that.
                data.clear();
                self.spare.push(data);
                None
            }
        }
    }

    /// Every source found empty and everything read confirmed.
    pub(crate) fn all_delivered(&self) -> bool {
        self.resend.is_empty()
            && self
                .sources
                .iter()
                .all(|s| s.empty && s.outstanding.is_empty())
    }
}

#[cfg(test)]
#[path = "dispatcher_tests.rs"]
mod tests;
