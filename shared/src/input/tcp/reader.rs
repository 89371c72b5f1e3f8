//! The read loop of one TCP or TLS connection: read, frame, deliver, and the limits that
//! close a connection (partial-frame and idle timeouts, being shed by the read budget).
//!
//! A connection reads into its [`FrameDecoder`], frames everything available and hands all of
//! it to the sink in ONE `deliver` call per read. Frames the sink refuses are offered again
//! after sleeps growing from 1 ms to 50 ms, without reading further: the kernel buffers fill
//! and TCP slows the sender (back-pressure); nothing is dropped.
//!
//! Memory:
//! - reads use a window that starts at [`FREE_PER_CONNECTION`] (16 KiB), doubles up to
//!   [`MAX_WINDOW`] (64 KiB) while reads fill it and halves while they are small;
//! - the decoder's buffer is free up to 16 KiB; beyond that it is leased from the fair
//!   budget: a larger window only when the budget has room (else a read within the free
//!   16 KiB), growth for an unfinished frame larger than 16 KiB by waiting (`budget.rs`);
//! - while no frame is unfinished the connection holds no buffer: it reads through a
//!   per-thread scratch buffer and only the bytes that arrive are copied into a new buffer
//!   (exactly their size); when a read finds nothing, the lease is given back too. An idle
//!   connection holds neither.
//!
//! Limits: a frame that started and did not end within the listener's partial-frame timeout,
//! a connection silent for its idle timeout (if set), or one shed by the budget is closed
//! and its unfinished frame discarded (counted, logged rate-limited). Frames already framed
//! were delivered before. Time spent waiting for a full sink does not count against the
//! sender (we were not reading); time waiting for read budget does (it bounds how long the
//! largest holder keeps its memory).
//!
//! Sender names: the peer's lookup starts at accept (so it overlaps a TLS handshake), and
//! the connection's first delivery awaits it, bounded by the resolver's wait (a timeout is
//! counted in `resolve_timeouts`; shutdown ends it early). Only this connection waits.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Sleep;

use super::{Listener, SHUTDOWN_GRACE};
use crate::input::admission::Notice;
use crate::input::budget::{BudgetLease, FREE_PER_CONNECTION};
use crate::input::framing::{FrameDecoder, FrameSpan};
use crate::input::{shutdown_requested, InputCounters, SenderHost};

/// Largest single read.
pub(crate) const MAX_WINDOW: usize = 64 << 10;
/// First pause after the sink refused frames; doubles up to [`RETRY_MAX`].
const RETRY_START: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(50);

thread_local! {
    /// Where idle connections of this thread read their next bytes (see the module doc).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_WINDOW]);
}

/// Why the read loop ended.
enum End {
    /// End of stream, a read error, or shutdown: a partial LF frame is still a message.
    Closed,
    /// Closed by a limit: the unfinished frame is discarded.
    Limit(Notice),
}

/// One connection's reading state.
struct Connection<S> {
    stream: S,
    decoder: FrameDecoder,
    lease: BudgetLease,
    spans: Vec<FrameSpan>,
    window: usize,
    clock: FrameClock,
    /// Allocated at the first deadline, then reset (an idle connection without timeouts
    /// never has one).
    timer: Option<Pin<Box<Sleep>>>,
}

/// The read loop of one connection (plain or TLS), until close, error, shutdown or a limit.
pub(crate) async fn read_frames<S: AsyncRead + Unpin>(
    stream: S,
    peer: SocketAddr,
    shared: &Listener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut c = Connection {
        stream,
        decoder: FrameDecoder::new(),
        lease: BudgetLease::new(shared.budget.clone()),
        spans: Vec::new(),
        window: FREE_PER_CONNECTION,
        clock: FrameClock::new(),
        timer: None,
    };
    match c.run(peer, shared, &mut shutdown).await {
        End::Closed => {
            c.spans.clear();
            if c.decoder.finish(&mut c.spans) {
                InputCounters::add(&shared.counters.partial_discarded, 1);
                tracing::debug!(peer = %peer, "connection closed inside an octet-counted frame; discarded");
            }
            Box::pin(deliver(&c.decoder, &c.spans, peer, shared, &shutdown)).await;
        }
        End::Limit(kind) => shared.admission.notices.record(kind, peer.ip()),
    }
}

