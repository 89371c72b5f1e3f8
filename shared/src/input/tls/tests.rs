//! TLS identity loading and TLS listener behaviours on 127.0.0.1:0.
//!
//! Keys in the two legacy PEM forms operators have (`BEGIN RSA PRIVATE KEY`, PKCS#1, and
//! `BEGIN EC PRIVATE KEY`, SEC1) are made at run time with the `openssl` command, as the
//! reference's documentation tells users to; PKCS#8 keys come from rcgen.

use super::*;
use crate::input::testing::{assert_known_first_then_named, wait_for, GatedLookup, RecordingSink};
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

const PATIENCE: Duration = Duration::from_secs(10);

/// Which legacy key form `openssl_identity` makes.
#[derive(Clone, Copy)]
enum Legacy {
    RsaPkcs1,
    EcSec1,
}

/// A self-signed pair made by the `openssl` command, the key in a legacy PEM form.
fn openssl_identity(kind: Legacy) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("fixture.key");
    let cert = dir.path().join("fixture.crt");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl command (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key_s = key.to_str().unwrap();
    let cert_s = cert.to_str().unwrap();
    match kind {
        Legacy::RsaPkcs1 => run(&["genrsa", "-traditional", "-out", key_s, "2048"]),
        Legacy::EcSec1 => run(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            key_s,
        ]),
    }
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        key_s,
        "-subj",
        "/CN=localhost",
        "-days",
        "2",
        "-out",
        cert_s,
    ]);
    (dir, key, cert)
}

struct Identity {
    _dir: tempfile::TempDir,
    key: PathBuf,
    cert: PathBuf,
    cert_der: CertificateDer<'static>,
}

fn rcgen_identity() -> Identity {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server.key");
    let cert = dir.path().join("server.crt");
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    let cert_der = generated.cert.der().clone();
    Identity {
        _dir: dir,
        key,
        cert,
        cert_der,
    }
}

/// The files of a tls intake that verifies no client.
fn files(key: &Path, cert: &Path) -> TlsFiles {
    TlsFiles {
        key: key.to_path_buf(),
        cert: cert.to_path_buf(),
        ca: cert.to_path_buf(),
        handshake: TlsHandshake::default(),
    }
}

#[test]
fn pkcs8_rsa_pkcs1_and_sec1_ec_keys_load() {
    let id = rcgen_identity();
    assert!(
        load_server_tls(&files(&id.key, &id.cert)).is_ok(),
        "PKCS#8 (rcgen)"
    );
    let (_dir, key, cert) = openssl_identity(Legacy::RsaPkcs1);
    let rsa = load_server_tls(&files(&key, &cert));
    assert!(rsa.is_ok(), "RSA PKCS#1: {:?}", rsa.err());
    let (_dir, key, cert) = openssl_identity(Legacy::EcSec1);
    let ec = load_server_tls(&files(&key, &cert));
    assert!(ec.is_ok(), "EC SEC1: {:?}", ec.err());
}

#[test]
fn bad_identity_files_are_named_in_the_error() {
    let id = rcgen_identity();
    let missing = id.key.with_file_name("absent.key");
    let err = load_server_tls(&files(&missing, &id.cert)).unwrap_err();
    assert!(matches!(err, InputError::ReadTlsFile { what: "key", .. }));
    assert!(err.to_string().contains("absent.key"), "{err}");

    let err = load_server_tls(&files(&id.key, &id.key)).unwrap_err();
    assert!(matches!(err, InputError::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("server.key"), "{err}");

    let err = load_server_tls(&files(&id.cert, &id.cert)).unwrap_err();
    assert!(matches!(err, InputError::NoPrivateKey { .. }), "{err}");

    let (_dir, ec_key, _) = openssl_identity(Legacy::EcSec1);
    let err = load_server_tls(&files(&ec_key, &id.cert)).unwrap_err();
    assert!(
        matches!(err, InputError::KeyRejected { .. }),
        "mismatched pair: {err}"
    );
    assert!(err.to_string().contains("fixture.key"), "{err}");
}

struct Server {
    addr: SocketAddr,
    sink: Arc<RecordingSink>,
    counters: Arc<InputCounters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), InputError>>,
    cert_der: CertificateDer<'static>,
    _identity: Identity,
}

impl Server {
    async fn start() -> Self {
        Self::start_named(Arc::new(Resolver::new(false))).await
    }

    async fn start_named(names: Arc<Resolver>) -> Self {
        Self::start_with(names, TlsHandshake::default(), None).await
    }

