//! TLS listener: the server identity from CERTS_DIR and the handshake of each connection.
//!
//! [`load_server_tls`] reads a PEM certificate chain and a PEM private key (PKCS#1 RSA,
//! PKCS#8, or SEC1 EC) into a rustls `ServerConfig` (ring provider, TLS 1.2 and 1.3, no client
//! certificates, as the reference). Every failure names the file and what is wrong with it.
//!
//! [`serve_tls`] is the TCP accept loop of `tcp.rs` with a handshake first in each
//! connection's own task, bounded by [`HANDSHAKE_TIMEOUT`]: a client that connects and never
//! completes only holds its own task. Failed handshakes are counted in
//! `tls_handshake_failures`; protocol errors and timeouts are logged at `warn` with the peer
//! address, a peer closing before any handshake (load-balancer TCP health checks) at `debug`.
//! After the handshake the framing loop is the TCP one, including its wait for a new sender's
//! name; that lookup starts at accept, so it runs during the handshake.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::tcp::{accept_loop, Listener, ListenerOptions};
use super::{shutdown_requested, InputCounters, InputError, MessageSink, Resolver};

/// Longest a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the server TLS configuration from a PEM key and a PEM certificate chain.
pub fn load_server_tls(key: &Path, cert: &Path) -> Result<rustls::ServerConfig, InputError> {
    let certs = read_certs(cert)?;
    let private_key = read_key(key)?;
    let rejected = |source| InputError::KeyRejected {
        key: key.to_path_buf(),
        cert: cert.to_path_buf(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(rejected)
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, InputError> {
    std::fs::read(path).map_err(|source| InputError::ReadTlsFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, InputError> {
    let pem = read_pem("certificate", path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| InputError::BadPem {
            what: "certificate",
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(InputError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, InputError> {
    let pem = read_pem("key", path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| InputError::BadPem {
            what: "key",
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| InputError::NoPrivateKey {
            path: path.to_path_buf(),
        })
}

/// Serves syslog over TLS on the inherited listening socket until shutdown.
pub async fn serve_tls(
    l: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
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
    tls: Arc<rustls::ServerConfig>,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    shutdown: watch::Receiver<bool>,
    options: ListenerOptions,
) -> Result<(), InputError> {
    let listener = Listener::new(sink, names, c, options);
    accept_loop(l, Some(TlsAcceptor::from(tls)), listener, shutdown).await
}

/// Runs the server handshake; None (counted and logged) when it fails, times out, or
/// shutdown comes first.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Listener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<TlsStream<TcpStream>> {
    let outcome = tokio::select! {
        _ = shutdown_requested(shutdown) => return None,
        outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => outcome,
    };
    let failures = &shared.counters.tls_handshake_failures;
    match outcome {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            InputCounters::add(failures, 1);
            tracing::debug!(peer = %peer, "peer closed before completing the TLS handshake");
            None
        }
        Ok(Err(e)) => {
            InputCounters::add(failures, 1);
            tracing::warn!(peer = %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_elapsed) => {
            InputCounters::add(failures, 1);
            let timeout_secs = HANDSHAKE_TIMEOUT.as_secs();
            tracing::warn!(peer = %peer, timeout_secs, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests;
