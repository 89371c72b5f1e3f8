//! TCP listener behaviours on 127.0.0.1:0 with a recording sink.

use super::*;
use crate::config::IntakeLimits;
use crate::input::budget::{ReadBudget, DEFAULT_READ_BUDGET, FREE_PER_CONNECTION};
use crate::input::testing::{assert_known_first_then_named, wait_for, GatedLookup, RecordingSink};
use crate::input::{Resolver, MAX_MESSAGE};
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    sink: Arc<RecordingSink>,
    counters: Arc<InputCounters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), InputError>>,
}

impl Server {
    async fn start(sink: Arc<RecordingSink>, budget: Arc<ReadBudget>) -> Self {
        Self::start_named(sink, budget, Arc::new(Resolver::new(false))).await
    }

    async fn start_named(
        sink: Arc<RecordingSink>,
        budget: Arc<ReadBudget>,
        names: Arc<Resolver>,
    ) -> Self {
        let options = ListenerOptions::default().with_budget(budget);
        Self::start_with(sink, options, names).await
    }

    async fn limited(limits: IntakeLimits) -> Self {
        let options = ListenerOptions::new(limits);
        Self::start_with(
            RecordingSink::new(),
            options,
            Arc::new(Resolver::new(false)),
        )
        .await
    }

    async fn start_with(
        sink: Arc<RecordingSink>,
        options: ListenerOptions,
        names: Arc<Resolver>,
    ) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(InputCounters::new());
        let (stop, shutdown) = watch::channel(false);
        let serve = serve_tcp_with(
            listener,
            sink.clone(),
            names,
            counters.clone(),
            shutdown,
            options,
        );
        Self {
            addr,
            sink,
            counters,
            stop,
            task: tokio::spawn(serve),
        }
    }

    async fn plain() -> Self {
        Self::start(RecordingSink::new(), ReadBudget::new(DEFAULT_READ_BUDGET)).await
    }

    async fn shut_down(self) -> Arc<RecordingSink> {
        self.stop.send_replace(true);
        let done = tokio::time::timeout(PATIENCE, self.task).await;
        assert!(
            matches!(done, Ok(Ok(Ok(())))),
            "serve_tcp must return Ok after shutdown"
        );
        self.sink
    }
}

fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

async fn send_and_close(addr: SocketAddr, bytes: &[u8]) {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(bytes).await.unwrap();
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn lf_and_octet_counted_frames_arrive_and_partial_lf_is_a_message_at_close() {
    let server = Server::plain().await;
    send_and_close(server.addr, b"a\n\nb\n5 hello3 abctail").await;
    let sink = &server.sink;
    sink.wait_until(PATIENCE, "5 messages", |s| s.count() == 5)
        .await;
    assert_eq!(sink.texts(), strings(&["a", "b", "hello", "abc", "tail"]));
    let first = sink.messages.lock().unwrap()[0].clone();
    assert_eq!(first.host, "127.0.0.1");
    assert!(!first.truncated);
    let counters = server.counters.snapshot();
    assert_eq!(counters.received, 5);
    assert_eq!(counters.bytes_received, 21);
    server.shut_down().await;
}

#[tokio::test]
async fn partial_octet_counted_frame_at_close_is_discarded_and_counted() {
    let server = Server::plain().await;
    send_and_close(server.addr, b"one\n10 short").await;
    let counters = server.counters.clone();
    let sink = &server.sink;
    sink.wait_until(PATIENCE, "the discard", |_| {
        counters.snapshot().partial_discarded == 1
    })
    .await;
    assert_eq!(sink.texts(), strings(&["one"]));
    server.shut_down().await;
}

#[tokio::test]
async fn all_frames_of_one_read_go_to_the_sink_in_one_call() {
    let server = Server::plain().await;
    send_and_close(server.addr, b"1\n2\n3\n").await;
    server
        .sink
        .wait_until(PATIENCE, "3 messages", |s| s.count() == 3)
        .await;
    assert_eq!(*server.sink.calls.lock().unwrap(), [3]);
    server.shut_down().await;
}

#[tokio::test]
async fn oversize_line_is_truncated_once_not_split() {
    let server = Server::plain().await;
    let mut bytes = vec![b'x'; MAX_MESSAGE + 100];
    bytes.extend_from_slice(b"\nok\n");
    send_and_close(server.addr, &bytes).await;
    server
        .sink
        .wait_until(PATIENCE, "2 messages", |s| s.count() == 2)
        .await;
    let messages = server.sink.messages.lock().unwrap().clone();
    assert_eq!(messages[0].bytes.len(), MAX_MESSAGE);
    assert!(messages[0].truncated);
    assert_eq!(messages[1].bytes, b"ok");
    assert_eq!(server.counters.snapshot().truncated, 1);
    server.shut_down().await;
}

#[tokio::test]
async fn hostile_clients_do_not_delay_a_good_one() {
    let server = Server::plain().await;
    // Announces 200000 bytes, sends a few, then stalls.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(b"200000 only a little").await.unwrap();
    // Sends bytes without any LF, forever.
    let mut garbage = TcpStream::connect(server.addr).await.unwrap();
    let flood = tokio::spawn(async move {
        let chunk = vec![b'g'; 64 << 10];
        while garbage.write_all(&chunk).await.is_ok() {}
    });
    let counters = server.counters.clone();
    wait_for(PATIENCE, "both hostile clients read from", || {
        let c = counters.snapshot();
        c.connections_open == 2 && c.bytes_received > 64 << 10
    })
    .await;

    let mut good = TcpStream::connect(server.addr).await.unwrap();
    let good_addr = good.local_addr().unwrap();
    let lines: String = (0..100).map(|n| format!("good {n}\n")).collect();
    good.write_all(lines.as_bytes()).await.unwrap();
    let sink = server.sink.clone();
    let good_done = |s: &RecordingSink| s.texts_from(good_addr).len() == 100;
    sink.wait_until(
        Duration::from_secs(2),
        "the good client's messages",
        good_done,
    )
    .await;
    let want: Vec<String> = (0..100).map(|n| format!("good {n}")).collect();
    assert_eq!(sink.texts_from(good_addr), want);

    server.shut_down().await;
    flood.abort();
    let garbage_messages = sink
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.bytes.starts_with(b"gggg"))
        .count();
    assert_eq!(
        garbage_messages, 1,
        "an endless line is one truncated message"
    );
    assert_eq!(
        counters.snapshot().partial_discarded,
        1,
        "the stalled octet frame"
    );
    drop(stalled);
}

