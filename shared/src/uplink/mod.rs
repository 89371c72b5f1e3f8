//! Uplink: moves rendered, octet-counted output lines from the per-intake queues to the Sekoia
//! intake over a pool of TLS connections. It only moves bytes; it never parses or re-frames them.
//!
//! ```text
//!  BatchSource 0 ┐                         ┌─> connection 0 (tokio task) ─ TLS ─┐
//!  BatchSource 1 ├─ dispatcher (std thread)┤        ...                         ├─> intake:10514
//!  BatchSource n ┘   round-robin, quantum  └─> connection k-1                   ┘
//!        ^                 |  ^                    |
//!        └── commit ───────┘  └──── Confirmed / Failed batches ──┘
//! ```
//!
//! * `dispatcher` owns the sources. It reads them round-robin, at most `quantum_bytes` per
//!   source per turn (one noisy intake cannot starve another), hands batches to whichever
//!   connection is free (an MPMC channel), and commits per source only the contiguous prefix of
//!   confirmed batches. Failed batches are re-sent before any new data.
//! * `connection` runs one TLS connection: resolve + connect, handshake, write, watch the peer,
//!   reconnect with `backoff` (exponential, full jitter).
//! * `delivery` decides when written bytes are *surely received* (peer TCP ack + grace window).
//! * `relp_session` replaces the session of a connection when the destination's output is
//!   RELP: each event is a `syslog` command and is received once the server answered it
//!   (`crate::relp`); the pool, fairness, queue and re-send rules are the same.
//! * `tls` builds the rustls client configuration (system roots + optional CA file).
//!
//! Invariants: a source position is committed only after every byte before it was confirmed
//! received; anything unconfirmed when a connection fails is re-sent (duplicates are possible and
//! counted in `resent_events`, loss is not). The dispatcher thread is the only caller of
//! [`Wakeup::wait`], which may block; tokio workers never block.
//!
//! The other side: the uplink worker binary builds the [`BatchSource`]s (rings, later journals)
//! and the [`Wakeup`] (the rings' doorbell), then calls [`Uplink::run`].

mod backoff;
mod connection;
mod delivery;
mod dispatcher;
mod relp_session;
mod tls;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::config::Output;
pub use tls::client_config;

/// One queue the uplink drains (an intake's queue: `queue::intake::IntakeQueue`).
/// Positions are opaque u64 values that only grow; `read` and `commit` take positions that a
/// previous `read` returned as `start`/`end`.
pub trait BatchSource: Send + 'static {
    /// Name used in logs (the intake name).
    fn name(&self) -> &str;
    /// Position where reading starts after (re)attach: everything before it was delivered.
    fn committed(&self) -> u64;
    /// Append to `out` whole records from `from` (stopping before `until`, if given, and after
    /// about `max_bytes`). `Ok(None)`: nothing there now. `from` is the end of the previous
    /// read, or the start of a span returned earlier and not committed, with `until` its end:
    /// the same records must come back (the uplink re-sends a failed batch this way instead of
    /// keeping its bytes while it waits for confirmation).
    fn read(
        &mut self,
        from: u64,
        until: Option<u64>,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> std::io::Result<Option<ReadSpan>>;
    /// Everything before `pos` is surely received: the source may free it.
    fn commit(&mut self, pos: u64);
}

/// What one [`BatchSource::read`] covered: positions `start..end`, `records` records,
/// `bytes` bytes appended to the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSpan {
    pub start: u64,
    pub end: u64,
    pub records: u32,
    pub bytes: u64,
}

/// Wakes the dispatcher when a source got data or a connection finished a batch.
pub trait Wakeup: Send + Sync + 'static {
    /// Block the calling thread until notified or `timeout` elapsed (spurious returns allowed).
    fn wait(&self, timeout: Duration);
    /// Wake the waiter, if any.
    fn notify(&self);
}

