//! Fault scenarios on real processes: `kill -9` of workers while clients send. Every event
//! carries a sequence number; nothing accepted may be lost, duplicates are counted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sekoia_tests::events::{duplicates, sequence_counts};
use sekoia_tests::{free_tcp_port, wait_until, ForwarderBuilder, TestCerts, TlsSink};

const KEY: &str = "FaultIntakeKey0123456";
const EVENTS: u64 = 20_000;

/// Waits until every sequence number in `want` arrived at the sink (duplicates do not count
/// twice), or `limit` passed; returns what arrived.
fn wait_for_all(sink: &TlsSink, want: &BTreeSet<u64>, limit: Duration) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    wait_until(limit, || {
        counts = sequence_counts(&sink.lines());
        want.iter().all(|n| counts.contains_key(n))
    });
    counts
}

/// What the sending client knows, shared with the test thread.
#[derive(Default)]
struct Progress {
    /// Bumped when a `kill -9` of the ingest worker starts (before the worker is even
    /// looked up) and again once that worker is gone: odd while a kill is under way.
    kill_edges: AtomicU64,
    /// Events accepted so far (see [`send_with_reconnect`]).
    accepted: AtomicU64,
    /// Batches closed cleanly while a kill was under way: not counted as accepted.
    unconfirmed: AtomicU64,
}

/// Sends `seq=from..to` in batches of 200 on fresh connections, reconnecting whenever the
/// port refuses or resets (the worker is being restarted); returns the accepted numbers.
///
/// A batch is *accepted* when `write_all`, our shutdown and the worker's close all succeeded
/// and no kill of an ingest worker was under way at any time between our connect and that
/// close. The worker closes a connection only after its last frames were pushed to the ring
/// (or journal), so such a batch is queued in shared memory and must never be lost. A kill
/// in that time voids the proof: a killed worker's socket is closed by the kernel with the
/// same FIN once its receive buffer was read, so a batch it had read but not pushed looks
/// closed cleanly (syslog has no acknowledgement). That includes a batch that started after
/// the test decided to kill but before the signal landed, hence the two edges. Such a batch
/// is sent again (duplicates, counted) until it is accepted.
fn send_with_reconnect(port: u16, from: u64, to: u64, progress: &Progress) -> Vec<u64> {
    let mut accepted = Vec::new();
    let mut next = from;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < to && Instant::now() < deadline {
        let edges_before = progress.kill_edges.load(Ordering::SeqCst);
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
            // The port is bound by the supervisor: refused only between its worker's death
            // and the restart's first accept; pace the retries.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let end = (next + 200).min(to);
        let mut batch = Vec::new();
        for i in next..end {
            batch.extend_from_slice(
                format!("<13>Oct 11 22:14:15 host app: seq={i} payload\n").as_bytes(),
            );
        }
        if c.write_all(&batch).is_ok() && c.shutdown(std::net::Shutdown::Write).is_ok() {
            // Wait for the worker to close its side: it read and pushed everything we sent.
            let mut buf = [0u8; 1];
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            if matches!(std::io::Read::read(&mut c, &mut buf), Ok(0)) {
                let no_kill = edges_before.is_multiple_of(2)
                    && progress.kill_edges.load(Ordering::SeqCst) == edges_before;
                if no_kill {
                    accepted.extend(next..end);
                    progress
                        .accepted
                        .store(accepted.len() as u64, Ordering::SeqCst);
                    next = end;
                } else {
                    progress.unconfirmed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
    accepted
}

#[test]
fn kill9_of_an_ingest_worker_loses_nothing_it_accepted() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let yaml =
        format!("intakes:\n- name: Fault\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n");
    let fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .start();

    let progress = Arc::new(Progress::default());
    let sender = {
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || send_with_reconnect(port, 0, EVENTS, &progress))
    };
    // Kill the worker twice while the client sends: after a fifth and after half of the
    // events were accepted.
    let mut killed = Vec::new();
    for at in [EVENTS / 5, EVENTS / 2] {
        assert!(
            wait_until(Duration::from_secs(30), || progress
                .accepted
                .load(Ordering::SeqCst)
                >= at),
            "the client got {at} events accepted\n{}",
            fwd.stderr()
        );
        progress.kill_edges.fetch_add(1, Ordering::SeqCst);
        killed.push(fwd.kill9_ingest(&format!("tcp-{port}")));
        assert!(
            wait_until(Duration::from_secs(10), || {
                let pids = fwd.worker_pids("ingest-worker");
                pids.len() == 1 && !killed.contains(&pids[0])
            }),
            "ingest worker restarted\n{}",
            fwd.stderr()
        );
        // The killed worker was reaped (its successor runs): no batch can reach it any more.
        progress.kill_edges.fetch_add(1, Ordering::SeqCst);
    }
    let accepted = sender.join().unwrap();
    assert_eq!(
        accepted.len() as u64,
        EVENTS,
        "the port served again after each restart"
    );
    let accepted: BTreeSet<u64> = accepted.into_iter().collect();
    // What the workers (dead or alive) had put in the ring must all be delivered too, also
    // from batches the client could not count as accepted. The ring file lists only what
    // the producer has not given back yet (docs/ring.md): read it before waiting.
    let in_ring: BTreeSet<u64> = sequence_counts(&fwd.ring_payloads()).into_keys().collect();
    let want: BTreeSet<u64> = accepted.union(&in_ring).copied().collect();
    let counts = wait_for_all(&sink, &want, Duration::from_secs(30));
    let lost_from_ring: Vec<u64> = in_ring
        .iter()
        .copied()
        .filter(|n| !counts.contains_key(n))
        .collect();
    let lost: Vec<u64> = accepted
        .iter()
        .copied()
        .filter(|n| !counts.contains_key(n))
        .collect();
    let dups = duplicates(&counts);
    eprintln!(
        "accepted {}, delivered {} distinct, duplicates {dups}, batches closed while a kill \
         was under way and sent again {}, still in the ring file {}",
        accepted.len(),
        counts.len(),
        progress.unconfirmed.load(Ordering::SeqCst),
        in_ring.len()
    );
    assert!(
        lost.is_empty(),
        "lost {} accepted events: {:?}\n{}",
        lost.len(),
        &lost[..lost.len().min(10)],
        fwd.stderr()
    );
    assert!(
        lost_from_ring.is_empty(),
        "lost {} events that were in the ring: {:?}",
        lost_from_ring.len(),
        &lost_from_ring[..lost_from_ring.len().min(10)]
    );
    let stderr = fwd.stderr();
    assert!(
        stderr.matches("worker died, restarting").count() >= 2 && stderr.contains("signal 9"),
        "{stderr}"
    );
}

#[test]
fn kill9_of_the_uplink_loses_nothing() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let yaml =
        format!("intakes:\n- name: Fault\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n");
    let fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .start();
    let progress = Arc::new(Progress::default());
    let sender = {
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || send_with_reconnect(port, 0, EVENTS, &progress))
    };
    assert!(wait_until(Duration::from_secs(20), || sink.count() > 2000));
    let old = fwd.kill9_uplink();
    assert!(wait_until(Duration::from_secs(10), || {
        let pids = fwd.worker_pids("uplink-worker");
        pids.len() == 1 && pids[0] != old
    }));
    let sent: BTreeSet<u64> = sender.join().unwrap().into_iter().collect();
    assert_eq!(sent.len() as u64, EVENTS, "every batch was accepted");
    let counts = wait_for_all(&sink, &sent, Duration::from_secs(30));
    let lost = sent.iter().filter(|n| !counts.contains_key(n)).count();
    let dups = duplicates(&counts);
    eprintln!(
        "sent {}, delivered {} distinct, duplicates {dups}",
        sent.len(),
        counts.len()
    );
    assert_eq!(lost, 0, "lost events after kill -9 of the uplink");
}

