//! The monitoring entry (`stats: true`) against the real forwarder: impstats objects with
//! true counters reach a real TLS listener as ordinary output lines (PRI 46, app-name
//! `rsyslogd-pstats`, the entry's key), the same objects land in STATS_FILE, and a
//! destination that is down makes the monitoring lines queue, losing none.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use sekoia_tests::{free_tcp_port, mask_timestamp, wait_until, Forwarder, ForwarderBuilder};
use sekoia_tests::{TestCerts, TlsSink};
use serde_json::Value;

const KEY: &str = "FirewallsIntakeKey0123456789";
const STATS_KEY: &str = "MonitoringIntakeKey0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// A tcp intake (its ring holding `queue_size` events) and the monitoring entry.
fn forwarder(sink_port: u16, certs: &TestCerts, queue_size: u32) -> (Forwarder, u16) {
    let port = free_tcp_port();
    let yaml = format!(
        "---\nintakes:\n- name: Firewalls\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n\
         \x20 queue_size: {queue_size}\n- name: Monitoring\n  stats: True\n  intake_key: {STATS_KEY}\n"
    );
    let fwd = ForwarderBuilder::new(&yaml, sink_port)
        .ca_file(&certs.ca_pem)
        .arg("--stats-interval")
        .arg("1")
        .arg("--uplink-connections")
        .arg("1")
        .start();
    (fwd, port)
}

fn send(port: u16, n: usize) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    for i in 0..n {
        writeln!(c, "<13>Nov 30 10:00:00 fw app: event seq={i}").expect("send");
    }
}

/// The JSON of each monitoring line received, in arrival order; checks each line's header.
fn stats_objects(lines: &[Vec<u8>]) -> Vec<Value> {
    let header = format!(
        "<46>1 TS {} rsyslogd-pstats - LOG [SEKOIA@53288 intake_key=\"{STATS_KEY}\"] ",
        hostname()
    );
    lines
        .iter()
        .filter(|l| l.starts_with(b"<46>"))
        .map(|line| {
            let (_, masked) = mask_timestamp(line);
            let text = String::from_utf8(masked).expect("UTF-8");
            let json = text
                .strip_prefix(&header)
                .unwrap_or_else(|| panic!("header of {text:?}, expected {header:?}"));
            let json = json.strip_suffix('\n').expect("one line");
            assert!(
                json.starts_with("{ \"name\": \"") && json.ends_with(" }"),
                "{json}"
            );
            serde_json::from_str(json).expect("JSON")
        })
        .collect()
}

fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    name.trim().split('.').next().expect("name").to_string()
}

/// Sum of `field` over the objects named `name`.
fn sum(objects: &[Value], name: &str, field: &str) -> u64 {
    objects
        .iter()
        .filter(|o| o["name"] == name)
        .map(|o| o[field].as_u64().expect("a counter"))
        .sum()
}

/// Sum of `bytes.sent` of the `TCP-...` object that follows each `output-<entry>`.
fn bytes_sent_after(objects: &[Value], entry: &str) -> u64 {
    objects
        .windows(2)
        .filter(|w| w[0]["name"] == format!("output-{entry}"))
        .map(|w| {
            assert_eq!(w[1]["origin"], "omfwd");
            w[1]["bytes.sent"].as_u64().expect("bytes.sent")
        })
        .sum()
}

fn stats_file_objects(fwd: &Forwarder) -> Vec<String> {
    let text = std::fs::read_to_string(fwd.dir.path().join("stats.log")).unwrap_or_default();
    text.lines()
        .map(|line| {
            // `Tue Dec  1 01:23:37 2026: { ... }`
            let (stamp, json) = line.split_at(24);
            assert!(stamp.as_bytes()[3] == b' ' && stamp.ends_with(|c: char| c.is_ascii_digit()));
            json.strip_prefix(": ")
                .expect("': ' after the time")
                .to_string()
        })
        .collect()
}