/// Everything the uplink needs to know about its destination and its limits.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// Destination host name: used for DNS, SNI and certificate verification.
    pub host: String,
    pub port: u16,
    /// TLS connections in the pool (at least 1).
    pub connections: usize,
    /// Extra PEM CA file trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Resolve + TCP connect.
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// One batch write; also the longest the peer may leave written bytes unacknowledged.
    pub write_timeout: Duration,
    /// Bytes read from one source per round-robin turn (one batch).
    pub quantum_bytes: usize,
    /// Unconfirmed bytes one connection may hold before it stops taking batches.
    pub max_inflight_bytes: usize,
    /// After shutdown: how long to keep sending what is queued.
    pub drain_timeout: Duration,
    /// How often a connection with unconfirmed bytes asks the kernel what the peer acknowledged.
    pub ack_poll_interval: Duration,
    /// How long acknowledged bytes must stay on a healthy connection before they count as
    /// received (see `delivery`).
    pub ack_grace: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A connection up this long resets the backoff.
    pub healthy_after: Duration,
    /// Longest the dispatcher sleeps without a wakeup.
    pub idle_wait: Duration,
    /// After a wakeup from idle, how long the dispatcher waits for more events before reading:
    /// a trickle of events then leaves as one batch per linger instead of one write (and one
    /// cross-process wakeup, one TLS record, one acknowledgement poll) per event. Only an idle
    /// uplink lingers; a busy one never sleeps, so this bounds the latency it adds.
    pub linger: Duration,
    /// Octet-counted syslog over TLS, or RELP over TLS with its window.
    pub output: Output,
}

impl UplinkConfig {
    /// Production defaults for `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            connections: 2,
            ca_file: None,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            quantum_bytes: 256 * 1024,
            max_inflight_bytes: 8 * 1024 * 1024,
            drain_timeout: Duration::from_secs(10),
            ack_poll_interval: Duration::from_millis(5),
            ack_grace: Duration::from_millis(100),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(10),
            idle_wait: Duration::from_millis(100),
            linger: Duration::from_millis(5),
            output: Output::Tls,
        }
    }
}

/// Live counters, shared with the stats reporter. Monotonic except `connections_up` (a gauge).
#[derive(Debug, Default)]
pub struct UplinkCounters {
    /// Payload bytes confirmed received.
    pub bytes_sent: AtomicU64,
    /// Events confirmed received (a re-sent event counts each time it is confirmed).
    pub events_sent: AtomicU64,
    pub connects: AtomicU64,
    /// Resolve or TCP connect failed or timed out.
    pub connect_failures: AtomicU64,
    /// TLS handshake failed (including certificate errors) or timed out.
    pub tls_failures: AtomicU64,
    /// A connection with unconfirmed data broke: write error or timeout, peer closed or stalled.
    pub write_failures: AtomicU64,
    /// Events handed back for re-sending after a connection failure.
    pub resent_events: AtomicU64,
    pub connections_up: AtomicU64,
    /// RELP sessions opened (the server accepted our `open`).
    pub relp_sessions: AtomicU64,
    /// RELP events sent and not answered yet, over all connections (a gauge).
    pub relp_window_in_use: AtomicU64,
    /// RELP events the server acknowledged (`rsp 200`).
    pub relp_acknowledged: AtomicU64,
    /// Last failure, `"<UTC time> <what>"`.
    pub last_error: Mutex<Option<String>>,
    /// Per source (intake queue), in the order the uplink was given them; set once at start.
    pub sources: OnceLock<Vec<SourceCounters>>,
    /// Per connection of the pool, by id; set once at start.
    pub connections: OnceLock<Vec<ConnectionCounters>>,
}

/// One connection of the pool: whether it is up, what it delivered, its last failure.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    pub up: AtomicBool,
    /// When `up` last changed (or the first attempt), ms since the Unix epoch.
    pub since_ms: AtomicU64,
    /// Events confirmed received over this connection.
    pub events_sent: AtomicU64,
    /// Events this connection handed back for re-sending when it broke.
    pub resent_events: AtomicU64,
    /// This connection's last failure, `"<UTC time> <what>"`.
    pub last_error: Mutex<Option<String>>,
}