#[test]
fn uplink_certificate_mismatch_keeps_events_until_fixed() {
    // The sink's certificate names another host: the uplink must refuse it, say why, retry,
    // and keep every event; a restart with the right destination delivers them.
    let wrong = TestCerts::new(&["intake.example.net"]);
    let sink = TlsSink::start(&wrong);
    let port = free_tcp_port();
    let yaml =
        format!("intakes:\n- name: Fault\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n");
    let mut fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&wrong.ca_pem)
        .start();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for i in 0..50 {
        writeln!(c, "<13>Oct 11 22:14:15 host app: seq={i} kept").unwrap();
    }
    // The worker's close says it queued all 50 before the stop below.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(std::io::Read::read(&mut c, &mut [0u8; 1]).unwrap(), 0);
    assert!(
        wait_until(Duration::from_secs(15), || {
            let e = fwd.stderr();
            e.contains("127.0.0.1") && (e.contains("NotValidForName") || e.contains("certificate"))
        }),
        "a clear certificate error\n{}",
        fwd.stderr()
    );
    assert_eq!(sink.count(), 0);
    // Stop (the uplink cannot flush: the events stay in the ring) and come back trusting a
    // sink with the right name on the same port.
    let status = fwd.terminate(Duration::from_secs(60));
    assert!(status.success());
    let port_of_sink = sink.port;
    drop(sink);
    let right = TestCerts::new(&["127.0.0.1"]);
    let sink = TlsSink::start_on(&right, port_of_sink);
    let mut fwd2 = fwd;
    fwd2_set_ca(&mut fwd2, &right);
    let lines = sink.wait_for(50, Duration::from_secs(20));
    assert_eq!(sequence_counts(&lines).len(), 50, "{}", fwd2.stderr());
}

fn fwd2_set_ca(fwd: &mut sekoia_tests::Forwarder, certs: &TestCerts) {
    fwd.set_ca_file(&certs.ca_pem);
    fwd.spawn();
}
