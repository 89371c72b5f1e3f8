//! The reader on a stream (exactly the header, time bounds, truncation) and the listener
//! behind a balancer on 127.0.0.1:0.

use super::*;
use crate::config::IntakeLimits;
use crate::input::testing::{wait_for, GatedLookup, RecordingSink};
use crate::input::{serve_tcp_with, InputCounters, InputError, ListenerOptions, Resolver};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(10);
const FOREVER: Duration = Duration::from_secs(3600);

/// Reads one header from a stream holding `bytes`, then returns what is left after it.
async fn read_then_rest(bytes: &[u8]) -> (Outcome, Vec<u8>) {
    let (mut ours, mut theirs) = tokio::io::duplex(1024);
    theirs.write_all(bytes).await.unwrap();
    drop(theirs);
    let outcome = read_header(&mut ours, None, FOREVER).await;
    let mut rest = Vec::new();
    ours.read_to_end(&mut rest).await.unwrap();
    (outcome, rest)
}

#[tokio::test]
async fn exactly_the_header_is_read_and_the_rest_stays_in_the_stream() {
    let v1 = b"PROXY TCP4 192.0.2.10 10.0.0.1 51234 20516\r\n<13>one\n".to_vec();
    let mut v2_then_tls = v2(0x21, 0x11, &v2_ipv4_block());
    v2_then_tls.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x05]);
    for (bytes, rest) in [
        (&v1[..], &b"<13>one\n"[..]),
        (&v2_then_tls, &[0x16, 0x03, 0x01, 0x00, 0x05]),
    ] {
        let (outcome, left) = read_then_rest(bytes).await;
        let want = Proxied::Client(addr("192.0.2.10:51234"));
        assert!(
            matches!(outcome, Outcome::Header(p) if p == want),
            "{outcome:?}"
        );
        assert_eq!(left, rest);
    }
    let (outcome, left) = read_then_rest(b"PROXY UNKNOWN\r\nPROXY UNKNOWN\r\n").await;
    assert!(
        matches!(outcome, Outcome::Header(Proxied::Own)),
        "{outcome:?}"
    );
    assert_eq!(left, b"PROXY UNKNOWN\r\n");
}