impl ConnectionCounters {
    /// The connection went up or down now.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        self.since_ms.store(
            chrono::Utc::now().timestamp_millis().max(0) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn set_last_error(&self, what: &str) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(what.to_string());
        }
    }
}

/// A point-in-time copy of [`ConnectionCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionSnapshot {
    pub id: usize,
    pub up: bool,
    /// When `up` last changed, ms since the Unix epoch (0: not yet tried).
    pub since_ms: u64,
    pub events_sent: u64,
    pub resent_events: u64,
    pub last_error: Option<String>,
}

/// What the uplink delivered for one source (one intake's queue).
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// The source's name (the queue key, e.g. `tcp-514`).
    pub name: String,
    /// Events confirmed received (a re-sent event counts each time it is confirmed).
    pub events_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Events handed back for re-sending after a connection failure.
    pub resent_events: AtomicU64,
}

/// A point-in-time copy of [`SourceCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceSnapshot {
    pub name: String,
    pub events_sent: u64,
    pub bytes_sent: u64,
    pub resent_events: u64,
}

/// A point-in-time copy of [`UplinkCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UplinkSnapshot {
    pub bytes_sent: u64,
    pub events_sent: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub tls_failures: u64,
    pub write_failures: u64,
    pub resent_events: u64,
    pub connections_up: u64,
    #[serde(default)]
    pub relp_sessions: u64,
    #[serde(default)]
    pub relp_window_in_use: u64,
    #[serde(default)]
    pub relp_acknowledged: u64,
    pub last_error: Option<String>,
    #[serde(default)]
    pub sources: Vec<SourceSnapshot>,
    /// One row per connection of the pool.
    #[serde(default)]
    pub connections: Vec<ConnectionSnapshot>,
}

