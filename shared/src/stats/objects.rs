//! The monitoring objects of one interval, built from two successive [`StatusReport`]s (the
//! supervisor's picture, the same one `sekoia-ctl status` and Prometheus show): counters
//! marked R in SPEC §9 are what grew during the interval, the others are values now.
//!
//! Per port intake, in configuration order (`<name>` is the intake's `metric_name`, as the
//! reference names its rsyslog objects):
//!
//! | object | origin | fields (R: this interval) |
//! |---|---|---|
//! | `input-<name>(<port>)` (tcp, tls), `input-<name>(*/<port>/IPv4)` (udp) | `imtcp` / `imudp` | `submitted` R: events framed |
//! | `ruleset-<name>` (the ring) | `core.queue` | `size` events in the ring; `enqueued` R put in the ring; `full` R times the ring was found full; `discarded.full` R datagrams dropped because ring and journal were full; `discarded.nf` R always 0 (nothing is discarded below full); `maxqsize` most events in the ring at once |
//! | `ruleset-<name>[DA]` (the journal) | `core.queue` | the same for the journal; `full` R counts events no tier could take (held back, or dropped when UDP); `discarded.full` 0 (drops are counted once, on the memory part) |
//! | `output-<name>` | `core.action` | `processed` R confirmed by the destination; `failed` R always 0 (an event is retried until delivered); `suspended` R connection failures of the uplink; `suspended.duration` seconds without any uplink connection; `resumed` R connections opened; extra `resent` R sent again after a broken connection |
//! | `TCP-<host>-<port>` | `omfwd` | `bytes.sent` R: the intake's bytes confirmed received (one object per intake, as the reference has one forwarding action per intake) |
//!
//! The monitoring entry has the same `ruleset-`, `[DA]`, `output-` and `TCP-` objects for its
//! own lines (`output-` and `TCP-` name the uplink of the entry's own destination). Then our
//! extra objects (origin `sekoia-forwarder`, see `docs/operations.md`): `intake-<name>` per
//! port intake, `uplink-<host:port>` per destination, and `forwarder`; and `resource-usage`
//! (`impstats`).
//!
//! Counters restart from 0 when their worker restarts: a worker that is not the one of the
//! previous report (another pid) counts from 0, so an interval never shows a negative or a
//! wrapped value; what the old worker counted after the previous report is not shown.

use crate::config::{Destination, ForwarderConfig, Intake, Protocol, StatsIntake};
use crate::control::status::{IntakeStatus, StatusReport, UplinkStatus, WorkerStatus};
use crate::input::InputCountersSnapshot;
use crate::queue::intake::QueueSnapshot;
use crate::queue::layout::QueueKey;
use crate::uplink::{SourceSnapshot, UplinkSnapshot};

use super::impstats::StatsObject;
use super::usage::ResourceUsage;

/// Our own objects' origin.
const OURS: &str = "sekoia-forwarder";

/// Everything one interval's objects are made of.
pub struct Interval<'a> {
    pub cfg: &'a ForwarderConfig,
    pub now: &'a StatusReport,
    /// The report of the previous interval (None for the first).
    pub prev: Option<&'a StatusReport>,
    /// The monitoring entry's queue now and at the previous interval.
    pub stats_queue: QueueSnapshot,
    pub prev_stats_queue: QueueSnapshot,
    pub usage: ResourceUsage,
}

