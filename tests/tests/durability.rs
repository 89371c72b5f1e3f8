//! Durable queueing on real processes: outages, kill -9 of everything, SIGTERM with a
//! backlog, a destination killed mid-stream, a full disk budget, corrupt journal files.
//! Every event carries a sequence number; zero loss is the assertion, duplicates are
//! reported. Volumes are small for CI; `SEKOIA_SOAK=1` multiplies them by 20.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use sekoia_tests::events::{duplicates, sequence_counts, tail};
use sekoia_tests::forwarder::find_files;
use sekoia_tests::{
    free_port_both, free_tcp_port, wait_until, Forwarder, ForwarderBuilder, TestCerts, TlsSink,
};

const KEY: &str = "DurableIntakeKey012345";

fn scale(n: u64) -> u64 {
    if std::env::var_os("SEKOIA_SOAK").is_some() {
        n * 20
    } else {
        n
    }
}

/// Waits until every number of `0..n` arrived; returns the counts and the duplicates.
fn expect_all(sink: &TlsSink, n: u64, limit: Duration, fwd: &Forwarder) -> u32 {
    let mut counts = BTreeMap::new();
    wait_until(limit, || {
        counts = sequence_counts(&sink.lines());
        counts.len() as u64 >= n
    });
    let missing: Vec<u64> = (0..n).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "lost {} of {n} events, first {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        tail(&fwd.stderr())
    );
    duplicates(&counts)
}

/// Sends `seq=from..to` (300-byte events) on one connection, LF-framed; the worker's close
/// proves it read everything.
fn send_tcp(port: u16, from: u64, to: u64) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let pad = "x".repeat(240);
    let mut buf = Vec::with_capacity(1 << 20);
    for i in from..to {
        writeln!(buf, "<13>Oct 11 22:14:15 host app: seq={i} {pad}").unwrap();
        if buf.len() > 1 << 20 {
            c.write_all(&buf).expect("send");
            buf.clear();
        }
    }
    c.write_all(&buf).expect("send");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut b = [0u8; 1];
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = std::io::Read::read(&mut c, &mut b);
}

fn yaml(port: u16, queue_size: u64) -> String {
    format!("intakes:\n- name: Durable\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n  queue_size: {queue_size}\n")
}

/// A sink port that nothing listens on yet (the destination is down).
fn down_port() -> u16 {
    free_tcp_port()
}

