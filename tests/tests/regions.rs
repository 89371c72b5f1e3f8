//! One uplink worker per destination: two TLS listeners stand for two regions (per-intake
//! `endpoint:`). A destination that is down delays nothing of the other, its backlog arrives
//! when it returns (oldest first, nothing lost), kill -9 of one uplink leaves the other's
//! connections alone, and a reload that moves an intake sends its queued events to the new
//! destination.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sekoia_tests::events::{duplicates, sequence_counts};
use sekoia_tests::{free_tcp_port, wait_until, Forwarder, ForwarderBuilder, TestCerts, TlsSink};

const KEY_X: &str = "RegionIntakeKeyXXXXXXXXXX";
const KEY_Y: &str = "RegionIntakeKeyYYYYYYYYYY";
const WAIT: Duration = Duration::from_secs(30);

fn entry(name: &str, port: u16, key: &str, endpoint_port: u16) -> String {
    format!(
        "- name: {name}\n  protocol: tcp\n  port: {port}\n  intake_key: {key}\n  endpoint: 127.0.0.1:{endpoint_port}\n"
    )
}

fn send(port: u16, tag: &str, seqs: std::ops::Range<u64>) {
    send_padded(port, tag, seqs, 0).expect("send");
}

/// Sends events of about `pad` bytes more each.
fn send_padded(
    port: u16,
    tag: &str,
    seqs: std::ops::Range<u64>,
    pad: usize,
) -> std::io::Result<()> {
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    let padding = "p".repeat(pad);
    let batch: String = seqs
        .map(|i| format!("<13>Nov 30 10:00:00 dev app: {tag} seq={i} {padding}\n"))
        .collect();
    c.write_all(batch.as_bytes())
}

fn wait_tagged(sink: &TlsSink, tag: &str, n: usize, fwd: &Forwarder) -> Vec<Vec<u8>> {
    let lines = sink.wait_tagged(tag, n, WAIT);
    assert!(
        lines.len() >= n,
        "{} of {n} `{tag}` lines arrived\n{}",
        lines.len(),
        fwd.stderr()
    );
    lines
}

/// Two intakes, X to `sink_x`'s port and Y to `y_port` (whose listener may be down).
fn start(certs: &TestCerts, sink_x: u16, y_port: u16) -> (Forwarder, u16, u16) {
    let (px, py) = (free_tcp_port(), free_tcp_port());
    let yaml = format!(
        "---\nintakes:\n{}{}",
        entry("X", px, KEY_X, sink_x),
        entry("Y", py, KEY_Y, y_port)
    );
    let fwd = ForwarderBuilder::new(&yaml, sink_x)
        .ca_file(&certs.ca_pem)
        .start();
    (fwd, px, py)
}

fn seqs_in_arrival_order(lines: &[Vec<u8>]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| {
            let text = String::from_utf8_lossy(l);
            text.split("seq=").nth(1)?.split(' ').next()?.parse().ok()
        })
        .collect()
}

#[test]
fn a_destination_that_is_down_delays_nothing_of_the_other_and_gets_its_backlog_back() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink_x = TlsSink::start(&certs);
    let y_port = free_tcp_port();
    let (fwd, px, py) = start(&certs, sink_x.port, y_port);
    assert_eq!(
        fwd.worker_pids("uplink-worker").len(),
        2,
        "one uplink per destination"
    );

    send(py, "y", 0..3000);
    let started = Instant::now();
    send(px, "x", 0..3000);
    let x = wait_tagged(&sink_x, "x", 3000, &fwd);
    let took = started.elapsed();
    assert_eq!(sequence_counts(&x).len(), 3000);
    assert!(x.iter().all(|l| String::from_utf8_lossy(l).contains(KEY_X)));
    println!("X delivered 3000 events in {took:?} while Y's destination was down");
    let one = Instant::now();
    send(px, "x1", 0..1);
    wait_tagged(&sink_x, "x1", 1, &fwd);
    println!(
        "one X event took {:?} while Y's destination was down",
        one.elapsed()
    );

    // Each destination in status: X's uplink connected, Y's down with its last error, and
    // Y's backlog counted against Y's uplink.
    let y_dest = format!("127.0.0.1:{y_port}");
    let mut status = serde_json::Value::Null;
    let seen = wait_until(WAIT, || {
        let (ok, out, _) = fwd.ctl(&["status", "--json"]);
        status = serde_json::from_str(&out).unwrap_or_default();
        let uplinks = status["uplinks"].as_array().cloned().unwrap_or_default();
        ok && uplinks.len() == 2
            && uplinks.iter().any(|u| {
                u["destination"] == y_dest.as_str()
                    && u["counters"]["connections_up"] == 0
                    && u["counters"]["last_error"].is_string()
            })
    });
    assert!(seen, "status per destination:\n{status:#}");
    assert_eq!(status["intakes"][1]["destination"], y_dest.as_str());
    let (_, table, _) = fwd.ctl(&["status"]);
    let verdict = table.lines().last().unwrap_or_default();
    assert!(
        table.contains(&format!("→ {y_dest}"))
            && verdict.contains("no uplink connection to")
            && verdict.contains(&y_dest),
        "{table}"
    );

    let sink_y = TlsSink::start_on(&certs, y_port);
    let y = wait_tagged(&sink_y, "y", 3000, &fwd);
    let counts = sequence_counts(&y);
    assert_eq!(counts.len(), 3000, "nothing lost");
    assert_eq!(seqs_in_arrival_order(&y).first(), Some(&0), "oldest first");
    assert!(
        sink_x.tagged("y").is_empty(),
        "Y's events went only to Y's destination"
    );
    println!(
        "Y backlog: 3000 delivered, {} duplicates",
        duplicates(&counts)
    );
    // The same X traffic with both destinations up, for comparison (printed, not timed).
    let started = Instant::now();
    send(px, "x2", 0..3000);
    wait_tagged(&sink_x, "x2", 3000, &fwd);
    println!(
        "X delivered 3000 events in {:?} with both destinations up",
        started.elapsed()
    );
}