impl Interval<'_> {
    /// Every object of the interval, in output order.
    pub fn objects(&self) -> Vec<StatsObject> {
        let mut out = Vec::new();
        for intake in &self.cfg.intakes {
            let Some(now) = self.now.intakes.iter().find(|i| i.name == intake.name) else {
                continue;
            };
            let prev = self
                .prev
                .and_then(|p| p.intakes.iter().find(|i| i.name == intake.name))
                .filter(|p| same_worker(&p.worker, &now.worker));
            out.push(input_object(intake, now, prev));
            let (q, pq) = (now.queue.unwrap_or_default(), prev.and_then(|p| p.queue));
            let dropped = grew(
                now.input.map(|i| i.dropped_full),
                prev.and_then(|p| p.input.map(|i| i.dropped_full)),
            );
            out.extend(queue_objects(&intake.metric_name, &q, pq.as_ref(), dropped));
            let source = QueueKey::of(intake).to_string();
            out.extend(self.output_objects(&intake.metric_name, &source, &intake.destination));
            out.push(intake_object(intake, now, prev));
        }
        if let Some(stats) = &self.cfg.stats {
            out.extend(self.stats_entry_objects(stats));
        }
        out.extend(self.uplink_objects());
        out.push(self.forwarder_object());
        out.push(self.usage.object());
        out
    }

    fn stats_entry_objects(&self, stats: &StatsIntake) -> Vec<StatsObject> {
        let name = crate::config::metric_name(&stats.name);
        let prev = self.prev.map(|_| self.prev_stats_queue);
        let mut out = queue_objects(&name, &self.stats_queue, prev.as_ref(), 0).to_vec();
        let source = QueueKey::STATS.to_string();
        out.extend(self.output_objects(&name, &source, &stats.destination));
        out
    }

    /// `output-<name>` and `TCP-<host>-<port>` of one queue (the uplink source `source` of
    /// the uplink of `dest`).
    fn output_objects(&self, name: &str, source: &str, dest: &Destination) -> [StatsObject; 2] {
        let (now, prev) = self.uplink(&dest.to_string());
        let (counters, prev_counters) = (now.and_then(|u| u.counters.as_ref()), prev);
        let find = |u: Option<&UplinkSnapshot>| -> Option<SourceSnapshot> {
            u.and_then(|u| u.sources.iter().find(|s| s.name == source).cloned())
        };
        let (s, ps) = (find(counters), find(prev_counters));
        let field = |f: fn(&SourceSnapshot) -> u64| grew(s.as_ref().map(f), ps.as_ref().map(f));
        let pool = |f: fn(&UplinkSnapshot) -> u64| grew(counters.map(f), prev_counters.map(f));
        let output = StatsObject::new(format!("output-{name}"), "core.action")
            .with("processed", field(|s| s.events_sent))
            .with("failed", 0)
            .with("suspended", pool(failures))
            .with("suspended.duration", now.map_or(0, |u| u.down_s))
            .with("resumed", pool(|u| u.connects))
            .with("resent", field(|s| s.resent_events));
        let omfwd = StatsObject::new(format!("TCP-{}-{}", dest.host, dest.port), "omfwd")
            .with("bytes.sent", field(|s| s.bytes_sent));
        [output, omfwd]
    }

    /// Every destination's uplink now (the single `uplink` of an older report otherwise).
    fn uplinks(&self) -> Vec<&UplinkStatus> {
        if self.now.uplinks.is_empty() {
            vec![&self.now.uplink]
        } else {
            self.now.uplinks.iter().collect()
        }
    }

    /// The uplink of `destination` now, and its counters at the previous interval (None when
    /// another worker).
    fn uplink(&self, destination: &str) -> (Option<&UplinkStatus>, Option<&UplinkSnapshot>) {
        let now = self
            .uplinks()
            .into_iter()
            .find(|u| u.destination == destination || u.destination.is_empty());
        let prev = self.prev.and_then(|p| {
            let all = if p.uplinks.is_empty() {
                std::slice::from_ref(&p.uplink)
            } else {
                &p.uplinks[..]
            };
            let before = all
                .iter()
                .find(|u| u.destination == destination || u.destination.is_empty())?;
            let same = now.is_some_and(|n| same_worker(&before.worker, &n.worker));
            same.then_some(before.counters.as_ref()).flatten()
        });
        (now, prev)
    }

    /// `uplink-<host:port>` per destination (ours): its pool's state this interval.
    fn uplink_objects(&self) -> Vec<StatsObject> {
        self.uplinks()
            .into_iter()
            .map(|u| {
                let (_, prev) = self.uplink(&u.destination);
                let now = u.counters.as_ref();
                let pool = |f: fn(&UplinkSnapshot) -> u64| grew(now.map(f), prev.map(f));
                StatsObject::new(format!("uplink-{}", u.destination), OURS)
                    .with("connections", now.map_or(0, |c| c.connections_up))
                    .with("connect.failures", pool(|c| c.connect_failures))
                    .with("tls.failures", pool(|c| c.tls_failures))
                    .with("write.failures", pool(|c| c.write_failures))
                    .with("processed", pool(|c| c.events_sent))
                    .with("resent", pool(|c| c.resent_events))
                    .with("down.duration", u.down_s)
                    .with("worker.restarts", u.worker.restarts)
                    .with("relp.sessions", pool(|c| c.relp_sessions))
                    .with("relp.window", now.map_or(0, |c| c.relp_window_in_use))
                    .with("relp.acknowledged", pool(|c| c.relp_acknowledged))
            })
            .collect()
    }

    /// `forwarder` (ours): the whole forwarder, every uplink together.
    fn forwarder_object(&self) -> StatsObject {
        let uplinks = self.uplinks();
        let mut pool = [0u64; 5];
        for u in &uplinks {
            let (_, prev) = self.uplink(&u.destination);
            let now = u.counters.as_ref();
            let grown = |f: fn(&UplinkSnapshot) -> u64| grew(now.map(f), prev.map(f));
            pool[0] += now.map_or(0, |c| c.connections_up);
            pool[1] += grown(|c| c.connect_failures);
            pool[2] += grown(|c| c.tls_failures);
            pool[3] += grown(|c| c.write_failures);
            pool[4] += grown(|c| c.resent_events);
        }
        let restarts = uplinks.iter().map(|u| u.worker.restarts).sum::<u64>()
            + self
                .now
                .intakes
                .iter()
                .map(|i| i.worker.restarts)
                .sum::<u64>();
        let disk = &self.now.disk;
        StatsObject::new("forwarder", OURS)
            .with("uplink.connections", pool[0])
            .with("uplink.connect.failures", pool[1])
            .with("uplink.tls.failures", pool[2])
            .with("uplink.write.failures", pool[3])
            .with("resent", pool[4])
            .with("journal.bytes", disk.used_bytes)
            .with("journal.limit", disk.limit_bytes)
            .with("journal.configured", disk.configured_bytes)
            .with("worker.restarts", restarts)
    }
}