fn journal_bytes(fwd: &Forwarder) -> u64 {
    find_files(&fwd.spool, "seg")
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// A forwarder with one TCP intake of `queue_size`, whose destination is down: the test's
/// certificates, the destination's port (start a sink there to bring it back), the intake's
/// port, and the running forwarder.
fn with_destination_down(queue_size: u64) -> (TestCerts, u16, u16, Forwarder) {
    with_destination_down_and(queue_size, |b| b)
}

/// [`with_destination_down`], with more settings made by `more`.
fn with_destination_down_and(
    queue_size: u64,
    more: impl FnOnce(ForwarderBuilder) -> ForwarderBuilder,
) -> (TestCerts, u16, u16, Forwarder) {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let sink_port = down_port();
    let port = free_tcp_port();
    let builder = ForwarderBuilder::new(&yaml(port, queue_size), sink_port).ca_file(&certs.ca_pem);
    let fwd = more(builder).start();
    (certs, sink_port, port, fwd)
}

#[test]
fn destination_down_then_back_spills_to_disk_and_loses_nothing() {
    // queue_size 1: the memory tier holds one event, so the outage goes to the journal.
    let (certs, sink_port, port, fwd) = with_destination_down(1);
    let n = scale(20_000);
    send_tcp(port, 0, n);
    assert!(
        wait_until(Duration::from_secs(10), || journal_bytes(&fwd) > 0),
        "the ring spilled to disk\n{}",
        tail(&fwd.stderr())
    );
    let sink = TlsSink::start_on(&certs, sink_port);
    let dups = expect_all(&sink, n, Duration::from_secs(60), &fwd);
    eprintln!("delivered {n} after the outage, duplicates {dups}");
    // Oldest first: the first event delivered is the first sent.
    let first = sequence_counts(&sink.lines()[..1]);
    assert!(first.contains_key(&0), "oldest first");
    // Once the journal is delivered, new events go through memory again, and arrive. The
    // journal counts as delivered only once the uplink confirmed its last batch (TCP ack +
    // ack_grace after the sink read it), so events sent right after the sink has them all
    // still queue behind it on disk: send small batches, each after a pause longer than
    // that confirmation (ack_grace is 100 ms), until the switch happens.
    let mut next = n;
    let switch_by = std::time::Instant::now() + Duration::from_secs(20);
    while !fwd.stderr().contains("events go to memory again") {
        assert!(
            std::time::Instant::now() < switch_by,
            "the journal was delivered and new events went to memory again\n{}",
            tail(&fwd.stderr())
        );
        std::thread::sleep(Duration::from_millis(400));
        send_tcp(port, next, next + 100);
        next += 100;
    }
    send_tcp(port, next, next + 1_000);
    expect_all(&sink, next + 1_000, Duration::from_secs(30), &fwd);
}

#[test]
fn sigterm_with_a_backlog_saves_it_and_a_restart_sends_it() {
    let (certs, sink_port, port, mut fwd) = with_destination_down(5_000);
    let n = scale(10_000);
    send_tcp(port, 0, n);
    let status = fwd.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", tail(&fwd.stderr()));
    // Half the events were in the ring (queue_size 5000), half in the journal.
    assert!(
        fwd.stderr().contains("saved undelivered events to disk"),
        "{}",
        tail(&fwd.stderr())
    );
    // A reboot or a new container: the shared memory is gone, only the spool remains.
    fwd.wipe_shared_memory();
    let sink = TlsSink::start_on(&certs, sink_port);
    fwd.spawn();
    let dups = expect_all(&sink, n, Duration::from_secs(60), &fwd);
    eprintln!("delivered {n} after SIGTERM + reboot, duplicates {dups}");
}

#[test]
fn kill9_of_supervisor_and_all_workers_then_restart_loses_nothing() {
    let (certs, sink_port, port, mut fwd) = with_destination_down(5_000);
    let n = scale(10_000);
    send_tcp(port, 0, n);
    fwd.kill9_all();
    let sink = TlsSink::start_on(&certs, sink_port);
    fwd.spawn();
    let dups = expect_all(&sink, n, Duration::from_secs(60), &fwd);
    eprintln!("delivered {n} after kill -9 of every process, duplicates {dups}");
}

#[test]
fn destination_killed_mid_stream_and_restarted_loses_nothing() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let sink = TlsSink::start(&certs);
    let sink_port = sink.port;
    let port = free_tcp_port();
    let fwd = ForwarderBuilder::new(&yaml(port, 1000), sink_port)
        .ca_file(&certs.ca_pem)
        .start();
    let n = scale(30_000);
    let sender = std::thread::spawn(move || send_tcp(port, 0, n));
    assert!(wait_until(Duration::from_secs(30), || sink.count() > 2_000));
    let before = sink.stop();
    std::thread::sleep(Duration::from_millis(500));
    let sink = TlsSink::start_on(&certs, sink_port);
    sender.join().unwrap();
    let mut counts = sequence_counts(&before);
    let mut all = BTreeMap::new();
    wait_until(Duration::from_secs(60), || {
        all = counts.clone();
        for (k, v) in sequence_counts(&sink.lines()) {
            *all.entry(k).or_insert(0) += v;
        }
        all.len() as u64 >= n
    });
    counts = all;
    let missing: Vec<u64> = (0..n).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "lost {} events: {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        tail(&fwd.stderr())
    );
    let dups: u32 = duplicates(&counts);
    eprintln!("destination killed mid-stream: delivered {n}, duplicates {dups}");
}

