//! TLS listener: the TCP accept loop of `tcp.rs` with a handshake first in each connection's
//! own task. The server identity comes from the intake's files (`tls/identity.rs`).
//!
//! The handshake of one connection, in order:
//! 1. **Wait for the client's first byte**; the handshake timeout does not run yet. Clients
//!    that connect ahead of time and speak later (syslog-ng's TLS destination sends its
//!    ClientHello only with its first message) are normal; such a connection holds its task
//!    and socket and no buffer (the handshake's state is allocated at the first byte). How
//!    many silent connections may stay open is the TCP listener's concern (`tcp.rs`), not a
//!    handshake timeout's. A connection closed (or reset) before its first byte is not a handshake
//!    failure: it is counted in `tls_closed_before_hello` and logged at `debug` (TCP health
//!    checks, syslog-ng's reconnects).
//! 2. **Take a handshake slot**: at most `tls_max_handshakes` handshakes are in progress per
//!    intake. A connection whose first byte comes when all are taken is closed at once and
//!    counted in `tls_handshakes_over_limit`.
//! 3. **The handshake timeout starts** (`tls_handshake_timeout`, from the first byte): the
//!    listener reads the first record itself (`tls/hello.rs`). Not a TLS handshake record:
//!    closed, counted in `tls_not_tls`. A ClientHello offering only TLS 1.0/1.1 (or older):
//!    the listener writes the fatal `protocol_version` alert (70) itself, because rustls would
//!    answer `handshake_failure` (40), and closes. Otherwise the record is replayed to rustls
//!    (`tls/replay.rs`), which completes the handshake (TLS 1.2 or 1.3; client certificates
//!    as `tls_client_auth` says).
//!
//! Every refusal after step 1 is logged through one `Repeating` per kind of problem, naming
//! the intake, the peer and the problem in words (`tls/refusal.rs`); all but the two counted
//! apart are `tls_handshake_failures`. After the handshake the framing loop is the TCP one,
//! including its wait for a new sender's name (that lookup starts at accept).

mod hello;
mod identity;
mod refusal;
mod replay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::tcp::{accept_loop, Listener, ListenerOptions};
use super::{shutdown_requested, InputCounters, InputError, MessageSink, Resolver};
use crate::config::{ClientAuth, TlsFiles, TlsHandshake};
use hello::{FirstRecord, Hello};
use refusal::{Context, Refusal, RefusalLog};
use replay::Replay;

pub use identity::load_server_tls;

/// Bytes of a non-TLS stream kept for its log line.
const SHOWN_BYTES: usize = 16;

/// A TLS connection after its handshake.
pub(crate) type Accepted = TlsStream<Replay<TcpStream>>;

/// One tls intake, ready to serve: its name (for the logs), its server configuration, and
/// how its handshakes are bounded.
pub struct TlsIntake {
    pub name: String,
    pub config: Arc<rustls::ServerConfig>,
    pub handshake: TlsHandshake,
    /// The CA clients are verified against, when `handshake.client_auth` is not `None`.
    pub client_ca: Option<PathBuf>,
}

impl TlsIntake {
    /// Loads the identity (and the client CA when clients are verified) from `files`.
    pub fn load(name: &str, files: &TlsFiles) -> Result<Self, InputError> {
        let verified = files.handshake.client_auth != ClientAuth::None;
        Ok(Self {
            name: name.to_string(),
            config: Arc::new(load_server_tls(files)?),
            handshake: files.handshake,
            client_ca: verified.then(|| files.ca.clone()),
        })
    }
}

/// Serves syslog over TLS on the inherited listening socket until shutdown.
pub async fn serve_tls(
    l: std::net::TcpListener,
    tls: TlsIntake,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), InputError> {
    let options = ListenerOptions::default();
    serve_tls_with(l, tls, sink, names, c, shutdown, options).await
}

/// [`serve_tls`] with the intake's limits.
pub async fn serve_tls_with(
    l: std::net::TcpListener,
    tls: TlsIntake,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    shutdown: watch::Receiver<bool>,
    options: ListenerOptions,
) -> Result<(), InputError> {
    let listener = Listener::new(sink, names, c, options);
    let handshakes = Handshakes::new(tls);
    accept_loop(l, Some(Arc::new(handshakes)), listener, shutdown).await
}

/// What every handshake of one tls intake shares.
pub(crate) struct Handshakes {
    acceptor: TlsAcceptor,
    timeout: Duration,
    limit: usize,
    in_progress: Arc<Semaphore>,
    log: RefusalLog,
    accepted_suites: String,
    client_ca: Option<PathBuf>,
}

impl Handshakes {
    fn new(tls: TlsIntake) -> Self {
        let limit = usize::try_from(tls.handshake.max_in_progress)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        let provider = tls.config.crypto_provider();
        let suites: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        let groups: Vec<String> = provider
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        Self {
            acceptor: TlsAcceptor::from(tls.config),
            timeout: Duration::from_secs(tls.handshake.timeout_secs),
            limit,
            in_progress: Arc::new(Semaphore::new(limit)),
            log: RefusalLog::new(Arc::from(tls.name)),
            accepted_suites: format!(
                "the cipher suites {} with the key exchange groups {}",
                suites.join(", "),
                groups.join(", ")
            ),
            client_ca: tls.client_ca,
        }
    }