/// Connection failures of every kind (rsyslog's `suspended` counts each).
fn failures(u: &UplinkSnapshot) -> u64 {
    u.connect_failures + u.tls_failures + u.write_failures
}

/// True when both reports come from the same worker process.
fn same_worker(prev: &WorkerStatus, now: &WorkerStatus) -> bool {
    prev.pid.is_some() && prev.pid == now.pid
}

/// What a counter grew by since `prev` (all of it when there is no previous value, or when
/// it went down: a restarted worker counts from 0).
fn grew(now: Option<u64>, prev: Option<u64>) -> u64 {
    let now = now.unwrap_or(0);
    match prev {
        Some(p) if p <= now => now - p,
        _ => now,
    }
}

fn input_object(intake: &Intake, now: &IntakeStatus, prev: Option<&IntakeStatus>) -> StatsObject {
    let (name, origin) = match intake.protocol {
        Protocol::Udp => (
            format!("input-{}(*/{}/IPv4)", intake.metric_name, intake.port),
            "imudp",
        ),
        Protocol::Tcp | Protocol::Tls => (
            format!("input-{}({})", intake.metric_name, intake.port),
            "imtcp",
        ),
    };
    StatsObject::new(name, origin).with("submitted", input_grew(now, prev, |i| i.received))
}

fn input_grew(
    now: &IntakeStatus,
    prev: Option<&IntakeStatus>,
    f: fn(&InputCountersSnapshot) -> u64,
) -> u64 {
    grew(
        now.input.as_ref().map(f),
        prev.and_then(|p| p.input.as_ref()).map(f),
    )
}

/// `ruleset-<name>` (memory) and `ruleset-<name>[DA]` (disk) of one queue; `dropped` is what
/// the intake dropped this interval because no tier had room.
fn queue_objects(
    name: &str,
    q: &QueueSnapshot,
    prev: Option<&QueueSnapshot>,
    dropped: u64,
) -> [StatsObject; 2] {
    let field = |f: fn(&QueueSnapshot) -> u64| grew(Some(f(q)), prev.map(f));
    let memory = StatsObject::new(format!("ruleset-{name}"), "core.queue")
        .with("size", q.ring_events)
        .with("enqueued", field(|q| q.ring_enqueued))
        .with("full", field(|q| q.ring_full))
        .with("discarded.full", dropped)
        .with("discarded.nf", 0)
        .with("maxqsize", q.ring_max_events);
    let disk = StatsObject::new(format!("ruleset-{name}[DA]"), "core.queue")
        .with("size", q.journal_events)
        .with("enqueued", field(|q| q.journal_enqueued))
        .with("full", field(|q| q.journal_full))
        .with("discarded.full", 0)
        .with("discarded.nf", 0)
        .with("maxqsize", q.journal_max_events);
    [memory, disk]
}

/// Our per-intake object: what an operator needs beyond the reference's counters.
fn intake_object(intake: &Intake, now: &IntakeStatus, prev: Option<&IntakeStatus>) -> StatsObject {
    let input = now.input.unwrap_or_default();
    let q = now.queue.unwrap_or_default();
    let r = |f: fn(&InputCountersSnapshot) -> u64| input_grew(now, prev, f);
    let object = StatsObject::new(format!("intake-{}", intake.metric_name), OURS)
        .with("connections", input.connections_open)
        .with("connections.accepted", r(|i| i.connections_total))
        .with("truncated", r(|i| i.truncated))
        .with("dropped", r(|i| i.dropped_full + i.udp_kernel_drops))
        .with(
            "tls.handshake.failures",
            r(|i| i.tls_handshake_failures + i.tls_not_tls + i.tls_handshakes_over_limit),
        )
        .with(
            "dns.fallbacks",
            r(|i| i.resolve_timeouts + i.resolve_wait_overflows),
        )
        .with("backlog.memory.events", q.ring_events)
        .with("backlog.memory.bytes", q.ring_bytes)
        .with("backlog.disk.events", q.journal_events)
        .with("backlog.disk.bytes", q.journal_bytes)
        .with("worker.restarts", now.worker.restarts);
    // Absent when events are held whose time is unknown (queued by a previous worker).
    match q.oldest_age_ms {
        Some(ms) => object.with("backlog.oldest.age_ms", ms),
        None if q.ring_events + q.journal_events == 0 => object.with("backlog.oldest.age_ms", 0),
        None => object,
    }
}

#[cfg(test)]
mod tests;