#[test]
fn full_disk_budget_blocks_tcp_senders_and_counts_udp_drops() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let sink_port = down_port();
    let (tcp, udp) = (free_tcp_port(), free_port_both());
    let yaml = format!(
        "intakes:\n- name: T\n  protocol: tcp\n  port: {tcp}\n  intake_key: {KEY}\n  queue_size: 1\n\
         - name: U\n  protocol: udp\n  port: {udp}\n  intake_key: {KEY}\n  queue_size: 1\n"
    );
    let fwd = ForwarderBuilder::new(&yaml, sink_port)
        .ca_file(&certs.ca_pem)
        .env("DISK_SPACE", "4m")
        .start();
    // TCP: about 9 MB, more than memory (a 1 MiB ring) and disk (4 MiB) can hold; the sender
    // must be held back, not dropped: it can finish (the worker closes only once it queued
    // everything) only after the destination is back.
    let n = 30_000u64;
    let sender = std::thread::spawn(move || {
        send_tcp(tcp, 0, n);
        Instant::now()
    });
    assert!(
        wait_until(Duration::from_secs(30), || journal_bytes(&fwd) >= 3 << 20),
        "the journal took most of DISK_SPACE: {} bytes\n{}",
        journal_bytes(&fwd),
        tail(&fwd.stderr())
    );
    assert!(
        !sender.is_finished(),
        "a full queue holds the TCP sender back"
    );
    // UDP once the budget is used up (the TCP sender is held back): dropped and counted,
    // while the destination is still down. (Checked before it comes back: the socket's
    // 8 MiB receive buffer could otherwise hold the burst until there is room again.)
    assert!(
        wait_until(Duration::from_secs(30), || fwd
            .stderr()
            .contains("journal cannot take events")),
        "the budget was never used up\n{}",
        tail(&fwd.stderr())
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..20_000 {
        let _ = sock.send_to(
            format!("<13>udp seq={i} {}", "y".repeat(200)).as_bytes(),
            ("127.0.0.1", udp),
        );
    }
    assert!(
        wait_until(Duration::from_secs(15), || fwd
            .stderr()
            .contains("dropped_full=")),
        "UDP drops are reported\n{}",
        tail(&fwd.stderr())
    );
    // The destination comes back: everything TCP sent arrives.
    let back_at = Instant::now();
    let sink = TlsSink::start_on(&certs, sink_port);
    let finished_at = sender.join().unwrap();
    assert!(
        finished_at > back_at,
        "the TCP sender finished only after the destination came back"
    );
    let mut tcp_seen = BTreeSet::new();
    wait_until(Duration::from_secs(60), || {
        tcp_seen = sink
            .lines()
            .iter()
            .filter(|l| !String::from_utf8_lossy(l).contains("udp seq="))
            .flat_map(|l| sequence_counts(std::slice::from_ref(l)).into_keys())
            .collect();
        tcp_seen.len() as u64 >= n
    });
    assert_eq!(
        tcp_seen.len() as u64,
        n,
        "every TCP event arrives\n{}",
        tail(&fwd.stderr())
    );
}

#[test]
fn corrupt_journal_record_and_truncated_segment_are_skipped_and_counted() {
    // One uplink connection: lines arrive in the order they were sent (see the marker below).
    let (certs, sink_port, port, mut fwd) =
        with_destination_down_and(1, |b| b.env("UPLINK_CONNECTIONS", "1"));
    let n = 20_000;
    send_tcp(port, 0, n);
    let status = fwd.terminate(Duration::from_secs(60));
    assert!(status.success());
    let mut segments = find_files(&fwd.spool, "seg");
    segments.sort();
    assert!(segments.len() >= 2, "journal segments: {segments:?}");
    // Flip one bit in the middle of the first segment, cut the last one in the middle of a record.
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(first, &bytes).unwrap();
    let last = segments.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len - 37).unwrap();
    drop(f);
    let sink = TlsSink::start_on(&certs, sink_port);
    fwd.spawn();
    // A marker sent now queues behind the journal (oldest first) or, if the journal was
    // already delivered, after it: once it arrived, everything readable of the journal did.
    send_tcp(port, n, n + 1);
    let mut counts = BTreeMap::new();
    let marker_arrived = wait_until(Duration::from_secs(60), || {
        counts = sequence_counts(&sink.lines());
        counts.contains_key(&n)
    });
    assert!(
        marker_arrived,
        "the marker arrived\n{}",
        tail(&fwd.stderr())
    );
    let missing = (0..n).filter(|i| !counts.contains_key(i)).count();
    eprintln!(
        "corrupted journal: delivered {} of {n}, missing {missing}",
        counts.len()
    );
    assert!(
        (1..=3).contains(&missing),
        "only the damaged records are lost: missing {missing}\n{}",
        tail(&fwd.stderr())
    );
    let err = fwd.stderr();
    assert!(err.contains("corrupt"), "{}", tail(&err));
    assert!(
        fwd.worker_pids("uplink-worker").len() == 1,
        "the forwarder keeps running"
    );
}
