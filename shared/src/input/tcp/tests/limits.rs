//! Hostile clients against one listener: the fair budget, timeouts, connection limits and
//! the allow-list.

use super::*;
use crate::input::SourceFilter;
use tokio::io::AsyncReadExt;

/// Waits until the server closed `client` (a read gives end of stream or an error).
async fn closed_by_server(client: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(PATIENCE, client.read(&mut byte)).await;
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

/// Connects from `local` and sends `bytes` without an end, keeping the connection open.
async fn hold(local: &str, addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut client = connect_from(local, addr).await;
    client.write_all(bytes).await.unwrap();
    client
}

#[tokio::test]
async fn honest_sender_is_served_while_others_hold_the_whole_budget() {
    let budget = ReadBudget::with_grace(1 << 20, Duration::from_millis(200));
    let server = Server::start(RecordingSink::new(), budget.clone()).await;
    let mut hostile = Vec::new();
    for _ in 0..12 {
        hostile.push(hold("127.0.0.1", server.addr, &vec![b'x'; 150_000]).await);
    }
    let counters = server.counters.clone();
    wait_for(PATIENCE, "the hostile bytes read", || {
        counters.snapshot().bytes_received >= 1 << 20
    })
    .await;
    let mut honest = connect_from("127.0.0.1", server.addr).await;
    let mut lines = String::new();
    for n in 0..1000 {
        lines.push_str(&format!("honest event seq={n}\n"));
    }
    honest.write_all(lines.as_bytes()).await.unwrap();
    server
        .sink
        .wait_until(PATIENCE, "every honest event", |s| s.count() == 1000)
        .await;
    assert!(budget.in_use() <= budget.cap(), "the cap is never passed");
    // Hostile holders that wait shed larger hostile holders; the honest one is never shed.
    honest.write_all(b"still open seq=1000\n").await.unwrap();
    server
        .sink
        .wait_until(PATIENCE, "the honest connection still served", |s| {
            s.count() == 1001
        })
        .await;
    drop(hostile);
    server.shut_down().await;
}

#[tokio::test]
async fn a_large_honest_frame_sheds_the_largest_holder_when_the_budget_is_full() {
    let budget = ReadBudget::with_grace(1 << 20, Duration::from_millis(200));
    let server = Server::start(RecordingSink::new(), budget.clone()).await;
    let mut hostile = Vec::new();
    for _ in 0..6 {
        hostile.push(hold("127.0.0.1", server.addr, &vec![b'x'; 250_000]).await);
    }
    let mut big = vec![b'h'; 100_000];
    big.push(b'\n');
    send_and_close(server.addr, &big).await;
    server
        .sink
        .wait_until(PATIENCE, "the honest large message", |s| s.count() == 1)
        .await;
    assert_eq!(server.sink.messages.lock().unwrap()[0].bytes.len(), 100_000);
    let shed = server.counters.snapshot().shed_budget;
    assert!(shed >= 1, "a hostile holder was shed ({shed})");
    assert!(budget.in_use() <= budget.cap());
    let mut closed = 0;
    for client in &mut hostile {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(100), client.read(&mut byte));
        if matches!(read.await, Ok(Ok(0)) | Ok(Err(_))) {
            closed += 1;
        }
    }
    assert!(closed >= 1, "shed connections are closed");
    server.shut_down().await;
}

#[tokio::test]
async fn a_frame_not_finished_in_time_is_discarded_and_counted() {
    let server = Server::limited(IntakeLimits {
        partial_frame_timeout_secs: 1,
        ..IntakeLimits::default()
    })
    .await;
    let mut client = hold("127.0.0.1", server.addr, b"complete\nunfinished").await;
    assert!(closed_by_server(&mut client).await);
    let s = server.counters.snapshot();
    assert_eq!((s.partial_frame_timeouts, s.idle_timeouts), (1, 0));
    let sink = server.shut_down().await;
    assert_eq!(
        sink.texts(),
        strings(&["complete"]),
        "the start is discarded"
    );
}

#[tokio::test]
async fn a_steady_sender_never_hits_the_partial_frame_timeout() {
    let server = Server::limited(IntakeLimits {
        partial_frame_timeout_secs: 1,
        ..IntakeLimits::default()
    })
    .await;
    let mut client = connect_from("127.0.0.1", server.addr).await;
    // Every read ends inside a frame, but each frame is finished well within the timeout.
    for n in 0..15 {
        client
            .write_all(format!("line {n}\nli").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"ne end\n").await.unwrap();
    }
    let sink = server.sink.clone();
    sink.wait_until(PATIENCE, "30 lines", |s| s.count() == 30)
        .await;
    assert_eq!(server.counters.snapshot().partial_frame_timeouts, 0);
    drop(client);
    server.shut_down().await;
}

#[tokio::test]
async fn idle_timeout_closes_silent_connections_only_when_set() {
    let server = Server::limited(IntakeLimits {
        idle_timeout_secs: Some(1),
        ..IntakeLimits::default()
    })
    .await;
    let mut client = hold("127.0.0.1", server.addr, b"hello\n").await;
    assert!(closed_by_server(&mut client).await);
    assert_eq!(server.counters.snapshot().idle_timeouts, 1);
    let sink = server.shut_down().await;
    assert_eq!(sink.texts(), strings(&["hello"]));
}