#[tokio::test]
async fn a_header_arriving_byte_by_byte_is_still_read() {
    let (mut ours, mut theirs) = tokio::io::duplex(1024);
    let writer = tokio::spawn(async move {
        for b in b"PROXY TCP6 2001:db8::7 2001:db8::1 600 514\r\nrest" {
            theirs.write_all(&[*b]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        theirs
    });
    let outcome = read_header(&mut ours, None, PATIENCE).await;
    assert!(
        matches!(outcome, Outcome::Header(Proxied::Client(a)) if a == addr("[2001:db8::7]:600")),
        "{outcome:?}"
    );
    drop(writer.await.unwrap());
    let mut rest = Vec::new();
    ours.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"rest");
}

#[tokio::test]
async fn a_connection_closed_inside_the_header_is_truncated() {
    let header = v2(0x21, 0x21, &v2_ipv6_block());
    for cut in [3, 12, 20] {
        let (outcome, _) = read_then_rest(&header[..cut]).await;
        assert!(
            matches!(outcome, Outcome::Rejected(Malformed::Truncated(n)) if n == cut),
            "{cut}: {outcome:?}"
        );
    }
    let (outcome, _) = read_then_rest(b"PROXY TCP4 1.2.3.4").await;
    assert!(
        matches!(outcome, Outcome::Rejected(Malformed::Truncated(18))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn closed_before_any_byte_is_not_a_refusal() {
    let (outcome, _) = read_then_rest(b"").await;
    assert!(matches!(outcome, Outcome::ClosedFirst), "{outcome:?}");
}

#[tokio::test]
async fn a_slow_header_times_out_from_its_first_byte() {
    let (mut ours, mut theirs) = tokio::io::duplex(1024);
    theirs.write_all(b"PROXY TCP4 ").await.unwrap();
    let limit = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let outcome = read_header(&mut ours, None, limit).await;
    assert!(
        matches!(outcome, Outcome::Rejected(Malformed::TimedOut(d)) if d == limit),
        "{outcome:?}"
    );
    assert!(started.elapsed() >= limit);
    assert!(Malformed::TimedOut(Duration::from_secs(60))
        .to_string()
        .contains("within 60s of its first byte (partial_frame_timeout)"));
    drop(theirs);
}

#[tokio::test]
async fn silence_before_the_first_byte_is_idle_not_a_header_timeout() {
    let (mut ours, theirs) = tokio::io::duplex(1024);
    let waited = tokio::time::timeout(
        Duration::from_millis(300),
        read_header(&mut ours, None, Duration::from_millis(50)),
    )
    .await;
    assert!(
        waited.is_err(),
        "without idle_timeout a silent connection waits: {waited:?}"
    );
    let outcome = read_header(&mut ours, Some(Duration::from_millis(100)), FOREVER).await;
    assert!(matches!(outcome, Outcome::Idle), "{outcome:?}");
    drop(theirs);
}

// --- The listener behind a balancer -------------------------------------------------------

struct Server {
    addr: SocketAddr,
    sink: Arc<RecordingSink>,
    counters: Arc<InputCounters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), InputError>>,
}

impl Server {
    fn start(limits: IntakeLimits) -> Self {
        Self::start_named(limits, Arc::new(Resolver::new(false)))
    }

    fn start_named(limits: IntakeLimits, names: Arc<Resolver>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (sink, counters) = (RecordingSink::new(), Arc::new(InputCounters::new()));
        let (stop, shutdown) = watch::channel(false);
        let options = ListenerOptions::new(IntakeLimits {
            proxy_protocol: true,
            ..limits
        });
        let serve = serve_tcp_with(
            listener,
            sink.clone(),
            names,
            counters.clone(),
            shutdown,
            options,
        );
        let task = tokio::spawn(serve);
        Self {
            addr,
            sink,
            counters,
            stop,
            task,
        }
    }

    async fn shut_down(self) {
        self.stop.send_replace(true);
        let done = tokio::time::timeout(PATIENCE, self.task).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "listener stops: {done:?}");
    }
}

/// Whether the server closed `conn` (reads end; a reset counts as closed).
async fn closed_by_server(conn: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(PATIENCE, conn.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn events_carry_the_sender_the_header_names_and_a_headerless_connection_is_closed_and_counted(
) {
    let server = Server::start(IntakeLimits::default());
    let mut relayed = TcpStream::connect(server.addr).await.unwrap();
    let mut header = v2(0x21, 0x11, &v2_ipv4_block());
    header.extend_from_slice(b"<13>first\n");
    relayed.write_all(&header).await.unwrap();
    let mut bypass = TcpStream::connect(server.addr).await.unwrap();
    bypass.write_all(b"<13>no header\n").await.unwrap();
    assert!(
        closed_by_server(&mut bypass).await,
        "a connection without header is closed"
    );
    relayed.write_all(b"<13>second\n").await.unwrap();
    let sink = &server.sink;
    sink.wait_until(PATIENCE, "both relayed messages", |s| s.count() == 2)
        .await;
    let messages = sink.messages.lock().unwrap().clone();
    for m in &messages {
        assert_eq!(m.peer, addr("192.0.2.10:51234"));
        assert_eq!(m.host, "192.0.2.10", "the sender's, not the balancer's");
    }
    assert_eq!(sink.texts(), ["<13>first", "<13>second"]);
    let s = server.counters.snapshot();
    assert_eq!((s.proxy_header_rejected, s.received), (1, 2));
    let mut check = TcpStream::connect(server.addr).await.unwrap();
    check.write_all(&v2(0x20, 0x00, &[])).await.unwrap();
    check
        .write_all(b"<13>from the balancer itself\n")
        .await
        .unwrap();
    drop(check);
    sink.wait_until(PATIENCE, "the LOCAL connection's message", |s| {
        s.count() == 3
    })
    .await;
    assert_eq!(sink.messages.lock().unwrap()[2].host, "127.0.0.1");
    drop(TcpStream::connect(server.addr).await.unwrap());
    drop(relayed);
    server.shut_down().await;
}

#[tokio::test]
async fn the_first_event_carries_the_senders_reverse_name_not_the_balancers() {
    // The balancer (127.0.0.1) is named "fast.example"; the sender the header names,
    // 127.0.0.2, answers "slow.example" only once the gate opens.
    let gate = GatedLookup::new();
    let names = gate.resolver("127.0.0.2".parse().unwrap(), PATIENCE);
    let server = Server::start_named(IntakeLimits::default(), names);
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let header = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 514\r\n<13>first\n";
    conn.write_all(header).await.unwrap();
    wait_for(PATIENCE, "the sender's lookup", || gate.asked()).await;
    assert_eq!(server.sink.count(), 0, "the first event waits for its name");
    gate.open();
    let sink = &server.sink;
    sink.wait_until(PATIENCE, "the first event", |s| s.count() == 1)
        .await;
    assert_eq!(sink.messages.lock().unwrap()[0].host, "slow.example");
    drop(conn);
    server.shut_down().await;
}

#[tokio::test]
async fn a_slow_header_is_closed_after_partial_frame_timeout_and_counted() {
    let server = Server::start(IntakeLimits {
        partial_frame_timeout_secs: 1,
        ..IntakeLimits::default()
    });
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"PROXY TCP4 192.0.2.1").await.unwrap();
    let started = std::time::Instant::now();
    assert!(closed_by_server(&mut slow).await);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let counters = server.counters.clone();
    wait_for(PATIENCE, "the count", || {
        counters.snapshot().proxy_header_rejected == 1
    })
    .await;
    server.shut_down().await;
}

#[tokio::test]
async fn the_per_source_limit_applies_to_the_senders_behind_the_balancer() {
    let server = Server::start(IntakeLimits {
        max_connections_per_source: 1,
        ..IntakeLimits::default()
    });
    let line =
        |port: u16| format!("PROXY TCP4 192.0.2.{port} 10.0.0.1 {port} 514\r\n<13>from {port}\n");
    let mut a = TcpStream::connect(server.addr).await.unwrap();
    a.write_all(line(1).as_bytes()).await.unwrap();
    let mut b = TcpStream::connect(server.addr).await.unwrap();
    b.write_all(line(2).as_bytes()).await.unwrap();
    let sink = &server.sink;
    sink.wait_until(PATIENCE, "two senders through one balancer", |s| {
        s.count() == 2
    })
    .await;
    let mut again = TcpStream::connect(server.addr).await.unwrap();
    again.write_all(line(1).as_bytes()).await.unwrap();
    assert!(
        closed_by_server(&mut again).await,
        "a second connection of sender 1"
    );
    assert_eq!(server.counters.snapshot().refused_source_full, 1);
    drop((a, b));
    server.shut_down().await;
}

#[tokio::test]
async fn on_a_tls_intake_the_header_comes_before_the_handshake() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("server.key"), dir.path().join("server.crt"));
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    let files = crate::config::TlsFiles {
        key,
        cert: cert.clone(),
        ca: cert,
        handshake: crate::config::TlsHandshake::default(),
    };
    let tls = crate::input::TlsIntake::load("Edge", &files).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = listener.local_addr().unwrap();
    let (sink, counters) = (RecordingSink::new(), Arc::new(InputCounters::new()));
    let (stop, shutdown) = watch::channel(false);
    let options = ListenerOptions::new(IntakeLimits {
        proxy_protocol: true,
        ..IntakeLimits::default()
    });
    let names = Arc::new(Resolver::new(false));
    let serve = crate::input::serve_tls_with(
        listener,
        tls,
        sink.clone(),
        names,
        counters.clone(),
        shutdown,
        options,
    );
    let task = tokio::spawn(serve);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tcp = TcpStream::connect(server_addr).await.unwrap();
    tcp.write_all(b"PROXY TCP6 2001:db8::7 2001:db8::1 600 6514\r\n")
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("handshake after the header");
    tls.write_all(b"<13>over tls\n").await.unwrap();
    tls.flush().await.unwrap();
    sink.wait_until(PATIENCE, "the TLS message", |s| s.count() == 1)
        .await;
    let m = sink.messages.lock().unwrap()[0].clone();
    assert_eq!(
        (m.peer, m.host.as_str()),
        (addr("[2001:db8::7]:600"), "2001:db8::7")
    );

    let mut no_header = TcpStream::connect(server_addr).await.unwrap();
    no_header
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05])
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut no_header).await,
        "a ClientHello without header"
    );
    let s = counters.snapshot();
    assert_eq!(
        (
            s.proxy_header_rejected,
            s.tls_not_tls,
            s.tls_handshake_failures
        ),
        (1, 0, 0)
    );
    drop(tls);
    stop.send_replace(true);
    let done = tokio::time::timeout(PATIENCE, task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
}