#[test]
fn kill_9_of_one_uplink_leaves_the_other_s_connections_untouched() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let (sink_x, sink_y) = (TlsSink::start(&certs), TlsSink::start(&certs));
    let (fwd, px, py) = start(&certs, sink_x.port, sink_y.port);
    send(px, "x", 0..100);
    send(py, "y", 0..100);
    wait_tagged(&sink_x, "x", 100, &fwd);
    wait_tagged(&sink_y, "y", 100, &fwd);
    let x_connections = sink_x.connections();
    let y_uplink = fwd.worker_pids(&format!("--destination 127.0.0.1:{}", sink_y.port));
    assert_eq!(y_uplink.len(), 1);
    fwd.kill9_child(y_uplink[0]);
    send(py, "y", 100..200);
    send(px, "x", 100..200);
    assert_eq!(
        sequence_counts(&wait_tagged(&sink_y, "y", 200, &fwd)).len(),
        200
    );
    assert_eq!(
        sequence_counts(&wait_tagged(&sink_x, "x", 200, &fwd)).len(),
        200
    );
    assert_eq!(
        sink_x.connections(),
        x_connections,
        "X's uplink kept its connections"
    );
    let restarted = fwd.worker_pids(&format!("--destination 127.0.0.1:{}", sink_y.port));
    assert!(
        restarted.len() == 1 && restarted != y_uplink,
        "Y's uplink was restarted"
    );
}

#[test]
fn a_reload_that_moves_an_intake_sends_its_queued_events_to_the_new_destination_in_order() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink_x = TlsSink::start(&certs);
    let y_port = free_tcp_port();
    let (fwd, px, py) = start(&certs, sink_x.port, y_port);
    send(py, "moved", 0..500);
    let queued = wait_until(WAIT, || {
        let (ok, out, _) = fwd.ctl(&["status", "--json"]);
        ok && out.contains("\"received\": 500")
    });
    assert!(queued, "500 events received\n{}", fwd.stderr());
    let yaml = format!(
        "---\nintakes:\n{}{}",
        entry("X", px, KEY_X, sink_x.port),
        entry("Y", py, KEY_Y, sink_x.port)
    );
    std::fs::write(&fwd.config, yaml).unwrap();
    let (ok, out, err) = fwd.ctl(&["reload"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "uplink stopped (no intake goes there any more): 127.0.0.1:{y_port}"
        )),
        "{out}"
    );
    let moved = wait_tagged(&sink_x, "moved", 500, &fwd);
    let counts = sequence_counts(&moved);
    assert_eq!(counts.len(), 500, "nothing lost");
    let order = seqs_in_arrival_order(&moved);
    assert_eq!(order.first(), Some(&0), "oldest first");
    assert!(moved
        .iter()
        .all(|l| String::from_utf8_lossy(l).contains(KEY_Y)));
    assert_eq!(
        fwd.worker_pids("uplink-worker").len(),
        1,
        "one destination left"
    );
}

/// `disk.used_bytes` from `sekoia-ctl status --json`.
fn disk_used(fwd: &Forwarder) -> u64 {
    let (ok, out, _) = fwd.ctl(&["status", "--json"]);
    if !ok {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["disk"]["used_bytes"].as_u64().unwrap_or(0)
}

#[test]
fn a_dead_destination_fills_only_its_share_of_disk_space() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let (x_port, y_port) = (free_tcp_port(), free_tcp_port());
    let (px, py) = (free_tcp_port(), free_tcp_port());
    let small = |name: &str, port: u16, key: &str, to: u16| {
        format!("{}  queue_size: 1\n", entry(name, port, key, to))
    };
    let yaml = format!(
        "---\nintakes:\n{}{}",
        small("X", px, KEY_X, x_port),
        small("Y", py, KEY_Y, y_port)
    );
    let fwd = ForwarderBuilder::new(&yaml, x_port)
        .ca_file(&certs.ca_pem)
        .env("DISK_SPACE", "4m")
        .start();
    // Y's destination is down: about 9 MB for Y, far more than its share (2 MiB) holds.
    // (Its connection is cut when the test ends.)
    let y_sender = std::thread::spawn(move || send_padded(py, "y", 0..30_000, 300).is_ok());
    let mut last = (0, Instant::now());
    let settled = wait_until(WAIT, || {
        let used = disk_used(&fwd);
        if used != last.0 {
            last = (used, Instant::now());
        }
        used >= 1 << 20 && last.1.elapsed() > Duration::from_secs(2)
    });
    assert!(settled, "Y's journal settled\n{}", fwd.stderr());
    assert!(!y_sender.is_finished(), "Y's sender is held back");
    let y_share_used = disk_used(&fwd);
    assert!(
        y_share_used <= 2 << 20,
        "Y used {y_share_used} bytes, more than its share"
    );

    // X's destination is down too, for now: its events still find room on disk.
    let x_sender = std::thread::spawn(move || send_padded(px, "x", 0..3000, 300).expect("send X"));
    assert!(
        wait_until(WAIT, || x_sender.is_finished()),
        "X's sender was held back by Y's backlog\n{}",
        fwd.stderr()
    );
    let sink_x = TlsSink::start_on(&certs, x_port);
    let x = wait_tagged(&sink_x, "x", 3000, &fwd);
    assert_eq!(sequence_counts(&x).len(), 3000, "nothing of X lost");
    println!("Y held {y_share_used} bytes of its 2 MiB share; X queued and delivered 3000 events");
}
