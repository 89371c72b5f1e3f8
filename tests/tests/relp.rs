//! The RELP output (`RELP_OUTPUT`) against rsyslog's own RELP server, `imrelp`, started by each
//! test (TLS with the test CA): every event arrives exactly as the TLS output sends it (without
//! the octet count); a receiver killed with `kill -9` and restarted, and an uplink worker
//! killed mid-stream, lose nothing (duplicates are counted); a receiver that stops answering
//! holds every event back in the queue (ring, then journal) until it answers again.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sekoia_tests::events::{duplicates, sequence_counts, tail};
use sekoia_tests::forwarder::find_files;
use sekoia_tests::imrelp::Imrelp;
use sekoia_tests::{
    corpus, free_tcp_port, mask_timestamp, wait_until, Forwarder, ForwarderBuilder, TestCerts,
    TlsSink,
};

const KEY: &str = "RelpIntakeKey0123456789";

fn yaml(port: u16, queue_size: u64) -> String {
    format!("intakes:\n- name: Relp\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n  queue_size: {queue_size}\n")
}

/// A forwarder whose output is RELP to `imrelp` (the endpoint names the port, so the host and
/// port are kept as given).
fn relp_forwarder(certs: &TestCerts, imrelp: &Imrelp, port: u16, queue_size: u64) -> Forwarder {
    relp_forwarder_with(certs, imrelp, port, queue_size, |b| b)
}

fn relp_forwarder_with(
    certs: &TestCerts,
    imrelp: &Imrelp,
    port: u16,
    queue_size: u64,
    more: impl FnOnce(ForwarderBuilder) -> ForwarderBuilder,
) -> Forwarder {
    let builder = ForwarderBuilder::new(&yaml(port, queue_size), imrelp.port)
        .ca_file(&certs.ca_pem)
        .env("RELP_OUTPUT", "true");
    more(builder).start()
}

/// Sends `seq=from..to` (about 300-byte events) on one connection, LF-framed, and waits for
/// the worker to close it (it read everything).
fn send_tcp(port: u16, from: u64, to: u64) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let pad = "x".repeat(240);
    let mut buf = Vec::new();
    for i in from..to {
        writeln!(buf, "<13>Oct 11 22:14:15 host app: seq={i} {pad}").unwrap();
        if buf.len() > 256 * 1024 {
            c.write_all(&buf).expect("send");
            buf.clear();
        }
    }
    c.write_all(&buf).expect("send");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut b = [0u8; 1];
    c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let _ = std::io::Read::read(&mut c, &mut b);
}

/// Waits until every number of `0..n` reached imrelp; returns the duplicates.
fn expect_all(imrelp: &Imrelp, n: u64, limit: Duration, fwd: &Forwarder) -> u32 {
    let mut counts = BTreeMap::new();
    wait_until(limit, || {
        counts = sequence_counts(&imrelp.lines());
        counts.len() as u64 >= n
    });
    let missing: Vec<u64> = (0..n).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "lost {} of {n} events, first {:?}\nforwarder:\n{}\nimrelp:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        tail(&fwd.stderr()),
        tail(&imrelp.log())
    );
    duplicates(&counts)
}

