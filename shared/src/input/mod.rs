//! Input: the listeners of one intake (TCP, TLS or UDP) and RFC 6587 framing.
//!
//! Each intake is one port served by its own ingest worker process. The supervisor binds the
//! socket; the worker hands the inherited `std` socket to [`serve_tcp`], [`serve_tls`] or
//! [`serve_udp`], which run until the `shutdown` watch channel turns `true` (or its sender is
//! dropped). Framed messages go to a [`MessageSink`] (on the other side: the worker, which
//! renders them into the intake's ring) in batches: one `deliver` call per socket read.
//!
//! Promises:
//! - A message is at most [`MAX_MESSAGE`] bytes; a longer one is delivered truncated (flag
//!   set, counted) and its remainder skipped, never split into a second message.
//! - TCP/TLS never drop what the sink refuses: the connection stops reading and offers the rest
//!   again after short sleeps (back-pressure reaches the sender through TCP). UDP cannot wait:
//!   refused datagrams are dropped and counted in [`InputCounters::dropped_full`].
//! - One connection's problems (slow, hostile, stuck in a handshake, broken) never delay another.
//! - Whatever the others hold, a connection can always read 16 KiB of new data, so a sender of
//!   ordinary messages is always served; read-buffer memory is bounded per intake by
//!   `read_buffer_budget + connections × 16 KiB`, and an idle connection holds no buffer
//!   (`budget.rs`, `tcp/reader.rs`, docs/hostile-networks.md).
//! - Senders outside the intake's `allowed_sources`, and connections beyond its limits, are
//!   refused before a byte is read from them (before a TLS handshake), counted and logged
//!   rate-limited (`admission.rs`, `sources.rs`).
//! - A message without a host name is shown under its sender's name from the sender's first
//!   event: the first frames of a new sender wait (async, bounded by the resolver's wait, 1 s
//!   by default) for its reverse lookup, then fall back to the IP, counted in
//!   [`InputCounters::resolve_timeouts`]. TCP/TLS wait per connection; UDP holds a new
//!   sender's datagrams in a bounded waiting room (`udp/waiting_room.rs`) while other senders' go
//!   on. Known senders never wait (see `resolver.rs`).
//! - Behind a load balancer (`proxy_protocol: true`, tcp/tls), each connection must start with
//!   a PROXY protocol v1/v2 header, read before anything else (before a TLS handshake); the
//!   sender it names is the one events carry, looked up and limited per source. A connection
//!   without a valid header is closed and counted (`proxy_protocol.rs`).

mod admission;
mod budget;
mod framing;
mod proxy_protocol;
mod resolver;
mod sources;
mod tcp;
#[cfg(test)]
mod testing;
mod tls;
mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

pub use budget::{BudgetLease, ReadBudget, Shed, DEFAULT_READ_BUDGET, FREE_PER_CONNECTION};
pub use framing::{FrameDecoder, FrameSpan, BUFFER_LIMIT};
pub use resolver::{FirstLookup, Lookup, Resolver, SenderHost, WaitedHost, DEFAULT_WAIT};
pub use sources::{Cidr, CidrError, SourceFilter};
pub use tcp::{serve_tcp, serve_tcp_with, ListenerOptions};
pub use tls::{load_server_tls, serve_tls, serve_tls_with, TlsIntake};
pub use udp::{serve_udp, serve_udp_from};

/// The PROXY header parser, for the fuzz target (`fuzz/`). Not an API: names and shapes
/// follow the code.
#[doc(hidden)]
pub mod internals {
    pub use super::proxy_protocol::{
        parse as parse_proxy_header, Malformed, Progress, Proxied, V1_MAX, V2_MAX_BLOCK,
        V2_SIGNATURE,
    };
}

/// Largest message in bytes (the reference's `250k`); longer ones are truncated to this size.
/// The `syslog` module keeps its own copy of the same value.
pub const MAX_MESSAGE: usize = 256_000;

/// One framed message, borrowed from the reader's buffer. `bytes` never contains the LF that
/// ended an LF-framed message, nor the `LEN SP` header of an octet-counted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub bytes: &'a [u8],
    /// The message was longer than [`MAX_MESSAGE`] and was cut to that size.
    pub truncated: bool,
}