    fn refused(&self, refusal: &Refusal, peer: SocketAddr, counters: &InputCounters) {
        refusal.count(counters);
        let cx = Context {
            accepted_suites: &self.accepted_suites,
            client_ca: self.client_ca.as_deref(),
        };
        self.log.note(refusal, peer, &cx);
    }
}

/// Runs the server handshake (see the module doc); `None` when the connection closed first,
/// was refused (counted and logged), or shutdown came first.
pub(crate) async fn handshake(
    tls: &Handshakes,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Listener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Accepted> {
    let counters = &shared.counters;
    let mut byte = [0u8; 1];
    let first = tokio::select! {
        _ = shutdown_requested(shutdown) => return None,
        first = stream.peek(&mut byte) => first,
    };
    if !matches!(first, Ok(n) if n > 0) {
        InputCounters::add(&counters.tls_closed_before_hello, 1);
        tracing::debug!(peer = %peer, "TLS client closed before sending anything");
        return None;
    }
    let Ok(_slot) = tls.in_progress.clone().try_acquire_owned() else {
        tls.refused(&Refusal::OverLimit { limit: tls.limit }, peer, counters);
        return None;
    };
    // Boxed: its state (about 1.6 KiB) exists only from the first byte to the end of the
    // handshake, not inline in every connection's task while the client is silent.
    let negotiation = Box::pin(negotiate(tls, stream));
    let outcome = tokio::select! {
        _ = shutdown_requested(shutdown) => return None,
        outcome = tokio::time::timeout(tls.timeout, negotiation) => outcome,
    };
    let refusal = match outcome {
        Ok(Ok(stream)) => {
            log_session(&stream, peer);
            return Some(stream);
        }
        Ok(Err(refusal)) => refusal,
        Err(_elapsed) => Refusal::TimedOut { after: tls.timeout },
    };
    tls.refused(&refusal, peer, counters);
    None
}

/// Reads the first record, refuses what is not TLS or too old, and hands the rest to rustls.
async fn negotiate(tls: &Handshakes, mut stream: TcpStream) -> Result<Accepted, Refusal> {
    let mut head = vec![0u8; hello::HEADER];
    let got = stream.read(&mut head).await.map_err(Refusal::Broken)?;
    if got == 0 {
        return Err(Refusal::Broken(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if !hello::may_be_tls(head[0]) {
        // Decided on the first byte: a short plain-text line must not wait for 5 bytes.
        head.truncate(got);
        return Err(not_tls(head, &stream));
    }
    stream
        .read_exact(&mut head[got..])
        .await
        .map_err(Refusal::Broken)?;
    let header: [u8; hello::HEADER] = [head[0], head[1], head[2], head[3], head[4]];
    let mut hello = None;
    match hello::first_record(&header) {
        FirstRecord::NotTls => return Err(not_tls(head, &stream)),
        FirstRecord::Sslv2Hello => {
            return Err(Refusal::OldVersion {
                offered: Vec::new(),
            })
        }
        FirstRecord::Handshake { version, len } if len <= hello::MAX_RECORD => {
            head.resize(hello::HEADER + len, 0);
            stream
                .read_exact(&mut head[hello::HEADER..])
                .await
                .map_err(Refusal::Broken)?;
            hello = hello::parse_client_hello(&head[hello::HEADER..]);
            if let Some(old) = hello.as_ref().filter(|h| h.only_old_versions()) {
                refuse_old_version(&mut stream, version).await;
                return Err(Refusal::OldVersion {
                    offered: old.versions.clone(),
                });
            }
        }
        // An oversized record: rustls refuses it in its own words.
        FirstRecord::Handshake { .. } => {}
    }
    accept(tls, Replay::new(head, stream), hello).await
}

/// A not-TLS refusal showing the first bytes (those read, and a few more if already there).
fn not_tls(mut first: Vec<u8>, stream: &TcpStream) -> Refusal {
    let mut more = [0u8; SHOWN_BYTES];
    let room = SHOWN_BYTES.saturating_sub(first.len());
    if let Ok(n) = stream.try_read(&mut more[..room]) {
        first.extend_from_slice(&more[..n]);
    }
    Refusal::NotTls { first }
}

async fn accept(
    tls: &Handshakes,
    stream: Replay<TcpStream>,
    hello: Option<Hello>,
) -> Result<Accepted, Refusal> {
    tls.acceptor.accept(stream).await.map_err(|e| {
        let tls_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned();
        match tls_error {
            Some(error) => Refusal::Tls { error, hello },
            None => Refusal::Broken(e),
        }
    })
}

/// Tells an old client why (alert 70) and closes our side.
async fn refuse_old_version(stream: &mut TcpStream, record_version: u16) {
    let alert = hello::protocol_version_alert(record_version);
    let sent = async {
        stream.write_all(&alert).await?;
        stream.shutdown().await
    };
    if let Err(e) = sent.await {
        tracing::debug!(error = %e, "could not send the protocol_version alert");
    }
}

/// The negotiated version and cipher suite, at debug level (the interop suite reads them).
fn log_session(stream: &Accepted, peer: SocketAddr) {
    let session = stream.get_ref().1;
    let unknown = || "unknown".to_string();
    tracing::debug!(
        peer = %peer,
        version = %session.protocol_version().map_or_else(unknown, |v| format!("{v:?}")),
        cipher = %session
            .negotiated_cipher_suite()
            .map_or_else(unknown, |s| format!("{:?}", s.suite())),
        "TLS session established"
    );
}

#[cfg(test)]
mod tests;
