//! TCP listener: the accept loop and the per-connection read loop (shared with TLS).
//!
//! One task per connection, so a slow, stalled or hostile client only ever delays itself.
//! A connection reads into its [`FrameDecoder`], frames everything available and hands all of
//! it to the sink in ONE `deliver` call per read. Frames the sink refuses are offered again
//! after sleeps growing from 1 ms to 50 ms, without reading further: the kernel buffers fill
//! and TCP slows the sender (back-pressure); nothing is dropped.
//!
//! Memory: a connection reads with a window that starts at [`BASE_WINDOW`] (4 KiB), doubles
//! up to [`MAX_WINDOW`] (64 KiB) while reads fill it and halves while they are small, and
//! gives back buffer memory after a large message. Only the base window is free; anything
//! above it is leased from the listener's [`ReadBudget`]: when the budget is tight a
//! connection falls back to base-sized reads, and one whose buffer is full of an unfinished
//! message waits for budget (see `budget.rs`). An idle connection therefore holds a few
//! KiB, never a 256 KB buffer. No idle timeout: idle senders stay connected (TCP keepalive,
//! 2 min idle then 4 probes 30 s apart, notices dead peers).
//!
//! Sender names: the peer's lookup starts at accept (so it overlaps a TLS handshake), and
//! the connection's first delivery awaits it, bounded by the resolver's wait (a timeout is
//! counted in `resolve_timeouts`; shutdown ends it early). Only this connection waits; the
//! others go on.
//!
//! Shutdown (watch channel `true`): stop accepting and reading, deliver what was already
//! framed plus a partial LF frame (as at close), then return. Frames the sink still refuses
//! after [`SHUTDOWN_GRACE`] are counted in `dropped_full` and logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::budget::{BudgetLease, ReadBudget, DEFAULT_READ_BUDGET};
use super::framing::{FrameDecoder, FrameSpan};
use super::tls::Handshakes;
use super::{shutdown_requested, InputCounters, InputError, MessageSink, Resolver, SenderHost};

/// Read window every connection has without a budget lease.
pub(crate) const BASE_WINDOW: usize = 4 << 10;
/// Largest single read.
pub(crate) const MAX_WINDOW: usize = 64 << 10;
/// First pause after the sink refused frames; doubles up to [`RETRY_MAX`].
const RETRY_START: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(50);
/// How long refused frames are still offered once shutdown was requested.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after accept fails for lack of resources (file descriptors, memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every connection of one listener shares.
pub(crate) struct Listener {
    pub sink: Arc<dyn MessageSink>,
    pub names: Arc<Resolver>,
    pub counters: Arc<InputCounters>,
    pub budget: Arc<ReadBudget>,
}

/// Serves plain TCP syslog on the inherited listening socket until shutdown.
pub async fn serve_tcp(
    l: std::net::TcpListener,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), InputError> {
    let budget = ReadBudget::new(DEFAULT_READ_BUDGET);
    serve_tcp_with_budget(l, sink, names, c, shutdown, budget).await
}

/// [`serve_tcp`] with an explicit read-buffer budget.
pub async fn serve_tcp_with_budget(
    l: std::net::TcpListener,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    shutdown: watch::Receiver<bool>,
    budget: Arc<ReadBudget>,
) -> Result<(), InputError> {
    let listener = Listener {
        sink,
        names,
        counters: c,
        budget,
    };
    accept_loop(l, None, Arc::new(listener), shutdown).await
}

