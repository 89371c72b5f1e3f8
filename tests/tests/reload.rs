//! Reload (SIGHUP and `sekoia-ctl reload`) against the real forwarder: added, changed and
//! removed intakes take effect, unchanged ones keep their worker and their senders'
//! connections, a removed intake's queue is still delivered, a bad configuration changes
//! nothing, and events flowing during a reload all arrive (counted by sequence number).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sekoia_tests::events::{duplicates, sequence_counts};
use sekoia_tests::{
    free_port_both, free_tcp_port, is_listening, wait_until, Forwarder, ForwarderBuilder,
    TestCerts, TlsSink,
};

const KEY_A: &str = "ReloadIntakeKeyAAAAAAAAAA";
const KEY_B: &str = "ReloadIntakeKeyBBBBBBBBBB";
const KEY_C: &str = "ReloadIntakeKeyCCCCCCCCCC";
const KEY_A2: &str = "ReloadIntakeKeyA2A2A2A2A2";
const WAIT: Duration = Duration::from_secs(30);

fn entry(name: &str, protocol: &str, port: u16, key: &str) -> String {
    format!("- name: {name}\n  protocol: {protocol}\n  port: {port}\n  intake_key: {key}\n")
}

fn yaml(entries: &[String]) -> String {
    format!("---\nintakes:\n{}", entries.concat())
}

fn start(entries: &[String]) -> (TlsSink, Forwarder, TestCerts) {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let fwd = ForwarderBuilder::new(&yaml(entries), sink.port)
        .ca_file(&certs.ca_pem)
        .start();
    (sink, fwd, certs)
}

fn rewrite(fwd: &Forwarder, entries: &[String]) {
    std::fs::write(&fwd.config, yaml(entries)).expect("rewrite intakes.yaml");
}

fn line(seq: u64, tag: &str) -> String {
    format!("<13>Nov 30 10:00:00 dev app: {tag} seq={seq} \n")
}

fn send(port: u16, tag: &str, seqs: std::ops::Range<u64>) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    for i in seqs {
        c.write_all(line(i, tag).as_bytes()).expect("send");
    }
}

/// Waits until the sink holds `n` lines tagged `tag`; returns them.
fn wait_tagged(sink: &TlsSink, tag: &str, n: usize) -> Vec<Vec<u8>> {
    let tagged = sink.wait_tagged(tag, n, WAIT);
    assert!(
        tagged.len() >= n,
        "{} of {n} `{tag}` lines arrived",
        tagged.len()
    );
    tagged
}

fn reload_ok(fwd: &Forwarder) -> String {
    let (code, out, err) = fwd.ctl_code(&["reload"]);
    assert_eq!(code, Some(0), "reload: {out}\n{err}\n{}", fwd.stderr());
    out
}

#[test]
fn reload_adds_and_removes_intakes_and_keeps_unchanged_workers_and_connections() {
    let (pa, pb, pc) = (free_tcp_port(), free_tcp_port(), free_port_both());
    let a = entry("Firewalls", "tcp", pa, KEY_A);
    let b = entry("Proxies", "tcp", pb, KEY_B);
    let (sink, fwd, _certs) = start(&[a.clone(), b]);
    let worker_a = fwd.worker_pids(&format!("--intake tcp-{pa}"));
    assert_eq!(worker_a.len(), 1);
    let mut kept = TcpStream::connect(("127.0.0.1", pa)).expect("connect");
    for i in 0..100 {
        kept.write_all(line(i, "kept").as_bytes()).unwrap();
    }
    wait_tagged(&sink, "kept", 100);

    rewrite(&fwd, &[a, entry("Servers", "udp", pc, KEY_C)]);
    let out = reload_ok(&fwd);
    assert!(
        out.contains("1 added, 0 changed, 1 removed, 1 unchanged"),
        "{out}"
    );
    assert!(
        out.contains("added:   Servers") && out.contains("removed: Proxies"),
        "{out}"
    );

    assert_eq!(
        fwd.worker_pids(&format!("--intake tcp-{pa}")),
        worker_a,
        "the unchanged intake keeps its worker"
    );
    for i in 100..200 {
        kept.write_all(line(i, "kept").as_bytes())
            .expect("the unchanged intake's connection stays open");
    }
    let kept_lines = wait_tagged(&sink, "kept", 200);
    let counts = sequence_counts(&kept_lines);
    assert_eq!(counts.len(), 200, "every event on the kept connection");
    assert_eq!(duplicates(&counts), 0);

    assert!(
        wait_until(WAIT, || !is_listening(pb)),
        "the removed intake's port closes"
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ok = wait_until(WAIT, || {
        let _ = udp.send_to(line(0, "added").as_bytes(), ("127.0.0.1", pc));
        !sink.tagged("added").is_empty()
    });
    assert!(ok, "the added UDP intake delivers\n{}", fwd.stderr());
    let added = sink.tagged("added")[0].clone();
    assert!(
        String::from_utf8_lossy(&added).contains(KEY_C),
        "tagged with its key"
    );
}

#[test]
fn a_removed_intake_s_queued_events_are_still_delivered() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink_port = free_tcp_port();
    let (pa, pb) = (free_tcp_port(), free_tcp_port());
    let a = entry("Firewalls", "tcp", pa, KEY_A);
    let b = entry("Proxies", "tcp", pb, KEY_B);
    let fwd = ForwarderBuilder::new(&yaml(&[a.clone(), b]), sink_port)
        .ca_file(&certs.ca_pem)
        .start();
    send(pb, "queued", 0..300);
    // The destination is down: the events wait in the removed intake's queue.
    let status_ok = wait_until(WAIT, || {
        let (ok, out, _) = fwd.ctl(&["status", "--json"]);
        ok && out.contains("\"received\": 300")
    });
    assert!(status_ok, "300 events received\n{}", fwd.stderr());
    rewrite(&fwd, &[a]);
    fwd.sighup();
    assert!(wait_until(WAIT, || !is_listening(pb)), "port closed");
    let sink = TlsSink::start_on(&certs, sink_port);
    let lines = wait_tagged(&sink, "queued", 300);
    let counts = sequence_counts(&lines);
    assert_eq!(counts.len(), 300, "nothing lost");
    assert!(String::from_utf8_lossy(&lines[0]).contains(KEY_B));
    println!("duplicates: {}", duplicates(&counts));
}