#[test]
fn counters_in_the_monitoring_lines_are_true() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let (fwd, port) = forwarder(sink.port, &certs, 1000);
    send(port, 300);
    let wire_bytes: u64 = {
        let lines = sink.wait_for(300, WAIT);
        let events: Vec<_> = lines.iter().filter(|l| l.starts_with(b"<13>")).collect();
        assert_eq!(events.len(), 300);
        events
            .iter()
            .map(|l| (l.len() + l.len().to_string().len() + 1) as u64)
            .sum()
    };
    let mut objects = Vec::new();
    let counted = wait_until(WAIT, || {
        objects = stats_objects(&sink.lines());
        let input = format!("input-firewalls({port})");
        sum(&objects, &input, "submitted") == 300
            && sum(&objects, "ruleset-firewalls", "enqueued") == 300
            && sum(&objects, "output-firewalls", "processed") == 300
            && bytes_sent_after(&objects, "firewalls") == wire_bytes
            && objects
                .iter()
                .rev()
                .find(|o| o["name"] == "ruleset-firewalls")
                .is_some_and(|o| o["size"] == 0)
            // The monitoring entry's own lines are counted like an intake's, an interval
            // after they were sent.
            && sum(&objects, "output-monitoring", "processed") > 0
    });
    assert!(counted, "counters never added up:\n{objects:#?}");
    let input = objects
        .iter()
        .find(|o| o["name"] == format!("input-firewalls({port})"))
        .expect("input object");
    assert_eq!(input["origin"], "imtcp");
    assert_eq!(sum(&objects, "ruleset-firewalls[DA]", "enqueued"), 0);
    assert_eq!(sum(&objects, "ruleset-firewalls", "discarded.full"), 0);
    assert_eq!(sum(&objects, "output-firewalls", "failed"), 0);
    let maxq = objects
        .iter()
        .filter(|o| o["name"] == "ruleset-firewalls")
        .filter_map(|o| o["maxqsize"].as_u64())
        .max();
    assert!(maxq.is_some_and(|m| (1..=300).contains(&m)), "{maxq:?}");
    assert!(objects.iter().any(|o| o["name"] == "resource-usage"
        && o["origin"] == "impstats"
        && o["maxrss"].as_u64() > Some(0)));
    assert_eq!(sink.framing_errors(), Vec::<String>::new());

    // The connection's row counts what it delivered: the events and the monitoring lines.
    let (ok, json, err) = fwd.ctl(&["status", "--json"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&json).expect("status JSON");
    let conn = &status["uplink"]["counters"]["connections"][0];
    assert_eq!(conn["up"], true, "{status:#}");
    assert!(conn["events_sent"].as_u64() >= Some(300), "{status:#}");
    assert_eq!(
        conn["events_sent"], status["uplink"]["counters"]["events_sent"],
        "one connection delivered everything"
    );

    // STATS_FILE holds the same objects, as `<ctime>: <json>` lines.
    let file = stats_file_objects(&fwd);
    let names: Vec<Value> = file
        .iter()
        .map(|j| serde_json::from_str(j).expect("JSON"))
        .collect();
    assert!(sum(&names, &format!("input-firewalls({port})"), "submitted") >= 300);
    assert!(file.iter().any(|j| j.starts_with(
        "{ \"name\": \"ruleset-firewalls[DA]\", \"origin\": \"core.queue\", \"size\": "
    )));
}

/// Multiset of JSON texts.
fn counts(texts: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for t in texts {
        *m.entry(t).or_insert(0) += 1;
    }
    m
}

