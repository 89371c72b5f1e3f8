use super::*;
use crate::config::{fixtures, Settings};
use crate::control::status::{DiskStatus, ForwarderInfo, UplinkStatus, WorkerState};

fn settings() -> Settings {
    let mut settings = fixtures::settings();
    settings.memory_messages = 100_000;
    settings.disk_space = 1 << 30;
    settings
}

fn intake(id: u16, name: &str, protocol: Protocol, port: u16) -> Intake {
    let mut intake = fixtures::intake(id, name, protocol, port, "KEY");
    intake.queue_size = 1000;
    intake
}

fn config() -> ForwarderConfig {
    ForwarderConfig {
        settings: settings(),
        intakes: vec![
            intake(0, "Fire Walls", Protocol::Tcp, 20516),
            intake(1, "Proxies", Protocol::Udp, 20517),
        ],
        stats: Some(StatsIntake {
            name: "Monitoring".to_string(),
            intake_key: "MKEY".to_string(),
            queue_size: 1000,
            position: 2,
            destination: settings().destination,
        }),
        warnings: Vec::new(),
    }
}

fn worker(pid: u32) -> WorkerStatus {
    WorkerStatus {
        state: WorkerState::Running,
        pid: Some(pid),
        restarts: 0,
        report_age_ms: Some(100),
    }
}

/// A report where every counter of intake `i` is `base` (+ `i`), events in the ring 7.
fn report(base: u64, pids: [u32; 3]) -> StatusReport {
    let intake_status = |i: usize, name: &str, proto: &str, port: u16| IntakeStatus {
        name: name.to_string(),
        protocol: proto.to_string(),
        port,
        destination: "intake.sekoia.io:10514".to_string(),
        worker: worker(pids[i]),
        input: Some(InputCountersSnapshot {
            received: base + i as u64,
            dropped_full: base / 10,
            connections_open: 2,
            ..Default::default()
        }),
        received_per_s: 0.0,
        events_sent: base,
        events_resent: 0,
        journal_bytes: 0,
        queue: Some(QueueSnapshot {
            ring_enqueued: base,
            ring_events: 7,
            ring_bytes: 700,
            ring_max_events: 9,
            journal_enqueued: base / 2,
            journal_events: 3,
            oldest_age_ms: Some(1234),
            ..Default::default()
        }),
    };
    let source = |name: &str| SourceSnapshot {
        name: name.to_string(),
        events_sent: base,
        bytes_sent: base * 100,
        resent_events: base / 4,
    };
    let uplink = UplinkStatus {
        destination: "intake.sekoia.io:10514".to_string(),
        worker: worker(pids[2]),
        counters: Some(UplinkSnapshot {
            connects: base / 100,
            connections_up: 2,
            sources: vec![source("tcp-20516"), source("udp-20517"), source("stats")],
            ..Default::default()
        }),
        sent_per_s: 0.0,
        connections_sent_per_s: Vec::new(),
        down_s: 5,
    };
    StatusReport {
        forwarder: ForwarderInfo {
            version: "0".into(),
            pid: 1,
            uptime_s: 1,
            destination: "intake.sekoia.io:10514".into(),
            stopping: false,
        },
        intakes: vec![
            intake_status(0, "Fire Walls", "tcp", 20516),
            intake_status(1, "Proxies", "udp", 20517),
        ],
        uplinks: vec![uplink.clone()],
        uplink,
        disk: DiskStatus {
            limit_bytes: 10,
            configured_bytes: 20,
            used_bytes: 3,
        },
    }
}

fn objects(now: &StatusReport, prev: Option<&StatusReport>) -> Vec<StatsObject> {
    let cfg = config();
    Interval {
        cfg: &cfg,
        now,
        prev,
        stats_queue: QueueSnapshot {
            ring_enqueued: 30,
            ring_events: 1,
            ..Default::default()
        },
        prev_stats_queue: QueueSnapshot {
            ring_enqueued: 20,
            ..Default::default()
        },
        usage: ResourceUsage::default(),
    }
    .objects()
}

fn find<'a>(objects: &'a [StatsObject], name: &str) -> &'a StatsObject {
    objects
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no object {name}"))
}

#[test]
fn names_origins_and_fields_are_the_reference_ones() {
    let now = report(1000, [10, 11, 12]);
    let all = objects(&now, None);
    let shape = |name: &str| {
        let o = find(&all, name);
        let fields: Vec<&str> = o.fields.iter().map(|(f, _)| *f).collect();
        (o.origin, fields)
    };
    assert_eq!(
        shape("input-fire_walls(20516)"),
        ("imtcp", vec!["submitted"])
    );
    assert_eq!(
        shape("input-proxies(*/20517/IPv4)"),
        ("imudp", vec!["submitted"])
    );
    let queue = vec![
        "size",
        "enqueued",
        "full",
        "discarded.full",
        "discarded.nf",
        "maxqsize",
    ];
    for name in ["fire_walls", "proxies", "monitoring"] {
        assert_eq!(
            shape(&format!("ruleset-{name}")),
            ("core.queue", queue.clone())
        );
        assert_eq!(
            shape(&format!("ruleset-{name}[DA]")),
            ("core.queue", queue.clone())
        );
        assert_eq!(
            shape(&format!("output-{name}")),
            (
                "core.action",
                vec![
                    "processed",
                    "failed",
                    "suspended",
                    "suspended.duration",
                    "resumed",
                    "resent"
                ]
            )
        );
    }
    let omfwd: Vec<_> = all
        .iter()
        .filter(|o| o.name == "TCP-intake.sekoia.io-10514")
        .collect();
    assert_eq!(
        omfwd.len(),
        3,
        "one forwarding action per entry, as the reference"
    );
    assert!(omfwd
        .iter()
        .all(|o| o.origin == "omfwd" && o.get("bytes.sent").is_some()));
    assert_eq!(
        shape("resource-usage"),
        ("impstats", vec!["utime", "stime", "maxrss", "openfiles"])
    );
    assert_eq!(find(&all, "intake-fire_walls").origin, "sekoia-forwarder");
    assert_eq!(find(&all, "forwarder").origin, "sekoia-forwarder");
}