#[tokio::test]
async fn connections_beyond_the_per_source_limit_are_refused_and_counted() {
    let server = Server::limited(IntakeLimits {
        max_connections: 3,
        max_connections_per_source: 2,
        ..IntakeLimits::default()
    })
    .await;
    let counters = server.counters.clone();
    let a = hold("127.0.0.1", server.addr, b"a1\n").await;
    let b = hold("127.0.0.1", server.addr, b"a2\n").await;
    wait_for(PATIENCE, "two connections", || {
        counters.snapshot().connections_open == 2
    })
    .await;
    let mut third = hold("127.0.0.1", server.addr, b"a3\n").await;
    assert!(closed_by_server(&mut third).await);
    let other = hold("127.0.0.2", server.addr, b"b1\n").await;
    let mut fourth = hold("127.0.0.3", server.addr, b"c1\n").await;
    assert!(closed_by_server(&mut fourth).await, "the intake is full");
    server
        .sink
        .wait_until(PATIENCE, "three messages", |s| s.count() == 3)
        .await;
    let s = counters.snapshot();
    assert_eq!((s.refused_source_full, s.refused_intake_full), (1, 1));
    assert_eq!(
        s.connections_total, 3,
        "refused connections were never served"
    );
    let mut texts = server.sink.texts();
    texts.sort();
    assert_eq!(texts, strings(&["a1", "a2", "b1"]));
    drop((a, b, other));
    server.shut_down().await;
}

#[tokio::test]
async fn senders_outside_allowed_sources_are_refused_before_a_byte_is_read() {
    let net = "127.0.0.1/32".parse().unwrap();
    let server = Server::limited(IntakeLimits {
        allowed_sources: SourceFilter::new(vec![net]),
        ..IntakeLimits::default()
    })
    .await;
    let mut refused = hold("127.0.0.2", server.addr, b"from elsewhere\n").await;
    assert!(closed_by_server(&mut refused).await);
    send_and_close(server.addr, b"allowed\n").await;
    server
        .sink
        .wait_until(PATIENCE, "the allowed message", |s| s.count() == 1)
        .await;
    let s = server.counters.snapshot();
    assert_eq!((s.refused_source, s.bytes_received), (1, 8));
    let sink = server.shut_down().await;
    assert_eq!(sink.texts(), strings(&["allowed"]));
}

#[tokio::test]
async fn an_endless_line_sent_at_full_speed_still_hits_the_partial_frame_timeout() {
    let server = Server::limited(IntakeLimits {
        partial_frame_timeout_secs: 1,
        ..IntakeLimits::default()
    })
    .await;
    let mut client = connect_from("127.0.0.1", server.addr).await;
    let chunk = vec![b'z'; 64 << 10];
    let started = std::time::Instant::now();
    // Writes fail once the server closed the connection.
    let mut sent = 0usize;
    while client.write_all(&chunk).await.is_ok() {
        sent += chunk.len();
        assert!(
            started.elapsed() < PATIENCE,
            "still open after {sent} bytes"
        );
    }
    let s = server.counters.snapshot();
    assert_eq!(s.partial_frame_timeouts, 1);
    assert_eq!(
        s.truncated, 1,
        "the line's first 256000 bytes were delivered, truncated"
    );
    server.shut_down().await;
}

#[tokio::test]
async fn a_connection_gives_its_buffer_back_when_it_falls_idle() {
    let budget = ReadBudget::new(DEFAULT_READ_BUDGET);
    let server = Server::start(RecordingSink::new(), budget.clone()).await;
    let mut line = vec![b'q'; 100_000];
    line.push(b'\n');
    let client = hold("127.0.0.1", server.addr, &line).await;
    server
        .sink
        .wait_until(PATIENCE, "the large message", |s| s.count() == 1)
        .await;
    let sink = server.sink.clone();
    sink.wait_until(
        PATIENCE,
        "the lease given back while still connected",
        |_| budget.in_use() == 0,
    )
    .await;
    assert_eq!(server.counters.snapshot().connections_open, 1);
    drop(client);
    server.shut_down().await;
}

#[tokio::test]
async fn back_pressure_from_a_full_queue_does_not_count_against_the_partial_frame_timeout() {
    let sink = RecordingSink::with_room(0);
    let options = ListenerOptions::new(IntakeLimits {
        partial_frame_timeout_secs: 1,
        ..IntakeLimits::default()
    });
    let server = Server::start_with(sink.clone(), options, Arc::new(Resolver::new(false))).await;
    let mut client = hold("127.0.0.1", server.addr, b"first\nsecond half").await;
    let counters = server.counters.clone();
    wait_for(PATIENCE, "the first frame offered", || {
        counters.snapshot().received == 1
    })
    .await;
    // The queue stays full for twice the timeout while "second half" waits unfinished.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    sink.set_room(usize::MAX);
    client.write_all(b" done\n").await.unwrap();
    sink.wait_until(PATIENCE, "both lines", |s| s.count() == 2)
        .await;
    assert_eq!(sink.texts(), strings(&["first", "second half done"]));
    assert_eq!(counters.snapshot().partial_frame_timeouts, 0);
    drop(client);
    server.shut_down().await;
}
