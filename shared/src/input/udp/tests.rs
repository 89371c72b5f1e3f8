//! UDP listener behaviours on 127.0.0.1:0 with a recording sink.

use super::*;
use crate::input::testing::RecordingSink;
use std::time::Duration;
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    counters: Arc<InputCounters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), InputError>>,
}

fn start(sink: Arc<RecordingSink>) -> Server {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let counters = Arc::new(InputCounters::new());
    let (stop, shutdown) = watch::channel(false);
    let names = Arc::new(Resolver::new(false));
    let task = tokio::spawn(serve_udp(socket, sink, names, counters.clone(), shutdown));
    Server {
        addr,
        counters,
        stop,
        task,
    }
}

async fn shut_down(server: Server) {
    server.stop.send_replace(true);
    let done = tokio::time::timeout(PATIENCE, server.task).await;
    assert!(
        matches!(done, Ok(Ok(Ok(())))),
        "serve_udp must return Ok after shutdown"
    );
}

#[tokio::test]
async fn each_datagram_is_one_message_with_one_trailing_lf_dropped() {
    let sink = RecordingSink::new();
    let server = start(sink.clone());
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for datagram in [
        &b"plain"[..],
        b"with lf\n",
        b"",
        b"\n",
        b"two lf\n\n",
        b"a\nb",
        // Read after the others (one socket, in order): once it is in, nothing else comes.
        b"end",
    ] {
        client.send_to(datagram, server.addr).unwrap();
    }
    sink.wait_until(PATIENCE, "the last datagram", |s| {
        s.texts().last().is_some_and(|t| t == "end")
    })
    .await;
    assert_eq!(
        sink.texts(),
        ["plain", "with lf", "two lf\n", "a\nb", "end"]
    );
    let first = sink.messages.lock().unwrap()[0].clone();
    assert_eq!(first.host, "127.0.0.1");
    assert_eq!(first.peer, client.local_addr().unwrap());
    let counters = server.counters.snapshot();
    assert_eq!(counters.received, 5);
    assert_eq!(counters.dropped_full, 0);
    shut_down(server).await;
}

#[tokio::test]
async fn full_sink_drops_and_counts_datagrams() {
    let sink = RecordingSink::with_room(2);
    let server = start(sink.clone());
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..5 {
        client
            .send_to(format!("m{n}").as_bytes(), server.addr)
            .unwrap();
    }
    let counters = server.counters.clone();
    let all_seen = |_: &RecordingSink| counters.snapshot().received == 5;
    sink.wait_until(PATIENCE, "5 datagrams", all_seen).await;
    assert_eq!(sink.texts(), ["m0", "m1"]);
    assert_eq!(counters.snapshot().dropped_full, 3);
    shut_down(server).await;
}

#[tokio::test]
async fn datagrams_of_one_burst_are_delivered_in_batches() {
    let sink = RecordingSink::new();
    let server = start(sink.clone());
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Sent before the server task first polls the socket: one burst.
    for n in 0..200 {
        client
            .send_to(format!("burst {n}").as_bytes(), server.addr)
            .unwrap();
    }
    sink.wait_until(PATIENCE, "200 messages", |s| s.count() == 200)
        .await;
    let want: Vec<String> = (0..200).map(|n| format!("burst {n}")).collect();
    assert_eq!(sink.texts(), want);
    let calls = sink.calls.lock().unwrap().clone();
    assert!(calls.len() < 200, "batched: {calls:?}");
    assert!(calls.iter().all(|&n| n <= BATCH_DATAGRAMS));
    shut_down(server).await;
}

#[tokio::test]
async fn largest_datagrams_and_several_senders_in_one_batch_arrive_whole_and_attributed() {
    let sink = RecordingSink::new();
    let server = start(sink.clone());
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    // The largest IPv4 UDP payload, between small ones, from two senders, in one burst.
    let big = vec![b'x'; 65_507];
    a.send_to(b"a0", server.addr).unwrap();
    a.send_to(&big, server.addr).unwrap();
    b.send_to(b"b0", server.addr).unwrap();
    a.send_to(b"a1", server.addr).unwrap();
    sink.wait_until(PATIENCE, "4 messages", |s| s.count() == 4)
        .await;
    let messages = sink.messages.lock().unwrap().clone();
    let got: Vec<(SocketAddr, usize)> = messages.iter().map(|m| (m.peer, m.bytes.len())).collect();
    let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    assert_eq!(
        got,
        [(pa, 2), (pa, MAX_MESSAGE.min(65_507)), (pb, 2), (pa, 2)]
    );
    assert_eq!(messages[2].host, "127.0.0.2");
    assert_eq!(server.counters.snapshot().bytes_received, 65_507 + 6);
    shut_down(server).await;
}

#[tokio::test]
async fn ipv6_senders_are_received() {
    // A host without an IPv6 loopback fails here rather than passing without a check:
    // skip it there by name (`-- --skip ipv6_senders_are_received`).
    let socket = std::net::UdpSocket::bind("[::1]:0").expect("this test needs an IPv6 loopback");
    let addr = socket.local_addr().unwrap();
    let sink = RecordingSink::new();
    let counters = Arc::new(InputCounters::new());
    let (stop, shutdown) = watch::channel(false);
    let names = Arc::new(Resolver::new(false));
    let task = tokio::spawn(serve_udp(
        socket,
        sink.clone(),
        names,
        counters.clone(),
        shutdown,
    ));
    let client = std::net::UdpSocket::bind("[::1]:0").unwrap();
    client.send_to(b"over v6", addr).unwrap();
    sink.wait_until(PATIENCE, "1 message", |s| s.count() == 1)
        .await;
    let first = sink.messages.lock().unwrap()[0].clone();
    assert_eq!(first.peer, client.local_addr().unwrap());
    assert_eq!(first.bytes, b"over v6");
    shut_down(Server {
        addr,
        counters,
        stop,
        task,
    })
    .await;
}

#[test]
fn oversize_datagram_is_truncated() {
    let mut datagram = vec![b'u'; MAX_MESSAGE + 10];
    datagram.push(b'\n');
    let frame = datagram_frame(&datagram).unwrap();
    assert_eq!(frame.bytes.len(), MAX_MESSAGE);
    assert!(frame.truncated);
    let exact = vec![b'e'; MAX_MESSAGE];
    assert!(!datagram_frame(&exact).unwrap().truncated);
    assert!(datagram_frame(b"").is_none());
    assert!(datagram_frame(b"\n").is_none());
}