impl<S: AsyncRead + Unpin> Connection<S> {
    async fn run(
        &mut self,
        peer: SocketAddr,
        shared: &Listener,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        loop {
            // Checked here too: a sender whose data is always ready never reaches a wait.
            if let Some(end) = self.limit_reached(shared) {
                return end;
            }
            let want = match self.room_to_read(shared, shutdown).await {
                Ok(want) => want,
                Err(end) => return end,
            };
            let read = match self.read(want, shared, shutdown).await {
                Ok(read) => read,
                Err(end) => return end,
            };
            match read {
                Ok(0) => return End::Closed,
                Ok(n) => {
                    InputCounters::add(&shared.counters.bytes_received, n as u64);
                    self.window = next_window(self.window, n, want);
                }
                // A TLS peer that closes without close_notify: an ordinary close for syslog.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return End::Closed,
                Err(e) => {
                    InputCounters::add(&shared.counters.read_errors, 1);
                    tracing::debug!(peer = %peer, error = %e, "read failed, closing connection");
                    return End::Closed;
                }
            }
            self.spans.clear();
            self.decoder.decode(&mut self.spans);
            let now = Instant::now();
            self.clock.after_decode(&self.decoder, now);
            Box::pin(deliver(&self.decoder, &self.spans, peer, shared, shutdown)).await;
            // Time spent waiting for the sink (back-pressure) is ours, not the sender's.
            self.clock.pause(now.elapsed());
            self.decoder.compact();
            let keep = self.window.max(self.decoder.pending());
            if self.decoder.allocated() > 2 * keep {
                self.decoder.shrink_to(keep);
            }
            self.lease.shrink_to(self.leased_part());
        }
    }

    /// A limit that closes the connection now: shed by the budget, or a deadline passed.
    fn limit_reached(&self, shared: &Listener) -> Option<End> {
        if self.lease.is_shed() {
            return Some(End::Limit(Notice::BudgetShed));
        }
        let deadline = self.clock.deadline(shared)?;
        (Instant::now() >= deadline).then(|| End::Limit(self.clock.expired(shared)))
    }

    /// The part of the decoder's buffer beyond the free allowance.
    fn leased_part(&self) -> usize {
        self.decoder.allocated().saturating_sub(FREE_PER_CONNECTION)
    }