/// Where framed messages go (the ingest worker renders them into the ring).
pub trait MessageSink: Send + Sync + 'static {
    /// Returns how many leading frames were accepted; the rest did not fit now.
    /// TCP/TLS: stop reading, wait (short sleeps, growing to ~50 ms) and offer the rest again.
    /// UDP: drop the rest and count them.
    fn deliver(&self, peer: SocketAddr, host: &str, frames: &[Frame<'_>]) -> usize;
}

/// Counters of one listener. All relaxed atomics: each is an independent statistic.
#[derive(Debug, Default)]
pub struct InputCounters {
    /// Messages framed from the network (counted once, whether accepted or dropped later).
    pub received: AtomicU64,
    /// Messages longer than [`MAX_MESSAGE`], delivered truncated.
    pub truncated: AtomicU64,
    /// Octet-counted frames cut short by the connection closing; discarded.
    pub partial_discarded: AtomicU64,
    /// UDP messages the sink refused (queue full), and TCP messages still refused when the
    /// shutdown grace ran out.
    pub dropped_full: AtomicU64,
    /// Connections open now (a gauge), TLS ones from accept, i.e. including the handshake.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// TLS handshakes that began (a first byte came) and failed: not TLS 1.2+, no common
    /// cipher suite, a client certificate refused, a timeout, a connection broken mid-way.
    pub tls_handshake_failures: AtomicU64,
    // --- Counted apart from handshake failures (tls.rs, udp.rs) ---
    /// TLS connections closed or reset before sending a byte (health checks, reconnects).
    pub tls_closed_before_hello: AtomicU64,
    /// TLS connections whose first bytes were not a TLS handshake record; closed.
    pub tls_not_tls: AtomicU64,
    /// TLS connections closed at their first byte: `tls_max_handshakes` were in progress.
    pub tls_handshakes_over_limit: AtomicU64,
    /// Datagrams the kernel dropped on the UDP socket, mostly because its receive buffer was
    /// full (`SO_RXQ_OVFL`; since the socket was opened, so including before a restart).
    pub udp_kernel_drops: AtomicU64,
    /// Failed reads (connection reset, UDP receive errors): the connection is closed.
    pub read_errors: AtomicU64,
    /// Payload bytes read from sockets (after TLS decryption).
    pub bytes_received: AtomicU64,
    /// Waits for a new sender's name that ran out of time, so its first events went out under
    /// its IP: one per TCP/TLS connection, one per UDP sender.
    pub resolve_timeouts: AtomicU64,
    /// UDP senders whose datagrams, held while their name was looked up, overflowed the
    /// waiting room and went out at once under the IP (nothing is dropped).
    pub resolve_wait_overflows: AtomicU64,
    // Hostile networks (docs/hostile-networks.md): refusals at accept, before any byte is
    // read, and connections closed by a limit, their unfinished frame discarded.
    /// Connections and UDP datagrams from outside `allowed_sources`.
    pub refused_source: AtomicU64,
    /// Connections refused because the intake had `max_connections` open.
    pub refused_intake_full: AtomicU64,
    /// Connections refused because their address had `max_connections_per_source` open.
    pub refused_source_full: AtomicU64,
    /// Connections closed because a frame was not finished within `partial_frame_timeout`.
    pub partial_frame_timeouts: AtomicU64,
    /// Connections closed after `idle_timeout` without a byte.
    pub idle_timeouts: AtomicU64,
    /// Connections shed by the fair read budget (the largest holders, when memory ran out).
    pub shed_budget: AtomicU64,
    /// `proxy_protocol` intakes: connections closed because their PROXY header was missing,
    /// malformed, cut short or too slow.
    pub proxy_header_rejected: AtomicU64,
}

/// A point-in-time copy of [`InputCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputCountersSnapshot {
    pub received: u64,
    pub truncated: u64,
    pub partial_discarded: u64,
    pub dropped_full: u64,
    pub connections_open: u64,
    pub connections_total: u64,
    pub tls_handshake_failures: u64,
    pub tls_closed_before_hello: u64,
    pub tls_not_tls: u64,
    pub tls_handshakes_over_limit: u64,
    pub udp_kernel_drops: u64,
    pub read_errors: u64,
    pub bytes_received: u64,
    pub resolve_timeouts: u64,
    pub resolve_wait_overflows: u64,
    pub refused_source: u64,
    pub refused_intake_full: u64,
    pub refused_source_full: u64,
    pub partial_frame_timeouts: u64,
    pub idle_timeouts: u64,
    pub shed_budget: u64,
    /// Absent from an older worker's report: 0.
    #[serde(default)]
    pub proxy_header_rejected: u64,
}

impl InputCounters {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> InputCountersSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        InputCountersSnapshot {
            received: get(&self.received),
            truncated: get(&self.truncated),
            partial_discarded: get(&self.partial_discarded),
            dropped_full: get(&self.dropped_full),
            connections_open: get(&self.connections_open),
            connections_total: get(&self.connections_total),
            tls_handshake_failures: get(&self.tls_handshake_failures),
            tls_closed_before_hello: get(&self.tls_closed_before_hello),
            tls_not_tls: get(&self.tls_not_tls),
            tls_handshakes_over_limit: get(&self.tls_handshakes_over_limit),
            udp_kernel_drops: get(&self.udp_kernel_drops),
            read_errors: get(&self.read_errors),
            bytes_received: get(&self.bytes_received),
            resolve_timeouts: get(&self.resolve_timeouts),
            resolve_wait_overflows: get(&self.resolve_wait_overflows),
            refused_source: get(&self.refused_source),
            refused_intake_full: get(&self.refused_intake_full),
            refused_source_full: get(&self.refused_source_full),
            partial_frame_timeouts: get(&self.partial_frame_timeouts),
            idle_timeouts: get(&self.idle_timeouts),
            shed_budget: get(&self.shed_budget),
            proxy_header_rejected: get(&self.proxy_header_rejected),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Errors of the input layer: setting up a listener or loading the TLS identity. Failures of
/// single connections or datagrams are not errors of the listener: they are logged and counted.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot use the inherited {kind} socket: {source}")]
    AdoptSocket {
        kind: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for UDP datagrams failed: {0}")]
    Receive(#[source] std::io::Error),
    #[error("cannot read TLS {what} file {}: {source}", path.display())]
    ReadTlsFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS {what} file {} is not valid PEM: {source}", path.display())]
    BadPem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS {what} file {} contains no PEM CERTIFICATE block", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("TLS client CA file {} cannot verify clients: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error(
        "TLS key file {} contains no private key (expected a PEM 'RSA PRIVATE KEY', 'PRIVATE KEY' or 'EC PRIVATE KEY' block)",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error("TLS key {} cannot be used with certificate {}: {source}", key.display(), cert.display())]
    KeyRejected {
        key: PathBuf,
        cert: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Resolves when shutdown is requested: the channel turned `true` or its sender was dropped.
pub(crate) async fn shutdown_requested(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // An Err means the sender is gone: nobody can ask any more, so stop as well.
    let _ = rx.wait_for(|stop| *stop).await;
}