impl UplinkCounters {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> UplinkSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UplinkSnapshot {
            bytes_sent: get(&self.bytes_sent),
            events_sent: get(&self.events_sent),
            connects: get(&self.connects),
            connect_failures: get(&self.connect_failures),
            tls_failures: get(&self.tls_failures),
            write_failures: get(&self.write_failures),
            resent_events: get(&self.resent_events),
            connections_up: get(&self.connections_up),
            relp_sessions: get(&self.relp_sessions),
            relp_window_in_use: get(&self.relp_window_in_use),
            relp_acknowledged: get(&self.relp_acknowledged),
            last_error: self.last_error.lock().map(|e| e.clone()).unwrap_or(None),
            sources: self
                .sources
                .get()
                .map(|all| {
                    all.iter()
                        .map(|c| SourceSnapshot {
                            name: c.name.clone(),
                            events_sent: get(&c.events_sent),
                            bytes_sent: get(&c.bytes_sent),
                            resent_events: get(&c.resent_events),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            connections: self
                .connections
                .get()
                .map(|all| {
                    all.iter()
                        .enumerate()
                        .map(|(id, c)| ConnectionSnapshot {
                            id,
                            up: c.up.load(Ordering::Relaxed),
                            since_ms: get(&c.since_ms),
                            events_sent: get(&c.events_sent),
                            resent_events: get(&c.resent_events),
                            last_error: c.last_error.lock().map(|e| e.clone()).unwrap_or(None),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Makes `n` connection rows (once; later calls are ignored).
    pub fn register_connections(&self, n: usize) {
        let _ = self
            .connections
            .set((0..n).map(|_| ConnectionCounters::default()).collect());
    }

    /// The counters of connection `id`, once registered.
    pub fn connection(&self, id: usize) -> Option<&ConnectionCounters> {
        self.connections.get().and_then(|all| all.get(id))
    }

    /// Names the sources (once; later calls are ignored) so their deliveries can be counted.
    pub fn register_sources<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let counters = names
            .map(|name| SourceCounters {
                name: name.to_string(),
                ..SourceCounters::default()
            })
            .collect();
        let _ = self.sources.set(counters);
    }

    /// The counters of source `index`, once registered.
    pub fn source(&self, index: usize) -> Option<&SourceCounters> {
        self.sources.get().and_then(|all| all.get(index))
    }

    /// Record `what` as the last error, stamped with the current UTC time.
    pub fn set_last_error(&self, what: impl std::fmt::Display) {
        let stamped = format!(
            "{} {what}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
        );
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(stamped);
        }
    }

    /// Record `what` as the last error of connection `id` and of the pool.
    pub fn connection_failed(&self, id: usize, what: impl std::fmt::Display) {
        let stamped = format!(
            "{} {what}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
        );
        if let Some(c) = self.connection(id) {
            c.set_last_error(&stamped);
        }
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(stamped);
        }
    }
}

/// Everything that can go wrong in the uplink. Per-connection failures are retried (they end up
/// in `last_error`); only the configuration and internal failures end [`Uplink::run`].
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA file {path} holds no usable certificate")]
    CaFileEmpty { path: PathBuf },
    #[error("no trusted root certificate (system store empty and no CA file)")]
    NoRootCertificates,
    #[error("TLS setup failed: {0}")]
    TlsSetup(rustls::Error),
    #[error("{host:?} is not a valid TLS server name: {reason}")]
    ServerName { host: String, reason: String },
    #[error("invalid uplink configuration: {0}")]
    Config(String),
    #[error("cannot resolve {host}:{port}: {source}")]
    Resolve {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("connect to {host}:{port} failed: {source}")]
    Connect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("connect to {host}:{port} timed out after {after:?}")]
    ConnectTimeout {
        host: String,
        port: u16,
        after: Duration,
    },
    #[error("TLS handshake with {host} failed: {source}")]
    TlsHandshake {
        host: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {host} timed out after {after:?}")]
    HandshakeTimeout { host: String, after: Duration },
    #[error("write to {host} failed: {source}")]
    Write {
        host: String,
        source: std::io::Error,
    },
    #[error("write to {host} timed out after {after:?}")]
    WriteTimeout { host: String, after: Duration },
    #[error("{host} stopped reading: {unacked} bytes unacknowledged for {after:?}")]
    PeerStalled {
        host: String,
        unacked: u64,
        after: Duration,
    },
    #[error("{host} closed the connection")]
    PeerClosed { host: String },
    #[error("read from {host} failed: {source}")]
    Read {
        host: String,
        source: std::io::Error,
    },
    #[error("RELP session with {host} ({peer}): {problem}")]
    Relp {
        host: String,
        peer: std::net::SocketAddr,
        problem: String,
    },
    #[error("RELP server {host} ({peer}) announced it closes the session (serverclose)")]
    RelpServerClose {
        host: String,
        peer: std::net::SocketAddr,
    },
    #[error("RELP server {host} answered none of {waiting} events for {after:?}")]
    RelpStalled {
        host: String,
        waiting: usize,
        after: Duration,
    },
    #[error("cannot query unacknowledged bytes: {0}")]
    AckQuery(std::io::Error),
    #[error("cannot start the dispatcher thread: {0}")]
    SpawnDispatcher(std::io::Error),
    #[error("the dispatcher thread panicked")]
    DispatcherPanicked,
    #[error("a connection task failed: {0}")]
    ConnectionTask(tokio::task::JoinError),
}

impl UplinkError {
    /// True for failures of one connection attempt or session: reconnecting may fix them.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Self::CaFile { .. }
                | Self::CaFileEmpty { .. }
                | Self::NoRootCertificates
                | Self::TlsSetup(_)
                | Self::ServerName { .. }
                | Self::Config(_)
                | Self::SpawnDispatcher(_)
                | Self::DispatcherPanicked
                | Self::ConnectionTask(_)
        )
    }
}

/// The uplink of one destination.
pub struct Uplink;

impl Uplink {
    /// Runs until `shutdown` fires (or its sender is dropped), then drains what is queued
    /// (bounded by `drain_timeout`), closes the connections with TLS close_notify and returns.
    /// Connection failures are retried forever; only configuration and internal errors return
    /// `Err`.
    pub async fn run(
        cfg: UplinkConfig,
        sources: Vec<Box<dyn BatchSource>>,
        wake: Arc<dyn Wakeup>,
        counters: Arc<UplinkCounters>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), UplinkError> {
        if cfg.connections == 0 || cfg.quantum_bytes == 0 || cfg.max_inflight_bytes == 0 {
            return Err(UplinkError::Config(
                "connections, quantum_bytes and max_inflight_bytes must be at least 1".into(),
            ));
        }
        let tls = client_config(cfg.ca_file.as_deref())?;
        let server_name = tls::server_name(&cfg.host)?;
        let cfg = Arc::new(cfg);
        info!(host = %cfg.host, port = cfg.port, connections = cfg.connections,
              sources = sources.len(), "uplink starting");

        // Room for one batch per connection: dispatch order stays close to send order.
        let (work_tx, work_rx) = async_channel::bounded(cfg.connections);
        let (outcome_tx, outcome_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopping = Arc::new(AtomicBool::new(false));

        counters.register_connections(cfg.connections);
        let mut pool = tokio::task::JoinSet::new();
        for id in 0..cfg.connections {
            let conn = connection::Connection {
                id,
                cfg: Arc::clone(&cfg),
                tls: tokio_rustls::TlsConnector::from(Arc::clone(&tls)),
                server_name: server_name.clone(),
                work: work_rx.clone(),
                outcomes: outcome_tx.clone(),
                wake: Arc::clone(&wake),
                counters: Arc::clone(&counters),
                stop: stop_rx.clone(),
            };
            pool.spawn(conn.run());
        }
        drop((work_rx, outcome_tx, stop_rx));

        let dispatcher = dispatcher::Dispatcher::new(
            &cfg,
            sources,
            work_tx,
            outcome_rx,
            Arc::clone(&wake),
            Arc::clone(&counters),
            Arc::clone(&stopping),
            stop_tx,
        );
        let (done_tx, done_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("uplink-dispatch".into())
            .spawn(move || {
                dispatcher.run();
                let _ = done_tx.send(());
            })
            .map_err(UplinkError::SpawnDispatcher)?;

        let watcher = tokio::spawn({
            let stopping = Arc::clone(&stopping);
            let wake = Arc::clone(&wake);
            async move {
                // A dropped sender means the owner is gone: treat it as shutdown.
                while !*shutdown.borrow_and_update() {
                    if shutdown.changed().await.is_err() {
                        break;
                    }
                }
                stopping.store(true, Ordering::Release);
                wake.notify();
            }
        });

        let dispatched = done_rx.await;
        watcher.abort();
        let mut result = dispatched.map_err(|_| UplinkError::DispatcherPanicked);
        while let Some(joined) = pool.join_next().await {
            if let Err(e) = joined {
                warn!(error = %e, "uplink connection task failed");
                result = result.and(Err(UplinkError::ConnectionTask(e)));
            }
        }
        info!(host = %cfg.host, "uplink stopped");
        result
    }
}

/// An intake's queue (saved, ring, journal: `queue::intake`) is what the uplink drains.
impl BatchSource for crate::queue::intake::IntakeQueue {
    fn name(&self) -> &str {
        crate::queue::intake::IntakeQueue::name(self)
    }

    fn committed(&self) -> u64 {
        crate::queue::intake::IntakeQueue::committed(self)
    }

    fn read(
        &mut self,
        from: u64,
        until: Option<u64>,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> std::io::Result<Option<ReadSpan>> {
        let span = crate::queue::intake::IntakeQueue::read(self, from, until, max_bytes, out)?;
        Ok(span.map(|s| ReadSpan {
            start: s.start,
            end: s.end,
            records: s.records,
            bytes: s.bytes,
        }))
    }

    fn commit(&mut self, pos: u64) {
        crate::queue::intake::IntakeQueue::commit(self, pos)
    }
}