    /// How much to read next, after leasing what the read needs. A read within the free
    /// allowance never waits; only an unfinished frame of 16 KiB or more waits for budget.
    async fn room_to_read(
        &mut self,
        shared: &Listener,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<usize, End> {
        let leased_for = |d: &FrameDecoder, want: usize| {
            d.allocation_for(want).saturating_sub(FREE_PER_CONNECTION)
        };
        let want = self.window.min(self.decoder.room());
        if self.lease.try_grow_to(leased_for(&self.decoder, want)) {
            return Ok(want);
        }
        self.window = FREE_PER_CONNECTION;
        let free_room = FREE_PER_CONNECTION.saturating_sub(self.decoder.pending());
        if free_room > 0 && leased_for(&self.decoder, free_room) <= self.lease.held() {
            return Ok(free_room);
        }
        let want = FREE_PER_CONNECTION.min(self.decoder.room());
        let needed = leased_for(&self.decoder, want);
        let deadline = self.clock.deadline(shared);
        let (lease, timer) = (&mut self.lease, &mut self.timer);
        tokio::select! {
            biased;
            _ = shutdown_requested(shutdown) => Err(End::Closed),
            _ = until(timer, deadline) => Err(End::Limit(self.clock.expired(shared))),
            // Boxed: only a connection waiting for budget needs this future's room.
            grown = Box::pin(lease.grow_to(needed)) => match grown {
                Ok(()) => Ok(want),
                Err(_shed) => Err(End::Limit(Notice::BudgetShed)),
            },
        }
    }

    /// Reads up to `want` bytes: at once when some are waiting; otherwise, with nothing
    /// unfinished, gives the buffer back and waits through the scratch buffer.
    async fn read(
        &mut self,
        want: usize,
        shared: &Listener,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<std::io::Result<usize>, End> {
        // Nothing unfinished: read through the scratch buffer, so that a read finding
        // nothing costs no allocation and a read finding some allocates just what came
        // (cheaper than re-growing and zeroing a buffer between small reads).
        self.decoder.release();
        let (stream, decoder) = (&mut self.stream, &mut self.decoder);
        let ready = tokio::select! {
            biased;
            read = read_into(stream, decoder, want) => Some(read),
            _ = std::future::ready(()) => None,
        };
        if let Some(read) = ready {
            return Ok(read);
        }
        if self.decoder.pending() == 0 {
            self.lease.shrink_to(0);
            self.spans = Vec::new();
            self.window = FREE_PER_CONNECTION;
        }
        let want = want.min(self.window.max(FREE_PER_CONNECTION));
        let deadline = self.clock.deadline(shared);
        let (stream, decoder) = (&mut self.stream, &mut self.decoder);
        let (lease, timer) = (&self.lease, &mut self.timer);
        tokio::select! {
            biased;
            _ = shutdown_requested(shutdown) => Err(End::Closed),
            _ = lease.shed() => Err(End::Limit(Notice::BudgetShed)),
            _ = until(timer, deadline) => Err(End::Limit(self.clock.expired(shared))),
            read = read_into(stream, decoder, want) => Ok(read),
        }
    }
}

/// Reads into the decoder's buffer, or through the scratch buffer when it has none.
async fn read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    decoder: &mut FrameDecoder,
    want: usize,
) -> std::io::Result<usize> {
    if decoder.allocated() > 0 {
        let n = stream.read(decoder.read_space(want)).await?;
        decoder.commit_read(n);
        return Ok(n);
    }
    // Poll with the scratch buffer borrowed only during each poll: a pending read has
    // written nothing into it, so the next poll may use it again (AsyncRead's contract).
    std::future::poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            let len = want.min(scratch.len());
            let mut buf = ReadBuf::new(&mut scratch[..len]);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    decoder.feed(buf.filled());
                    Poll::Ready(Ok(buf.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}

/// Sleeps until `deadline` on the connection's one timer; never returns without a deadline.
async fn until(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Option<Instant>) {
    let Some(deadline) = deadline else {
        return std::future::pending().await;
    };
    let deadline = tokio::time::Instant::from_std(deadline);
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() != deadline {
        sleep.as_mut().reset(deadline);
    }
    sleep.as_mut().await;
}

/// When the unfinished frame started and when the last byte came (for the timeouts).
struct FrameClock {
    partial_since: Option<Instant>,
    completed_seen: u64,
    last_read: Instant,
}

impl FrameClock {
    fn new() -> Self {
        Self {
            partial_since: None,
            completed_seen: 0,
            last_read: Instant::now(),
        }
    }

    /// A frame that ended restarts the partial-frame clock for the next one.
    fn after_decode(&mut self, decoder: &FrameDecoder, now: Instant) {
        self.last_read = now;
        let ended = decoder.completed() != self.completed_seen;
        self.completed_seen = decoder.completed();
        self.partial_since = match (decoder.mid_frame(), self.partial_since) {
            (false, _) => None,
            (true, Some(since)) if !ended => Some(since),
            (true, _) => Some(now),
        };
    }

    /// Moves both clocks forward by `d`, a time during which we did not read.
    fn pause(&mut self, d: Duration) {
        if d >= Duration::from_millis(1) {
            self.last_read += d;
            self.partial_since = self.partial_since.map(|t| t + d);
        }
    }

    fn deadline(&self, shared: &Listener) -> Option<Instant> {
        let partial = self.partial_since.map(|t| t + shared.partial_frame_timeout);
        let idle = shared.idle_timeout.map(|t| self.last_read + t);
        match (partial, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Which limit a deadline that passed was.
    fn expired(&self, shared: &Listener) -> Notice {
        let partial = self.partial_since.map(|t| t + shared.partial_frame_timeout);
        match partial {
            Some(at) if at <= Instant::now() => Notice::PartialFrameTimeout,
            _ => Notice::IdleTimeout,
        }
    }
}

/// Offers `spans` to the sink until all are accepted (or the shutdown grace ran out).
async fn deliver(
    decoder: &FrameDecoder,
    spans: &[FrameSpan],
    peer: SocketAddr,
    shared: &Listener,
    shutdown: &watch::Receiver<bool>,
) {
    if spans.is_empty() {
        return;
    }
    let counters = &shared.counters;
    InputCounters::add(&counters.received, spans.len() as u64);
    let truncated = spans.iter().filter(|s| s.truncated).count();
    InputCounters::add(&counters.truncated, truncated as u64);
    let frames: Vec<_> = spans.iter().map(|s| decoder.frame(s)).collect();
    let host = sender_host(shared, peer, shutdown).await;
    let mut done = 0;
    let mut pause = RETRY_START;
    let mut give_up_at: Option<Instant> = None;
    loop {
        let rest = &frames[done..];
        let accepted = shared.sink.deliver(peer, &host, rest).min(rest.len());
        done += accepted;
        if done == frames.len() {
            return;
        }
        if accepted > 0 {
            pause = RETRY_START;
        }
        if *shutdown.borrow() {
            let deadline = *give_up_at.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
            if Instant::now() >= deadline {
                let lost = frames.len() - done;
                InputCounters::add(&counters.dropped_full, lost as u64);
                tracing::warn!(peer = %peer, lost, "queue still full at shutdown; messages dropped");
                return;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// The host to show for `peer`: at once when known; for a new sender, after its first
/// lookup (bounded by the resolver's wait; a timeout is counted and gives the IP). Shutdown
/// ends the wait early with what is known then.
async fn sender_host(
    shared: &Listener,
    peer: SocketAddr,
    shutdown: &watch::Receiver<bool>,
) -> Arc<str> {
    let first = match shared.names.host_or_wait(peer.ip()) {
        SenderHost::Known(host) => return host,
        SenderHost::Pending(first) => first,
    };
    let mut stop = shutdown.clone();
    tokio::select! {
        waited = first.wait() => {
            if waited.timed_out {
                InputCounters::add(&shared.counters.resolve_timeouts, 1);
            }
            waited.host
        }
        _ = shutdown_requested(&mut stop) => shared.names.host_for(peer.ip()),
    }
}

/// Grows the read window while reads fill it, shrinks it while they are small.
pub(crate) fn next_window(window: usize, got: usize, asked: usize) -> usize {
    if got == asked && window < MAX_WINDOW {
        window * 2
    } else if got < window / 4 && window > FREE_PER_CONNECTION {
        window / 2
    } else {
        window
    }
}
