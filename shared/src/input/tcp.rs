//! TCP listener: the accept loop, shared with TLS, and what every connection of one listener
//! shares ([`Listener`]); the per-connection read loop is in `tcp/reader.rs`.
//!
//! One task per connection, so a slow, stalled or hostile client only ever delays itself.
//! Each accepted connection first passes the intake's [`Admission`] (allow-list, connections
//! per intake and per source address), before a byte is read from it or a TLS handshake
//! starts; a refused one is closed at once, counted and logged (rate-limited). With
//! `proxy_protocol`, the connection's PROXY header comes next, in its own task
//! (`proxy_protocol.rs`): the sender it names replaces the peer for everything after it.
//!
//! Memory (docs/hostile-networks.md): an idle connection holds no read buffer; a reading one
//! holds up to `FREE_PER_CONNECTION` (16 KiB) for free and leases anything larger from the
//! listener's fair [`ReadBudget`] (see `budget.rs`). No idle timeout unless the intake sets
//! one: idle senders stay connected (TCP keepalive, 2 min idle then 4 probes 30 s apart,
//! notices dead peers).
//!
//! Shutdown (watch channel `true`): stop accepting and reading, deliver what was already
//! framed plus a partial LF frame (as at close), then return. Frames the sink still refuses
//! after [`SHUTDOWN_GRACE`] are counted in `dropped_full` and logged.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::admission::{Admission, Admitted};
use super::budget::ReadBudget;
use super::tls::Handshakes;
use super::{shutdown_requested, InputCounters, InputError, MessageSink, Resolver};
use crate::config::IntakeLimits;
use crate::log_limit::SUMMARY_EVERY;

mod reader;

pub(crate) use reader::read_frames;
#[cfg(test)]
pub(crate) use reader::{next_window, MAX_WINDOW};

/// How long refused frames are still offered once shutdown was requested.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after accept fails for lack of resources (file descriptors, memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How a TCP/TLS listener bounds its connections: the intake's limits and its read budget.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    pub limits: IntakeLimits,
    pub budget: Arc<ReadBudget>,
}

impl ListenerOptions {
    /// The intake's limits, with a read budget of `limits.read_buffer_budget`.
    pub fn new(limits: IntakeLimits) -> Self {
        let cap = usize::try_from(limits.read_buffer_budget).unwrap_or(usize::MAX);
        let budget = ReadBudget::new(cap);
        Self { limits, budget }
    }

    /// The same limits with another read budget (tests watch its use).
    pub fn with_budget(mut self, budget: Arc<ReadBudget>) -> Self {
        self.budget = budget;
        self
    }
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self::new(IntakeLimits::default())
    }
}

/// What every connection of one listener shares.
pub(crate) struct Listener {
    pub sink: Arc<dyn MessageSink>,
    pub names: Arc<Resolver>,
    pub counters: Arc<InputCounters>,
    pub budget: Arc<ReadBudget>,
    pub admission: Arc<Admission>,
    pub partial_frame_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    /// Every connection starts with a PROXY protocol header (`proxy_protocol.rs`).
    pub proxy_protocol: bool,
}

impl Listener {
    pub fn new(
        sink: Arc<dyn MessageSink>,
        names: Arc<Resolver>,
        counters: Arc<InputCounters>,
        options: ListenerOptions,
    ) -> Arc<Self> {
        let limits = &options.limits;
        Arc::new(Self {
            admission: Arc::new(Admission::new(limits, counters.clone())),
            partial_frame_timeout: Duration::from_secs(limits.partial_frame_timeout_secs),
            idle_timeout: limits.idle_timeout_secs.map(Duration::from_secs),
            proxy_protocol: limits.proxy_protocol,
            sink,
            names,
            counters,
            budget: options.budget,
        })
    }
}

/// Serves plain TCP syslog on the inherited listening socket until shutdown, with the
/// default limits.
pub async fn serve_tcp(
    l: std::net::TcpListener,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), InputError> {
    serve_tcp_with(l, sink, names, c, shutdown, ListenerOptions::default()).await
}

/// [`serve_tcp`] with the intake's limits.
pub async fn serve_tcp_with(
    l: std::net::TcpListener,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    shutdown: watch::Receiver<bool>,
    options: ListenerOptions,
) -> Result<(), InputError> {
    let listener = Listener::new(sink, names, c, options);
    accept_loop(l, None, listener, shutdown).await
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
    let mut quiet_check = tokio::time::interval(SUMMARY_EVERY);
    loop {
        tokio::select! {
            _ = shutdown_requested(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Refused: dropping the stream closes it before any byte is read.
                    let Some(place) = shared.admission.admit(peer.ip()) else { continue };
                    let open = OpenConnection::new(shared.counters.clone());
                    if !shared.proxy_protocol {
                        shared.names.prefetch(peer.ip());
                    }
                    set_keepalive(&stream, peer);
                    let held = (open, place);
                    spawn_connection(&mut connections, stream, peer, tls.as_ref(), &shared, held, shutdown.clone());
                }
                Err(e) if is_resource_exhaustion(&e) => {
                    tracing::warn!(error = %e, "accept failed, pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => log_panic(done),
            _ = quiet_check.tick() => shared.admission.notices.tick(),
        }
    }
    drop(listener);
    while let Some(done) = connections.join_next().await {
        log_panic(done);
    }
    Ok(())
}

/// Starts the task of one admitted connection: plain or TLS, each its own task type, so a
/// plain connection's task does not carry room for a TLS stream (docs/hostile-networks.md).
fn spawn_connection(
    connections: &mut JoinSet<()>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<&Arc<Handshakes>>,
    shared: &Arc<Listener>,
    held: (OpenConnection, Admitted),
    shutdown: watch::Receiver<bool>,
) {
    let shared = shared.clone();
    let (mut stream, mut shutdown) = (stream, shutdown);
    match tls {
        None => connections.spawn(async move {
            let (open, mut place) = held;
            let sender = sender_of(&mut stream, peer, &shared, &mut place, &mut shutdown);
            if let Some(sender) = sender.await {
                read_frames(stream, sender, &shared, shutdown).await;
            }
            drop((open, place));
        }),
        Some(acceptor) => {
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                let (open, mut place) = held;
                let sender = sender_of(&mut stream, peer, &shared, &mut place, &mut shutdown);
                let Some(sender) = sender.await else { return };
                let handshake =
                    super::tls::handshake(&acceptor, stream, sender, &shared, &mut shutdown);
                if let Some(stream) = handshake.await {
                    read_frames(stream, sender, &shared, shutdown).await;
                }
                drop((open, place));
            })
        }
    };
}

/// Who the connection's events are from: its peer, or with `proxy_protocol` the sender its
/// PROXY header names (read first, before any TLS handshake). `None`: closed (refused,
/// counted and logged; or shutdown).
async fn sender_of(
    stream: &mut tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    shared: &Listener,
    place: &mut Admitted,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<std::net::SocketAddr> {
    if !shared.proxy_protocol {
        return Some(peer);
    }
    // Boxed: only connections of a proxy_protocol intake carry the header's state.
    Box::pin(super::proxy_protocol::sender(
        stream, peer, shared, place, shutdown,
    ))
    .await
}

fn set_keepalive(stream: &tokio::net::TcpStream, peer: std::net::SocketAddr) {
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
