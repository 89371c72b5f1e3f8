//! `sekoia-ctl` against the real forwarder: true counters, worker restarts, clear errors, and
//! a control socket that hostile clients cannot use to disturb anything.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use sekoia_tests::forwarder::ctl_binary;
use sekoia_tests::{free_tcp_port, wait_until, Forwarder, ForwarderBuilder, TestCerts, TlsSink};
use serde_json::Value;

const KEY: &str = "ControlIntakeKey0123456789";
const WAIT: Duration = Duration::from_secs(20);

fn start() -> (TlsSink, Forwarder, u16, TestCerts) {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let yaml = format!(
        "---\nintakes:\n- name: Firewalls\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n"
    );
    let fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .start();
    (sink, fwd, port, certs)
}

fn send(port: u16, from: usize, n: usize) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    for i in from..from + n {
        writeln!(c, "<13>Nov 30 10:00:00 fw app: event seq={i}").expect("send");
    }
}

/// Polls `status --json` until `check` holds (workers report every second).
fn status_until(fwd: &Forwarder, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(WAIT, || {
        let (ok, out, _) = fwd.ctl(&["status", "--json"]);
        last = if ok {
            serde_json::from_str(&out).expect("status JSON")
        } else {
            Value::Null
        };
        check(&last)
    });
    assert!(ok, "status never matched; last:\n{last:#}");
    last
}

#[test]
fn status_counts_what_was_received_and_sent() {
    let (sink, fwd, port, _certs) = start();
    send(port, 0, 500);
    assert_eq!(sink.wait_for(500, WAIT).len(), 500);
    let s = status_until(&fwd, |s| {
        s["intakes"][0]["input"]["received"] == 500
            && s["uplink"]["counters"]["events_sent"] == 500
            && s["intakes"][0]["events_sent"] == 500
    });
    let intake = &s["intakes"][0];
    assert_eq!(intake["name"], "Firewalls");
    assert_eq!(intake["protocol"], "tcp");
    assert_eq!(intake["port"], port);
    assert_eq!(intake["worker"]["state"], "running");
    assert_eq!(intake["worker"]["restarts"], 0);
    assert_eq!(intake["input"]["dropped_full"], 0);
    assert_eq!(s["uplink"]["worker"]["state"], "running");
    assert!(s["uplink"]["counters"]["connections_up"].as_u64() >= Some(1));
    assert_eq!(s["forwarder"]["pid"], fwd.pid());

    let (ok, table, err) = fwd.ctl(&["status"]);
    assert!(ok, "{err}");
    println!("{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("Firewalls"))
        .unwrap_or_else(|| panic!("no intake row:\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..4],
        ["Firewalls", "tcp", &port.to_string(), "running"]
    );
    assert_eq!(cells[6], "500", "RECEIVED column:\n{table}");
    assert_eq!(cells[7], "500", "SENT column:\n{table}");
    assert!(table.contains("OK: nothing dropped"), "{table}");
}

#[test]
fn status_shows_a_worker_restart_and_the_counters_start_again() {
    let (sink, fwd, port, _certs) = start();
    send(port, 0, 10);
    sink.wait_for(10, WAIT);
    status_until(&fwd, |s| s["intakes"][0]["input"]["received"] == 10);
    fwd.kill9_ingest(&format!("tcp-{port}"));
    let s = status_until(&fwd, |s| {
        s["intakes"][0]["worker"]["restarts"] == 1
            && s["intakes"][0]["worker"]["state"] == "running"
    });
    // A restarted worker counts from zero (documented): what matters is that it is up.
    assert_eq!(s["intakes"][0]["input"]["received"], 0);
    send(port, 10, 5);
    assert_eq!(sink.wait_for(15, WAIT).len(), 15);
}

#[test]
fn sekoia_ctl_says_plainly_when_no_forwarder_answers() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(ctl_binary())
        .arg("--control-socket")
        .arg(dir.path().join("control.sock"))
        .arg("status")
        .output()
        .expect("run sekoia-ctl");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn the_control_socket_is_private_and_hostile_clients_disturb_nothing() {
    let (sink, fwd, port, _certs) = start();
    let socket = fwd.control_socket();
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o660);
    assert_eq!(mode(socket.parent().expect("folder")), 0o750);

    // Clients that hang, flood or talk nonsense.
    let idle: Vec<UnixStream> = (0..20)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    let mut flood = UnixStream::connect(&socket).expect("connect");
    let _ = flood.write_all(&vec![b'x'; 1 << 20]);
    let mut garbage = UnixStream::connect(&socket).expect("connect");
    let _ = garbage.write_all(b"{\"version\":1,\"command\":\"format_disk\"}\n");
    let mut other_version = UnixStream::connect(&socket).expect("connect");
    let _ = other_version.write_all(b"{\"version\":99,\"command\":\"status\"}\n");

    // Events flow and an honest sekoia-ctl is answered meanwhile.
    send(port, 0, 100);
    assert_eq!(sink.wait_for(100, WAIT).len(), 100);
    status_until(&fwd, |s| s["intakes"][0]["input"]["received"] == 100);
    drop(idle);
    assert!(fwd.stderr().lines().all(|l| !l.contains("worker died")));
}

/// `GET /metrics` over a plain TCP connection; returns the body.
fn scrape(addr: &str) -> String {
    use std::io::Read;
    let mut c = TcpStream::connect(addr).expect("connect to METRICS_LISTEN");
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    body.to_string()
}

#[test]
fn prometheus_metrics_count_what_was_received_and_sent() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
    let yaml = format!(
        "---\nintakes:\n- name: Firewalls\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n"
    );
    let fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .env("METRICS_LISTEN", &metrics)
        .start();
    send(port, 0, 50);
    assert_eq!(sink.wait_for(50, WAIT).len(), 50);
    let received =
        "sekoia_forwarder_events_received_total{intake=\"Firewalls\",protocol=\"tcp\"} 50";
    let sent = format!(
        "sekoia_forwarder_uplink_events_sent_total{{destination=\"127.0.0.1:{}\"}} 50",
        sink.port
    );
    let intake_sent =
        "sekoia_forwarder_events_sent_total{intake=\"Firewalls\",protocol=\"tcp\"} 50";
    let mut body = String::new();
    let ok = wait_until(WAIT, || {
        body = scrape(&metrics);
        body.contains(received) && body.contains(&sent) && body.contains(intake_sent)
    });
    assert!(ok, "metrics never showed the 50 events:\n{body}");
    assert!(
        body.contains(&format!(
            "sekoia_forwarder_worker_up{{worker=\"uplink:127.0.0.1:{}\"}} 1",
            sink.port
        )),
        "{body}"
    );
    assert!(
        body.contains("# TYPE sekoia_forwarder_events_received counter"),
        "{body}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    drop(fwd);
}