    /// A server with these handshake rules; `client_ca` is the CA file clients are checked
    /// against when `handshake.client_auth` asks.
    async fn start_with(
        names: Arc<Resolver>,
        handshake: TlsHandshake,
        client_ca: Option<&Path>,
    ) -> Self {
        let id = rcgen_identity();
        let mut files = files(&id.key, &id.cert);
        files.handshake = handshake;
        if let Some(ca) = client_ca {
            files.ca = ca.to_path_buf();
        }
        let tls = TlsIntake::load("test intake", &files).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = RecordingSink::new();
        let counters = Arc::new(InputCounters::new());
        let (stop, shutdown) = watch::channel(false);
        let serve = serve_tls(
            listener,
            tls,
            sink.clone(),
            names,
            counters.clone(),
            shutdown,
        );
        let task = tokio::spawn(serve);
        let cert_der = id.cert_der.clone();
        Self {
            addr,
            sink,
            counters,
            stop,
            task,
            cert_der,
            _identity: id,
        }
    }

    async fn send(&self, connector: &TlsConnector, bytes: &[u8]) {
        let mut tls = self.connect_from("127.0.0.1", connector).await;
        tls.write_all(bytes).await.unwrap();
        tls.shutdown().await.unwrap();
    }

    /// A TLS connection from `local` (any 127.0.0.0/8 address works on loopback).
    async fn connect_from(
        &self,
        local: &str,
        connector: &TlsConnector,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        let tcp = socket.connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.unwrap()
    }

    async fn shut_down(self) {
        self.stop.send_replace(true);
        let done = tokio::time::timeout(PATIENCE, self.task).await;
        assert!(
            matches!(done, Ok(Ok(Ok(())))),
            "serve_tls must return Ok after shutdown"
        );
    }
}

fn connector(trusted: &CertificateDer<'static>, tls12_only: bool) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn tls_round_trip_frames_like_tcp_over_tls13_and_tls12() {
    let server = Server::start().await;
    server
        .send(&connector(&server.cert_der, false), b"hello\n5 worldtail")
        .await;
    server
        .sink
        .wait_until(PATIENCE, "3 messages", |s| s.count() == 3)
        .await;
    server
        .send(&connector(&server.cert_der, true), b"over tls 1.2\n")
        .await;
    server
        .sink
        .wait_until(PATIENCE, "4 messages", |s| s.count() == 4)
        .await;
    assert_eq!(
        server.sink.texts(),
        ["hello", "world", "tail", "over tls 1.2"]
    );
    assert_eq!(server.sink.messages.lock().unwrap()[0].host, "127.0.0.1");
    assert_eq!(server.counters.snapshot().tls_handshake_failures, 0);
    server.shut_down().await;
}

#[tokio::test]
async fn client_that_never_handshakes_does_not_block_a_good_client() {
    let server = Server::start().await;
    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let counters = server.counters.clone();
    wait_for(PATIENCE, "the silent client accepted", || {
        counters.snapshot().connections_open == 1
    })
    .await;
    let good_client = connector(&server.cert_der, false);
    let good = tokio::time::timeout(Duration::from_secs(3), server.send(&good_client, b"ok\n"));
    assert!(
        good.await.is_ok(),
        "the good client's handshake must not wait"
    );
    server
        .sink
        .wait_until(Duration::from_secs(3), "the good message", |s| {
            s.count() == 1
        })
        .await;
    let only_silent_left = |_: &RecordingSink| counters.snapshot().connections_open == 1;
    server
        .sink
        .wait_until(PATIENCE, "the good client's close", only_silent_left)
        .await;
    assert_eq!(
        counters.snapshot().tls_handshake_failures,
        0,
        "the silent one waits"
    );
    server.shut_down().await;
}

#[tokio::test]
async fn plain_text_on_a_tls_port_is_closed_and_counted_as_not_tls() {
    let server = Server::start().await;
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"<13>not tls at all\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the listener closes the connection");
    let s = server.counters.snapshot();
    assert_eq!((s.tls_not_tls, s.tls_handshake_failures), (1, 0));
    assert_eq!(server.sink.count(), 0);
    server.shut_down().await;
}

#[tokio::test]
async fn first_frames_of_a_new_sender_carry_its_name_while_a_known_sender_goes_on() {
    let gate = GatedLookup::new();
    let names = gate.resolver("127.0.0.2".parse().unwrap(), PATIENCE);
    let known = names.host_waiting("127.0.0.1".parse().unwrap()).await;
    assert_eq!(&*known.host, "fast.example");
    let server = Server::start_named(names).await;
    let client = connector(&server.cert_der, false);
    let mut slow = server.connect_from("127.0.0.2", &client).await;
    slow.write_all(b"slow first\n").await.unwrap();
    let counters = server.counters.clone();
    wait_for(PATIENCE, "the slow frame", || {
        counters.snapshot().received == 1
    })
    .await;
    server.send(&client, b"known\n").await;
    assert_known_first_then_named(&server.sink, &gate, &counters, PATIENCE).await;
    drop(slow);
    server.shut_down().await;
}

/// Rules with a short timeout, for the tests that wait it out.
fn quick(timeout_secs: u64, max_in_progress: u32) -> TlsHandshake {
    TlsHandshake {
        timeout_secs,
        max_in_progress,
        ..TlsHandshake::default()
    }
}