#[test]
fn an_invalid_configuration_is_rejected_whole_and_the_running_one_stays() {
    let pa = free_tcp_port();
    let a = entry("Firewalls", "tcp", pa, KEY_A);
    let (sink, fwd, _certs) = start(std::slice::from_ref(&a));
    let worker_a = fwd.worker_pids("ingest-worker");

    let bad = "- name: Broken\n  protocol: tcp\n  intake_key: short\n".to_string();
    rewrite(&fwd, &[a.clone(), bad]);
    let (code, out, err) = fwd.ctl_code(&["reload"]);
    assert_eq!(code, Some(3), "rejected: {out}\n{err}");
    assert!(err.contains("reload rejected"), "{err}");
    assert!(
        err.contains("Broken") && err.contains("port") && err.contains("intake_key"),
        "every problem is listed: {err}"
    );

    // A port another process holds: rejected before anything changes.
    let holder = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let taken = holder.local_addr().unwrap().port();
    rewrite(&fwd, &[a, entry("Taken", "tcp", taken, KEY_C)]);
    let (code, _out, err) = fwd.ctl_code(&["reload"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains(&format!("port {taken}")), "{err}");

    assert_eq!(
        fwd.worker_pids("ingest-worker"),
        worker_a,
        "nothing restarted"
    );
    send(pa, "still", 0..50);
    assert_eq!(sequence_counts(&wait_tagged(&sink, "still", 50)).len(), 50);
}

/// Sends numbered batches to `port` until `stop`, each confirmed by the worker closing its
/// side after reading it all; an unconfirmed batch is sent again. Returns the confirmed.
fn send_until(port: u16, tag: &'static str, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut confirmed = Vec::new();
    let mut next = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        let batch: String = (next..next + 50).map(|i| line(i, tag)).collect();
        if c.write_all(batch.as_bytes()).is_ok() && c.shutdown(Shutdown::Write).is_ok() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            if matches!(c.read(&mut [0u8; 1]), Ok(0)) {
                confirmed.extend(next..next + 50);
                next += 50;
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    confirmed
}

#[test]
fn events_flowing_through_a_reload_that_changes_and_adds_intakes_all_arrive() {
    let (pa, pc) = (free_tcp_port(), free_tcp_port());
    let (sink, fwd, _certs) = start(&[entry("Firewalls", "tcp", pa, KEY_A)]);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = thread::spawn({
        let stop = Arc::clone(&stop);
        move || send_until(pa, "flow", stop)
    });
    assert!(wait_until(WAIT, || sink.tagged("flow").len() >= 500));

    // A new key for the flowing intake (its worker is replaced) and a new intake (the
    // uplink is replaced), by SIGHUP.
    rewrite(
        &fwd,
        &[
            entry("Firewalls", "tcp", pa, KEY_A2),
            entry("Servers", "tcp", pc, KEY_C),
        ],
    );
    fwd.sighup();
    assert!(wait_until(WAIT, || is_listening(pc)), "{}", fwd.stderr());
    let rekeyed = || {
        sink.lines()
            .iter()
            .any(|l| String::from_utf8_lossy(l).contains(KEY_A2))
    };
    assert!(
        wait_until(WAIT, rekeyed),
        "new key in use\n{}",
        fwd.stderr()
    );
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let confirmed = sender.join().unwrap();

    let want = confirmed.len();
    let ok = wait_until(WAIT, || {
        let counts = sequence_counts(&sink.tagged("flow"));
        confirmed.iter().all(|s| counts.contains_key(s))
    });
    let counts = sequence_counts(&sink.tagged("flow"));
    let missing: Vec<&u64> = confirmed
        .iter()
        .filter(|s| !counts.contains_key(s))
        .collect();
    assert!(
        ok,
        "{} of {want} confirmed events missing, first {:?}\n{}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        fwd.stderr()
    );
    println!(
        "{want} confirmed events delivered, {} duplicates",
        duplicates(&counts)
    );
    send(pc, "new", 0..10);
    assert_eq!(sequence_counts(&wait_tagged(&sink, "new", 10)).len(), 10);
}
