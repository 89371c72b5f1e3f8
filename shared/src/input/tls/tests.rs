//! TLS identity loading and TLS listener behaviours on 127.0.0.1:0.
//!
//! Keys in the two legacy PEM forms operators have (`BEGIN RSA PRIVATE KEY`, PKCS#1, and
//! `BEGIN EC PRIVATE KEY`, SEC1) are made at run time with the `openssl` command, as the
//! reference's documentation tells users to; PKCS#8 keys come from rcgen.

use super::*;
use crate::input::testing::{wait_for, GatedLookup, RecordingSink};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
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

#[test]
fn pkcs8_rsa_pkcs1_and_sec1_ec_keys_load() {
    let id = rcgen_identity();
    assert!(load_server_tls(&id.key, &id.cert).is_ok(), "PKCS#8 (rcgen)");
    let (_dir, key, cert) = openssl_identity(Legacy::RsaPkcs1);
    let rsa = load_server_tls(&key, &cert);
    assert!(rsa.is_ok(), "RSA PKCS#1: {:?}", rsa.err());
    let (_dir, key, cert) = openssl_identity(Legacy::EcSec1);
    let ec = load_server_tls(&key, &cert);
    assert!(ec.is_ok(), "EC SEC1: {:?}", ec.err());
}

#[test]
fn bad_identity_files_are_named_in_the_error() {
    let id = rcgen_identity();
    let missing = id.key.with_file_name("absent.key");
    let err = load_server_tls(&missing, &id.cert).unwrap_err();
    assert!(matches!(err, InputError::ReadTlsFile { what: "key", .. }));
    assert!(err.to_string().contains("absent.key"), "{err}");

    let err = load_server_tls(&id.key, &id.key).unwrap_err();
    assert!(matches!(err, InputError::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("server.key"), "{err}");

    let err = load_server_tls(&id.cert, &id.cert).unwrap_err();
    assert!(matches!(err, InputError::NoPrivateKey { .. }), "{err}");

    let (_dir, ec_key, _) = openssl_identity(Legacy::EcSec1);
    let err = load_server_tls(&ec_key, &id.cert).unwrap_err();
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
        let id = rcgen_identity();
        let config = Arc::new(load_server_tls(&id.key, &id.cert).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = RecordingSink::new();
        let counters = Arc::new(InputCounters::new());
        let (stop, shutdown) = watch::channel(false);
        let serve = serve_tls(
            listener,
            config,
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
async fn failed_handshake_is_counted() {
    let server = Server::start().await;
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"<13>not tls at all\n").await.unwrap();
    let counters = server.counters.clone();
    let failed = |_: &RecordingSink| counters.snapshot().tls_handshake_failures == 1;
    server
        .sink
        .wait_until(PATIENCE, "the handshake failure", failed)
        .await;
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
    let sink = &server.sink;
    sink.wait_until(PATIENCE, "the known sender's message", |s| s.count() == 1)
        .await;
    assert_eq!(sink.texts(), ["known"]);
    assert!(
        !gate.answered(),
        "delivered before the slow lookup answered"
    );
    gate.open();
    sink.wait_until(PATIENCE, "the slow sender's message", |s| s.count() == 2)
        .await;
    let messages = sink.messages.lock().unwrap().clone();
    assert_eq!(messages[0].host, "fast.example");
    assert_eq!(messages[1].bytes, b"slow first");
    assert_eq!(
        messages[1].host, "slow.example",
        "the first event has the name"
    );
    assert_eq!(counters.snapshot().resolve_timeouts, 0);
    drop(slow);
    server.shut_down().await;
}