#[tokio::test]
async fn a_client_silent_longer_than_the_handshake_timeout_is_still_served() {
    let names = Arc::new(Resolver::new(false));
    let server = Server::start_with(names, quick(1, 16), None).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    // Silent for twice the handshake timeout: nothing may close it.
    let mut probe = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(2_200), tcp.peek(&mut probe)).await;
    assert!(
        early.is_err(),
        "the listener closed a silent connection: {early:?}"
    );
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let client = connector(&server.cert_der, false);
    let mut tls = client.connect(name, tcp).await.expect("late handshake");
    tls.write_all(b"spoke late\n").await.unwrap();
    tls.shutdown().await.unwrap();
    server
        .sink
        .wait_until(PATIENCE, "the late message", |s| s.count() == 1)
        .await;
    assert_eq!(server.sink.texts(), ["spoke late"]);
    assert_eq!(server.counters.snapshot().tls_handshake_failures, 0);
    server.shut_down().await;
}

#[tokio::test]
async fn a_short_plain_line_is_refused_at_once_without_waiting_for_more() {
    let names = Arc::new(Resolver::new(false));
    let server = Server::start_with(names, quick(30, 16), None).await;
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"hi\n").await.unwrap(); // fewer bytes than a record header
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut rest));
    assert!(
        closed.await.is_ok(),
        "refused at once, not at the 30 s timeout"
    );
    let s = server.counters.snapshot();
    assert_eq!((s.tls_not_tls, s.tls_handshake_failures), (1, 0));
    server.shut_down().await;
}

#[tokio::test]
async fn a_handshake_begun_and_not_finished_times_out_from_the_first_byte() {
    let names = Arc::new(Resolver::new(false));
    let server = Server::start_with(names, quick(1, 16), None).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&[22, 3, 1]).await.unwrap(); // a record header, cut short
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "closed after the handshake timeout");
    let counters = server.counters.clone();
    wait_for(PATIENCE, "the timeout counted", || {
        counters.snapshot().tls_handshake_failures == 1
    })
    .await;
    server.shut_down().await;
}

#[tokio::test]
async fn a_connection_closed_before_any_byte_is_not_a_handshake_failure() {
    let server = Server::start().await;
    drop(TcpStream::connect(server.addr).await.unwrap());
    let counters = server.counters.clone();
    wait_for(PATIENCE, "the early close counted", || {
        counters.snapshot().tls_closed_before_hello == 1
    })
    .await;
    assert_eq!(counters.snapshot().tls_handshake_failures, 0);
    server.shut_down().await;
}

/// A TLS 1.0-only ClientHello, as `openssl s_client -tls1` writes it (trimmed).
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![1, 0, 0, 0, 3, 1];
    body.extend_from_slice(&[9; 32]);
    body.extend_from_slice(&[0, 0, 4, 0x00, 0x2f, 0x00, 0x35, 1, 0]);
    let len = u32::try_from(body.len() - 4).unwrap().to_be_bytes();
    body[1..4].copy_from_slice(&len[1..]);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&body);
    record
}

#[tokio::test]
async fn a_tls10_only_client_gets_the_protocol_version_alert() {
    let server = Server::start().await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&tls10_client_hello()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the listener closes")
        .unwrap();
    assert_eq!(answer, [21, 3, 1, 0, 2, 2, 70], "fatal protocol_version");
    let s = server.counters.snapshot();
    assert_eq!((s.tls_handshake_failures, s.tls_not_tls), (1, 0));
    server.shut_down().await;
}

#[tokio::test]
async fn handshakes_beyond_the_limit_are_refused_and_counted() {
    let names = Arc::new(Resolver::new(false));
    let server = Server::start_with(names, quick(10, 1), None).await;
    let mut holder = TcpStream::connect(server.addr).await.unwrap();
    holder.write_all(&[22]).await.unwrap(); // holds the only slot once its byte is seen
    let counters = server.counters.clone();
    // Until the holder's byte was seen, a second client may still get the slot (and its
    // TLS 1.0 hello the alert): try again until one is refused for the limit.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut second = TcpStream::connect(server.addr).await.unwrap();
        second.write_all(&tls10_client_hello()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, second.read_to_end(&mut answer)).await;
        if counters.snapshot().tls_handshakes_over_limit == 1 {
            assert!(answer.is_empty(), "refused before any TLS answer");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused for the limit"
        );
    }
    let failures_before = counters.snapshot().tls_handshake_failures;
    drop(holder);
    let client = connector(&server.cert_der, false);
    wait_for(PATIENCE, "the slot given back", || {
        counters.snapshot().tls_handshake_failures == failures_before + 1
    })
    .await;
    server.send(&client, b"after\n").await;
    server
        .sink
        .wait_until(PATIENCE, "the next client served", |s| s.count() == 1)
        .await;
    server.shut_down().await;
}