/// Accepts connections (TLS ones when `tls` is set) until shutdown, then waits for every
/// connection task to finish its last delivery.
pub(crate) async fn accept_loop(
    l: std::net::TcpListener,
    tls: Option<Arc<Handshakes>>,
    shared: Arc<Listener>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), InputError> {
    let adopt = |source| InputError::AdoptSocket {
        kind: "TCP listening",
        source,
    };
    l.set_nonblocking(true).map_err(adopt)?;
    let listener = tokio::net::TcpListener::from_std(l).map_err(adopt)?;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown_requested(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let open = OpenConnection::new(shared.counters.clone());
                    shared.names.prefetch(peer.ip());
                    set_keepalive(&stream, peer);
                    let task = connection(stream, peer, tls.clone(), shared.clone(), shutdown.clone());
                    connections.spawn(async move {
                        task.await;
                        drop(open);
                    });
                }
                Err(e) if is_resource_exhaustion(&e) => {
                    tracing::warn!(error = %e, "accept failed, pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => log_panic(done),
        }
    }
    drop(listener);
    while let Some(done) = connections.join_next().await {
        log_panic(done);
    }
    Ok(())
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<Handshakes>>,
    shared: Arc<Listener>,
    mut shutdown: watch::Receiver<bool>,
) {
    match tls {
        None => read_frames(stream, peer, &shared, shutdown).await,
        Some(tls) => {
            let handshake = super::tls::handshake(&tls, stream, peer, &shared, &mut shutdown);
            if let Some(stream) = handshake.await {
                read_frames(stream, peer, &shared, shutdown).await;
            }
        }
    }
}

/// The read loop of one connection (plain or TLS), until close, error or shutdown.
pub(crate) async fn read_frames<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    shared: &Listener,
    mut shutdown: watch::Receiver<bool>,
) {
    let counters = &shared.counters;
    let mut decoder = FrameDecoder::new();
    let mut lease = BudgetLease::new(shared.budget.clone());
    let mut spans = Vec::new();
    let mut window = BASE_WINDOW;
    loop {
        let mut want = window.min(decoder.room());
        let mut needed = decoder.allocation_for(want).saturating_sub(BASE_WINDOW);
        if !lease.try_grow_to(needed) {
            // Budget tight: a base-sized read is all that progress needs; wait only for that.
            window = BASE_WINDOW;
            want = window.min(decoder.room());
            needed = decoder.allocation_for(want).saturating_sub(BASE_WINDOW);
        }
        if needed > lease.held() {
            tokio::select! {
                biased;
                _ = shutdown_requested(&mut shutdown) => break,
                _ = lease.grow_to(needed) => {}
            }
        }
        let read = tokio::select! {
            biased;
            _ = shutdown_requested(&mut shutdown) => break,
            read = stream.read(decoder.read_space(want)) => read,
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                decoder.commit_read(n);
                InputCounters::add(&counters.bytes_received, n as u64);
                window = next_window(window, n, want);
            }
            // A TLS peer that closes without close_notify: an ordinary close for syslog.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                InputCounters::add(&counters.read_errors, 1);
                tracing::debug!(peer = %peer, error = %e, "read failed, closing connection");
                break;
            }
        }
        spans.clear();
        decoder.decode(&mut spans);
        deliver(&decoder, &spans, peer, shared, &shutdown).await;
        decoder.compact();
        let keep = window.max(decoder.pending());
        if decoder.allocated() > 2 * keep {
            decoder.shrink_to(keep);
        }
        lease.shrink_to(decoder.allocated().saturating_sub(BASE_WINDOW));
    }
    spans.clear();
    if decoder.finish(&mut spans) {
        InputCounters::add(&counters.partial_discarded, 1);
        tracing::debug!(peer = %peer, "connection closed inside an octet-counted frame; discarded");
    }
    deliver(&decoder, &spans, peer, shared, &shutdown).await;
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
fn next_window(window: usize, got: usize, asked: usize) -> usize {
    if got == asked && window < MAX_WINDOW {
        window * 2
    } else if got < window / 4 && window > BASE_WINDOW {
        window / 2
    } else {
        window
    }
}

fn set_keepalive(stream: &tokio::net::TcpStream, peer: SocketAddr) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(120))
        .with_interval(Duration::from_secs(30))
        .with_retries(4);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(peer = %peer, error = %e, "cannot enable TCP keepalive");
    }
}

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "connection task failed");
    }
}

/// Keeps `connections_open` right however the connection task ends.
struct OpenConnection(Arc<InputCounters>);

impl OpenConnection {
    fn new(counters: Arc<InputCounters>) -> Self {
        InputCounters::add(&counters.connections_total, 1);
        InputCounters::add(&counters.connections_open, 1);
        Self(counters)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