#[test]
fn resettable_counters_count_the_interval_and_gauges_the_present() {
    let prev = report(1000, [10, 11, 12]);
    let now = report(1500, [10, 11, 12]);
    let all = objects(&now, Some(&prev));
    assert_eq!(
        find(&all, "input-fire_walls(20516)").get("submitted"),
        Some(500)
    );
    let ruleset = find(&all, "ruleset-fire_walls");
    assert_eq!(ruleset.get("enqueued"), Some(500));
    assert_eq!(ruleset.get("size"), Some(7), "a gauge: the ring now");
    assert_eq!(ruleset.get("maxqsize"), Some(9));
    assert_eq!(ruleset.get("discarded.full"), Some(50));
    assert_eq!(
        find(&all, "ruleset-fire_walls[DA]").get("enqueued"),
        Some(250)
    );
    assert_eq!(find(&all, "ruleset-fire_walls[DA]").get("size"), Some(3));
    let output = find(&all, "output-proxies");
    assert_eq!(output.get("processed"), Some(500));
    assert_eq!(output.get("resent"), Some(125));
    assert_eq!(output.get("resumed"), Some(5));
    assert_eq!(output.get("suspended.duration"), Some(5));
    let bytes: Vec<_> = all
        .iter()
        .filter(|o| o.name.starts_with("TCP-"))
        .map(|o| o.get("bytes.sent"))
        .collect();
    assert_eq!(bytes, [Some(50_000); 3]);
    assert_eq!(find(&all, "ruleset-monitoring").get("enqueued"), Some(10));
    assert_eq!(find(&all, "ruleset-monitoring").get("size"), Some(1));
    assert_eq!(find(&all, "forwarder").get("uplink.connections"), Some(2));
    let intake = find(&all, "intake-fire_walls");
    assert_eq!(intake.get("backlog.memory.events"), Some(7));
    assert_eq!(intake.get("backlog.oldest.age_ms"), Some(1234));
}

#[test]
fn a_restarted_worker_counts_from_zero_never_negative() {
    let prev = report(1000, [10, 11, 12]);
    let now = report(40, [20, 11, 13]);
    let all = objects(&now, Some(&prev));
    assert_eq!(
        find(&all, "input-fire_walls(20516)").get("submitted"),
        Some(40)
    );
    assert_eq!(find(&all, "ruleset-fire_walls").get("enqueued"), Some(40));
    assert_eq!(find(&all, "output-fire_walls").get("processed"), Some(40));
    // The same udp worker, whose counter went down (it cannot): counted from 0 as well.
    assert_eq!(
        find(&all, "input-proxies(*/20517/IPv4)").get("submitted"),
        Some(41)
    );
}

#[test]
fn each_intake_s_output_names_and_counts_its_own_destination() {
    let usa = Destination {
        host: "intake.usa1.sekoia.io".to_string(),
        port: 10514,
        output: Default::default(),
    };
    let mut cfg = config();
    cfg.intakes[1].destination = usa.clone();
    let mut now = report(1000, [10, 11, 12]);
    now.intakes[1].destination = usa.to_string();
    let mut second = now.uplink.clone();
    second.destination = usa.to_string();
    second.worker = worker(13);
    if let Some(c) = second.counters.as_mut() {
        c.sources = vec![SourceSnapshot {
            name: "udp-20517".to_string(),
            events_sent: 42,
            bytes_sent: 4200,
            resent_events: 0,
        }];
    }
    if let Some(c) = now.uplinks[0].counters.as_mut() {
        c.sources.retain(|s| s.name != "udp-20517");
    }
    now.uplinks.push(second);
    let all = Interval {
        cfg: &cfg,
        now: &now,
        prev: None,
        stats_queue: QueueSnapshot::default(),
        prev_stats_queue: QueueSnapshot::default(),
        usage: ResourceUsage::default(),
    }
    .objects();
    let field = |name: &str, f: &str| {
        find(&all, name)
            .fields
            .iter()
            .find(|(k, _)| *k == f)
            .map(|(_, v)| *v)
    };
    assert_eq!(field("output-proxies", "processed"), Some(42));
    assert!(all
        .iter()
        .any(|o| o.name == "TCP-intake.usa1.sekoia.io-10514"));
    assert_eq!(field("output-fire_walls", "processed"), Some(1000));
    assert!(all
        .iter()
        .any(|o| o.name == "uplink-intake.sekoia.io:10514"));
    assert!(all
        .iter()
        .any(|o| o.name == "uplink-intake.usa1.sekoia.io:10514"));
}