#[test]
fn a_destination_that_is_down_makes_monitoring_lines_queue_and_loses_none() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink_port = free_tcp_port();
    let (mut fwd, port) = forwarder(sink_port, &certs, 50);
    send(port, 200);
    // While the destination is down, the intervals go on (nothing waits for the uplink) and
    // show the events queued: 50 in memory (the intake's queue_size), 150 on disk.
    let queued = wait_until(WAIT, || {
        let file = stats_file_objects(&fwd);
        let has = |start: &str| file.iter().any(|j| j.starts_with(start));
        let intervals = file
            .iter()
            .filter(|j| j.contains("\"resource-usage\""))
            .count();
        has(r#"{ "name": "ruleset-firewalls", "origin": "core.queue", "size": 50,"#)
            && has(r#"{ "name": "ruleset-firewalls[DA]", "origin": "core.queue", "size": 150,"#)
            && intervals >= 3
    });
    let shown: Vec<String> = stats_file_objects(&fwd)
        .into_iter()
        .filter(|j| j.contains("ruleset-firewalls"))
        .collect();
    assert!(queued, "no interval showed the queued events:\n{shown:#?}");
    let monitoring_queued = stats_file_objects(&fwd)
        .iter()
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .filter(|o| o["name"] == "ruleset-monitoring")
        .filter_map(|o| o["size"].as_u64())
        .max();
    assert!(
        monitoring_queued > Some(0),
        "the monitoring lines queue too"
    );

    // `sekoia-ctl status` shows the same backlog, in events and bytes.
    let (ok, json, err) = fwd.ctl(&["status", "--json"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&json).expect("status JSON");
    let queue = &status["intakes"][0]["queue"];
    assert_eq!(queue["ring_events"], 50, "{status:#}");
    assert!(queue["ring_bytes"].as_u64() > Some(50 * 40), "{status:#}");
    assert_eq!(queue["journal_events"], 150, "{status:#}");
    assert_eq!(queue["journal_enqueued"], 150, "{status:#}");
    // Sent before three intervals of 1 s went by: the oldest has waited that long at least.
    assert!(queue["oldest_age_ms"].as_u64() >= Some(2000), "{status:#}");
    let (ok, table, _) = fwd.ctl(&["status"]);
    assert!(
        ok && table.contains(" 50 ev ") && table.contains(" 150 ev "),
        "{table}"
    );
    // The uplink's one connection has its own row: down, since when, and why.
    let conn = &status["uplink"]["counters"]["connections"][0];
    assert_eq!(conn["up"], false, "{status:#}");
    assert!(conn["since_ms"].as_u64() > Some(0), "{status:#}");
    let why = conn["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("Connection refused"), "{status:#}");
    let row = table
        .lines()
        .find(|l| l.starts_with("conn 0"))
        .unwrap_or_default();
    assert!(
        row.contains("down") && row.contains("Connection refused"),
        "{table}"
    );

    let written_while_down = counts(stats_file_objects(&fwd));
    let sink = TlsSink::start_on(&certs, sink_port);
    let mut missing = Vec::new();
    let all_arrived = wait_until(WAIT * 2, || {
        let lines = sink.lines();
        let received = counts(stats_objects(&lines).iter().map(|o| o.to_string()));
        let written = written_while_down.iter().map(|(json, n)| {
            let canonical = serde_json::from_str::<Value>(json)
                .expect("JSON")
                .to_string();
            (canonical, *n)
        });
        missing = written
            .filter(|(json, n)| received.get(json).copied().unwrap_or(0) < *n)
            .map(|(json, _)| json)
            .collect();
        let events = lines.iter().filter(|l| l.starts_with(b"<13>")).count();
        missing.is_empty() && events == 200
    });
    assert!(all_arrived, "monitoring lines lost: {missing:#?}");
    // Once delivered, both tiers are reported empty again.
    let drained = wait_until(WAIT, || {
        let objects = stats_objects(&sink.lines());
        let last = |name: &str| objects.iter().rev().find(|o| o["name"] == name).cloned();
        last("ruleset-firewalls").is_some_and(|o| o["size"] == 0)
            && last("ruleset-firewalls[DA]").is_some_and(|o| o["size"] == 0 && o["maxqsize"] == 150)
    });
    assert!(drained, "the queue sizes did not come back to 0");
    fwd.terminate(Duration::from_secs(40));
}

#[test]
fn with_a_workers_user_the_monitoring_queue_spills_as_that_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        // Only root can switch users (privileges.rs checks the refusal).
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("user database")
        .expect("a user named nobody");
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    std::fs::set_permissions(certs.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(&certs.ca_pem, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let sink_port = free_tcp_port();
    let port = free_tcp_port();
    // The monitoring entry's ring holds 5 lines: with the destination down it spills.
    let yaml = format!(
        "intakes:\n- name: RunAs\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n\
         - name: Monitoring\n  stats: true\n  intake_key: {STATS_KEY}\n  queue_size: 5\n"
    );
    let mut fwd = ForwarderBuilder::new(&yaml, sink_port)
        .ca_file(&certs.ca_pem)
        .sandbox_mode(0o755)
        .arg("--user")
        .arg("nobody")
        .arg("--stats-interval")
        .arg("1")
        .start();
    let journal = fwd.spool.join("journal-stats");
    // Two intervals (26 lines) went to a ring of 5: the journal holds the rest.
    let spilled = wait_until(WAIT, || {
        let file = stats_file_objects(&fwd);
        let on_disk = file.iter().any(|j| {
            j.starts_with(r#"{ "name": "ruleset-monitoring[DA]", "origin": "core.queue", "size": "#)
                && !j.contains(r#""size": 0,"#)
        });
        on_disk && !sekoia_tests::forwarder::find_files(&journal, "seg").is_empty()
    });
    assert!(
        spilled,
        "the monitoring lines did not spill:\n{}",
        fwd.stderr()
    );
    for entry in std::fs::read_dir(&journal).expect("journal folder") {
        let path = entry.expect("entry").path();
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(
            meta.uid(),
            nobody.uid.as_raw(),
            "{} is nobody's",
            path.display()
        );
    }
    let written = counts(stats_file_objects(&fwd));
    assert!(written.len() > 13, "at least two intervals");
    let sink = TlsSink::start_on(&certs, sink_port);
    let arrived = wait_until(WAIT * 2, || {
        let received = counts(stats_objects(&sink.lines()).iter().map(|o| o.to_string()));
        written.iter().all(|(json, n)| {
            let canonical = serde_json::from_str::<Value>(json)
                .expect("JSON")
                .to_string();
            received.get(&canonical).copied().unwrap_or(0) >= *n
        })
    });
    assert!(
        arrived,
        "monitoring lines written while down did not all arrive"
    );
    assert!(fwd.terminate(WAIT).success(), "{}", fwd.stderr());
}