/// `resent_events` of the uplink's totals, logged when it stops.
fn resent_total(fwd: &mut Forwarder) -> u64 {
    fwd.terminate(Duration::from_secs(30));
    let log = fwd.stderr();
    log.lines()
        .filter(|l| l.contains("uplink totals"))
        .filter_map(|l| l.split("resent_events=").nth(1))
        .filter_map(|t| t.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn relp_output_delivers_each_line_exactly_as_the_tls_output_does() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let imrelp = Imrelp::start(&certs);
    let sink = TlsSink::start(&certs);
    let (relp_port, tls_port) = (free_tcp_port(), free_tcp_port());
    let relp_fwd = relp_forwarder(&certs, &imrelp, relp_port, 10_000);
    let _tls_fwd = ForwarderBuilder::new(&yaml(tls_port, 10_000), sink.addr().port())
        .ca_file(&certs.ca_pem)
        .start();
    assert!(
        relp_fwd.stderr().contains("over RELP (TLS, window 128)"),
        "the uplink names its output\n{}",
        tail(&relp_fwd.stderr())
    );

    let mut messages = corpus::messages();
    let mut big = b"<13>Oct 11 22:14:15 bighost bigapp[7]: ".to_vec();
    big.extend(std::iter::repeat_n(b'x', 10 * 1024));
    messages.push(big);
    for port in [relp_port, tls_port] {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        for m in &messages {
            c.write_all(format!("{} ", m.len()).as_bytes()).unwrap();
            c.write_all(m).unwrap();
        }
    }
    let tls_lines = sink.wait_for(messages.len(), Duration::from_secs(30));
    let mut relp_lines = Vec::new();
    wait_until(Duration::from_secs(30), || {
        relp_lines = imrelp.lines();
        relp_lines.len() >= messages.len()
    });
    assert_eq!(tls_lines.len(), messages.len());
    assert_eq!(
        relp_lines.len(),
        messages.len(),
        "imrelp:\n{}",
        tail(&imrelp.log())
    );
    // Compared as sets of lines: with a pool of connections, each output may deliver
    // batches in another order.
    let sorted = |lines: &[Vec<u8>]| {
        let mut masked: Vec<Vec<u8>> = lines.iter().map(|l| mask_timestamp(l).1).collect();
        masked.sort();
        masked
    };
    let (relp, tls) = (sorted(&relp_lines), sorted(&tls_lines));
    for (i, (relp, tls)) in relp.iter().zip(&tls).enumerate() {
        assert_eq!(
            relp,
            tls,
            "line {i} (sorted) differs:\nRELP {}\nTLS  {}",
            String::from_utf8_lossy(&relp[..relp.len().min(300)]),
            String::from_utf8_lossy(&tls[..tls.len().min(300)])
        );
    }
}

#[test]
fn check_names_the_relp_output_even_for_relp_output_false() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("intakes.yaml");
    std::fs::write(&config, yaml(free_tcp_port(), 100)).unwrap();
    let out = std::process::Command::new(sekoia_tests::forwarder::binary())
        .env_clear()
        .env("RELP_OUTPUT", "false")
        .arg("check")
        .arg("--config")
        .arg(&config)
        .arg("--spool-dir")
        .arg(dir.path())
        .arg("--extended-conf")
        .arg(dir.path())
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("destination relp.intake.sekoia.io:11514 over RELP (TLS, window 128)"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn receiver_killed_mid_stream_and_restarted_loses_nothing() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let mut imrelp = Imrelp::start(&certs);
    let port = free_tcp_port();
    let mut fwd = relp_forwarder(&certs, &imrelp, port, 100_000);
    let n = 30_000;
    let sender = std::thread::spawn(move || send_tcp(port, 0, n));
    assert!(
        wait_until(Duration::from_secs(30), || imrelp.lines().len() > 3_000),
        "imrelp got events before the kill\n{}",
        tail(&fwd.stderr())
    );
    imrelp.kill9();
    let at_kill = imrelp.lines().len();
    imrelp.restart();
    sender.join().unwrap();
    let dups = expect_all(&imrelp, n, Duration::from_secs(90), &fwd);
    let resent = resent_total(&mut fwd);
    eprintln!("killed at {at_kill} events; duplicates {dups}, re-sent {resent}");
    assert!(at_kill < n as usize, "the kill happened mid-stream");
    assert!(
        u64::from(dups) <= resent,
        "every duplicate was counted as re-sent ({dups} > {resent})"
    );
}

#[test]
fn uplink_worker_killed_mid_stream_loses_nothing() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let imrelp = Imrelp::start(&certs);
    let port = free_tcp_port();
    let fwd = relp_forwarder(&certs, &imrelp, port, 100_000);
    let n = 30_000;
    let sender = std::thread::spawn(move || send_tcp(port, 0, n));
    assert!(
        wait_until(Duration::from_secs(30), || imrelp.lines().len() > 3_000),
        "imrelp got events before the kill\n{}",
        tail(&fwd.stderr())
    );
    fwd.kill9_uplink();
    let at_kill = imrelp.lines().len();
    sender.join().unwrap();
    let dups = expect_all(&imrelp, n, Duration::from_secs(90), &fwd);
    eprintln!("uplink killed at {at_kill} events; duplicates {dups}");
    assert!(at_kill < n as usize, "the kill happened mid-stream");
    // The new uplink starts from the committed positions: at most the unanswered window of
    // each connection and the batches not yet confirmed are sent twice.
    assert!(
        u64::from(dups) < n / 2,
        "duplicates stay near what was in flight: {dups}"
    );
}

fn journal_bytes(fwd: &Forwarder) -> u64 {
    find_files(&fwd.spool, "seg")
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// The uplink's counters in `sekoia-ctl status --json` (reported every second).
fn uplink_counters(fwd: &Forwarder) -> serde_json::Value {
    let (ok, out, err) = fwd.ctl(&["status", "--json"]);
    assert!(ok, "status failed: {err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    status["uplink"]["counters"].clone()
}

#[test]
fn receiver_that_stops_answering_fills_the_window_and_holds_senders_back_losing_nothing() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let imrelp = Imrelp::start(&certs);
    let port = free_tcp_port();
    // A one-event ring and 4 MiB of journal: what the receiver does not answer goes to the
    // journal, and once that is full the TCP sender is held back.
    let fwd = relp_forwarder_with(&certs, &imrelp, port, 1, |b| {
        b.env("RELP_WINDOW", "16")
            .env("UPLINK_CONNECTIONS", "1")
            .env("DISK_SPACE", "4m")
    });
    send_tcp(port, 0, 500);
    expect_all(&imrelp, 500, Duration::from_secs(30), &fwd);

    imrelp.pause();
    let before = imrelp.lines().len();
    // About 9 MB: more than the ring and the journal can hold.
    let n = 30_000;
    let sender = std::thread::spawn(move || {
        send_tcp(port, 500, n);
        Instant::now()
    });
    let mut counters = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            counters = uplink_counters(&fwd);
            counters["relp_window_in_use"] == 16
        }),
        "the window fills up: {counters:#}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || journal_bytes(&fwd) >= 3 << 20),
        "the unanswered events went to the journal: {} bytes\n{}",
        journal_bytes(&fwd),
        tail(&fwd.stderr())
    );
    assert!(
        !sender.is_finished(),
        "a full queue holds the TCP sender back"
    );
    assert_eq!(
        imrelp.lines().len(),
        before,
        "a paused receiver writes nothing"
    );

    let resumed_at = Instant::now();
    imrelp.resume();
    assert!(
        sender.join().unwrap() > resumed_at,
        "the sender finished only after the receiver answered again"
    );
    let dups = expect_all(&imrelp, n, Duration::from_secs(120), &fwd);
    eprintln!("delivered {n} after the pause; duplicates {dups}");
}