#[tokio::test]
async fn full_sink_slows_the_sender_and_loses_nothing() {
    let sink = RecordingSink::with_room(7);
    let server = Server::start(sink.clone(), ReadBudget::new(DEFAULT_READ_BUDGET)).await;
    let total = 50_000;
    let payload: String = (0..total)
        .map(|n| format!("message {n:08} {}\n", "p".repeat(80)))
        .collect();
    let size = payload.len() as u64;
    let addr = server.addr;
    let client = tokio::spawn(async move { send_and_close(addr, payload.as_bytes()).await });

    wait_for(PATIENCE, "the rest offered again", || {
        sink.calls.lock().unwrap().len() > 3
    })
    .await;
    assert_eq!(sink.count(), 7, "only what fitted was accepted");
    assert!(
        server.counters.snapshot().bytes_received < size,
        "reading stopped"
    );

    sink.set_room(usize::MAX);
    sink.wait_until(Duration::from_secs(60), "every message", |s| {
        s.count() == total
    })
    .await;
    let texts = sink.texts();
    for (n, text) in texts.iter().enumerate() {
        assert!(
            text.starts_with(&format!("message {n:08} ")),
            "message {n} out of order"
        );
    }
    assert!(client.await.is_ok());
    assert_eq!(server.counters.snapshot().dropped_full, 0);
    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_delivers_the_partial_line_and_returns() {
    let server = Server::plain().await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client.write_all(b"complete\npartial").await.unwrap();
    server
        .sink
        .wait_until(PATIENCE, "the complete line", |s| s.count() == 1)
        .await;
    let counters = server.counters.clone();
    wait_for(PATIENCE, "the partial line read", || {
        counters.snapshot().bytes_received == 16
    })
    .await;
    let sink = server.shut_down().await;
    assert_eq!(sink.texts(), strings(&["complete", "partial"]));
    assert_eq!(counters.snapshot().connections_open, 0);
    drop(client);
}

#[tokio::test]
async fn large_messages_share_a_small_budget_and_all_arrive() {
    // 4 x 184 KiB of leases do not fit in 512 KiB at once: some wait, none is shed.
    let budget = ReadBudget::new(512 << 10);
    let server = Server::start(RecordingSink::new(), budget.clone()).await;
    let mut clients = Vec::new();
    for n in 0..4u8 {
        let mut bytes = vec![b'a' + n; 200_000];
        bytes.push(b'\n');
        let addr = server.addr;
        clients.push(tokio::spawn(
            async move { send_and_close(addr, &bytes).await },
        ));
    }
    server
        .sink
        .wait_until(PATIENCE, "4 large messages", |s| s.count() == 4)
        .await;
    for client in clients {
        assert!(client.await.is_ok());
    }
    let counters = server.counters.clone();
    let sink = server.sink.clone();
    sink.wait_until(PATIENCE, "closed connections", |_| {
        counters.snapshot().connections_open == 0
    })
    .await;
    assert_eq!(budget.in_use(), 0, "leases are given back");
    assert!(sink
        .messages
        .lock()
        .unwrap()
        .iter()
        .all(|m| m.bytes.len() == 200_000));
    assert_eq!(counters.snapshot().connections_total, 4);
    assert_eq!(counters.snapshot().shed_budget, 0);
    server.shut_down().await;
}

#[tokio::test]
async fn idle_connections_hold_no_budget() {
    let budget = ReadBudget::new(DEFAULT_READ_BUDGET);
    let server = Server::start(RecordingSink::new(), budget.clone()).await;
    let mut clients = Vec::new();
    for n in 0..200 {
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        client
            .write_all(format!("idle {n}\n").as_bytes())
            .await
            .unwrap();
        clients.push(client);
    }
    server
        .sink
        .wait_until(PATIENCE, "200 messages", |s| s.count() == 200)
        .await;
    assert_eq!(server.counters.snapshot().connections_open, 200);
    assert_eq!(
        budget.in_use(),
        0,
        "small reads use only the free allowance"
    );
    server.shut_down().await;
    drop(clients);
}

#[test]
fn read_window_grows_while_reads_fill_it_and_shrinks_when_idle() {
    let base = FREE_PER_CONNECTION;
    assert_eq!(next_window(base, base, base), 2 * base);
    assert_eq!(next_window(MAX_WINDOW, MAX_WINDOW, MAX_WINDOW), MAX_WINDOW);
    assert_eq!(next_window(MAX_WINDOW, 10, MAX_WINDOW), MAX_WINDOW / 2);
    assert_eq!(next_window(base, 10, base), base);
}

/// A connection from `local` (any 127.0.0.0/8 address works on loopback).
async fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

const SLOW: &str = "127.0.0.2";

#[tokio::test]
async fn first_frames_of_a_new_sender_carry_its_name_while_a_known_sender_goes_on() {
    let gate = GatedLookup::new();
    let names = gate.resolver(SLOW.parse().unwrap(), PATIENCE);
    let known = names.host_waiting("127.0.0.1".parse().unwrap()).await;
    assert_eq!(&*known.host, "fast.example");
    let budget = ReadBudget::new(DEFAULT_READ_BUDGET);
    let server = Server::start_named(RecordingSink::new(), budget, names).await;
    let mut slow = connect_from(SLOW, server.addr).await;
    slow.write_all(b"slow first\n").await.unwrap();
    let counters = server.counters.clone();
    wait_for(PATIENCE, "the slow frame", || {
        counters.snapshot().received == 1
    })
    .await;
    wait_for(PATIENCE, "the slow lookup", || gate.asked()).await;
    send_and_close(server.addr, b"known\n").await;
    assert_known_first_then_named(&server.sink, &gate, &counters, PATIENCE).await;
    drop(slow);
    server.shut_down().await;
}

#[tokio::test]
async fn new_sender_whose_lookup_outlasts_the_wait_goes_out_under_its_ip_counted() {
    let gate = GatedLookup::new();
    let names = gate.resolver(SLOW.parse().unwrap(), Duration::from_millis(100));
    let budget = ReadBudget::new(DEFAULT_READ_BUDGET);
    let server = Server::start_named(RecordingSink::new(), budget, names).await;
    let mut slow = connect_from(SLOW, server.addr).await;
    slow.write_all(b"one\n").await.unwrap();
    let sink = &server.sink;
    sink.wait_until(PATIENCE, "the message", |s| s.count() == 1)
        .await;
    slow.write_all(b"two\n").await.unwrap();
    sink.wait_until(PATIENCE, "the second message", |s| s.count() == 2)
        .await;
    let messages = sink.messages.lock().unwrap().clone();
    assert_eq!(messages[0].host, SLOW);
    assert_eq!(messages[1].host, SLOW, "no second wait past the deadline");
    assert_eq!(server.counters.snapshot().resolve_timeouts, 1);
    gate.open();
    drop(slow);
    server.shut_down().await;
}

mod limits;

#[tokio::test]
async fn an_idle_connection_task_is_small() {
    // The per-connection state of docs/hostile-networks.md: the read loop's future (the
    // task adds tokio's header, the admission and the open-connection guard).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = std::net::TcpStream::connect(addr).unwrap();
    let (server, peer) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(server).unwrap();
    let names = Arc::new(Resolver::new(false));
    let counters = Arc::new(InputCounters::new());
    let shared = Listener::new(RecordingSink::new(), names, counters, Default::default());
    let (_stop, shutdown) = watch::channel(false);
    let task = read_frames(stream, peer, &shared, shutdown);
    let size = std::mem::size_of_val(&task);
    assert!(size <= 1024, "the read loop's future takes {size} bytes");
}
