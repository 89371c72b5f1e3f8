//! A large disk backlog (the journal a long outage leaves): start-up must be quick and must
//! not load it into memory, and all of it is delivered. The drain rate is measured and
//! printed, not asserted (it depends on the machine): `#[ignore]`d, run with
//! `cargo build --release -p sekoia-forwarder && SEKOIA_FORWARDER_BIN=$PWD/target/release/sekoia-forwarder \
//!  cargo test --release -p sekoia-tests --test backlog -- --ignored --nocapture`
//! (`BACKLOG_MB`, default 1024, sets the size).

use std::time::{Duration, Instant};

use sekoia_shared::queue::{DiskBudget, JournalOptions, JournalWriter, RecordMeta};
use sekoia_tests::forwarder::children_of;
use sekoia_tests::{free_tcp_port, wait_until, ForwarderBuilder, TestCerts, TlsSink};

const KEY: &str = "BacklogIntakeKey012345";

/// Sum of VmRSS over `pids`, in KiB.
fn rss_kib(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

#[test]
#[ignore = "benchmark: writes a large journal; run by hand"]
fn startup_with_a_large_backlog_is_quick_and_lean_and_all_of_it_drains() {
    let mb: u64 = std::env::var("BACKLOG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let certs = TestCerts::new(&["127.0.0.1"]);
    let port = free_tcp_port();
    let sink_port = free_tcp_port();
    let yaml = format!(
        "intakes:\n- name: Backlog\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n"
    );
    let mut fwd = ForwarderBuilder::new(&yaml, sink_port)
        .ca_file(&certs.ca_pem)
        .env("DISK_SPACE", "100g")
        .start();
    let status = fwd.terminate(Duration::from_secs(60));
    assert!(status.success());

    // Fill the intake's journal directly, as a long outage would have.
    let dir = fwd.spool.join(format!("journal-tcp-{port}"));
    let budget = DiskBudget::create(&fwd.dir.path().join("budget"), u64::MAX / 2, 0).unwrap();
    let mut w = JournalWriter::open(&dir, 0, budget, JournalOptions::default()).unwrap();
    let pad = "x".repeat(200);
    let mut events = 0u64;
    let mut bytes = 0u64;
    let started = Instant::now();
    while bytes < mb << 20 {
        let line = format!(
            "<13>1 2024-05-01T10:00:00.000000+00:00 host app - LOG [SEKOIA@53288 intake_key=\"{KEY}\"] seq={events} {pad}\n"
        );
        let wire = format!("{} {line}", line.len());
        assert!(w.append(&RecordMeta::default(), wire.as_bytes()).unwrap());
        events += 1;
        bytes += wire.len() as u64;
    }
    w.close().unwrap();
    eprintln!(
        "wrote {events} events, {} MiB of journal in {:?}",
        bytes >> 20,
        started.elapsed()
    );

    let started = Instant::now();
    fwd.spawn();
    let ready = started.elapsed();
    let pids: Vec<i32> = std::iter::once(fwd.pid() as i32)
        .chain(children_of(fwd.pid() as i32))
        .collect();
    let rss_ready = rss_kib(&pids);
    eprintln!(
        "start-up with {} MiB queued on disk: ready in {ready:?}, RSS of all processes {} MiB",
        bytes >> 20,
        rss_ready >> 10
    );
    assert!(ready < Duration::from_secs(10), "start-up took {ready:?}");
    assert!(
        rss_ready < 200 << 10,
        "the backlog is not loaded into memory: {} MiB",
        rss_ready >> 10
    );

    let sink = TlsSink::start_on(&certs, sink_port);
    let drain = Instant::now();
    let mut peak = rss_ready;
    assert!(
        wait_until(Duration::from_secs(600), || {
            peak = peak.max(rss_kib(&pids));
            sink.count() as u64 >= events
        }),
        "the whole backlog was delivered: {} of {events}",
        sink.count()
    );
    let took = drain.elapsed();
    eprintln!(
        "drained {events} events in {took:?}: {:.0} events/s, {:.1} MiB/s; peak RSS {} MiB",
        events as f64 / took.as_secs_f64(),
        bytes as f64 / took.as_secs_f64() / 1048576.0,
        peak >> 10
    );
}
