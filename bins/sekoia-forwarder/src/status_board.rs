//! The supervisor's picture of what runs: the latest report of each worker, and the
//! [`StatusReport`] built from it, the worker set and the spool when `sekoia-ctl` asks.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sekoia_shared::config::{Destination, ForwarderConfig};
use sekoia_shared::control::report::{WorkerReport, REPORT_EVERY};
use sekoia_shared::control::status::{
    DiskStatus, ForwarderInfo, IntakeStatus, StatusReport, UplinkStatus, WorkerState, WorkerStatus,
};
use sekoia_shared::queue::layout::{QueueKey, SpoolDir};
use sekoia_shared::queue::DiskFigures;

use crate::worker_set::{Role, WorkerView};

/// A worker that has not reported for this long is shown as silent.
const SILENT_AFTER: Duration = Duration::from_secs(3 * REPORT_EVERY.as_secs());

struct Sample {
    at: Instant,
    report: WorkerReport,
    /// Events per second since the previous report of the same process.
    rate_per_s: f64,
    /// The same per uplink connection (empty for other workers).
    connection_rates: Vec<f64>,
}

pub struct StatusBoard {
    started: Instant,
    latest: HashMap<u32, Sample>,
    /// Time each destination's uplink reported no connection up (`UplinkStatus::down_s`).
    uplink_down: HashMap<String, Duration>,
}

impl StatusBoard {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            latest: HashMap::new(),
            uplink_down: HashMap::new(),
        }
    }

    /// Keeps `report` as the latest of process `pid` (which the caller checked is a worker:
    /// the uplink of `destination`, or an ingest worker when None).
    pub fn record(
        &mut self,
        pid: u32,
        destination: Option<String>,
        report: WorkerReport,
        now: Instant,
    ) {
        if let Some(destination) = destination {
            self.note_uplink_down(pid, destination, &report, now);
        }
        let rate_per_s = self.latest.get(&pid).map_or(0.0, |prev| {
            let secs = now.duration_since(prev.at).as_secs_f64();
            let delta = events(&report).saturating_sub(events(&prev.report));
            if secs > 0.0 {
                delta as f64 / secs
            } else {
                0.0
            }
        });
        let connection_rates = self.latest.get(&pid).map_or_else(Vec::new, |prev| {
            connection_rates(&prev.report, &report, now.duration_since(prev.at))
        });
        self.latest.insert(
            pid,
            Sample {
                at: now,
                report,
                rate_per_s,
                connection_rates,
            },
        );
    }

    /// Adds the time since the uplink's previous report when this one says no connection
    /// is up (a report says what held during the second before it).
    fn note_uplink_down(
        &mut self,
        pid: u32,
        destination: String,
        report: &WorkerReport,
        now: Instant,
    ) {
        let WorkerReport::Uplink { uplink } = report else {
            return;
        };
        if uplink.connections_up == 0 {
            if let Some(prev) = self.latest.get(&pid) {
                *self.uplink_down.entry(destination).or_default() += now.duration_since(prev.at);
            }
        }
    }

    /// Forgets the reports of processes that are no longer workers (dead, restarted).
    pub fn retain(&mut self, is_worker: impl Fn(u32) -> bool) {
        self.latest.retain(|pid, _| is_worker(*pid));
    }

    pub fn status(
        &self,
        cfg: &ForwarderConfig,
        views: &[WorkerView],
        stopping: bool,
        disk: DiskFigures,
    ) -> StatusReport {
        let now = Instant::now();
        let spool = SpoolDir::new(&cfg.settings.spool_dir);
        let uplinks: Vec<UplinkStatus> = views
            .iter()
            .filter_map(|view| match &view.role {
                Role::Uplink { destination } => {
                    Some(self.uplink_status(view, destination, stopping, now))
                }
                Role::Ingest { .. } => None,
            })
            .collect();
        let mut intakes = Vec::new();
        for view in views {
            let Role::Ingest { key, .. } = &view.role else {
                continue;
            };
            let Some(intake) = cfg.intakes.iter().find(|i| QueueKey::of(i) == *key) else {
                continue;
            };
            let sample = view.pid.and_then(|pid| self.latest.get(&pid));
            let worker =
                self.worker_status(view.pid, view.restarting, view.restarts, stopping, now);
            let (input, queue, received_per_s) = match sample {
                Some(Sample {
                    report: WorkerReport::Ingest { input, queue, .. },
                    rate_per_s,
                    ..
                }) => (Some(*input), Some(*queue), *rate_per_s),
                _ => (None, None, 0.0),
            };
            let name = key.to_string();
            let sent = uplinks
                .iter()
                .filter_map(|u| u.counters.as_ref())
                .find_map(|c| c.sources.iter().find(|s| s.name == name));
            intakes.push(IntakeStatus {
                events_sent: sent.map_or(0, |s| s.events_sent),
                events_resent: sent.map_or(0, |s| s.resent_events),
                name: intake.name.clone(),
                protocol: crate::supervisor::proto_name(intake.protocol).to_string(),
                port: intake.port,
                destination: intake.destination.to_string(),
                worker,
                input,
                received_per_s,
                journal_bytes: folder_bytes(&spool.journal_dir(*key))
                    + folder_bytes(&spool.saved_dir(*key)),
                queue,
            });
        }
        let default = &cfg.settings.destination;
        let uplink = uplinks
            .iter()
            .find(|u| u.destination == default.to_string())
            .or(uplinks.first())
            .cloned()
            .unwrap_or_else(|| self.idle_uplink(default.to_string(), stopping, now));
        StatusReport {
            forwarder: self.forwarder_info(cfg, stopping, now),
            intakes,
            uplink,
            uplinks,
            disk: DiskStatus {
                limit_bytes: disk.in_force,
                configured_bytes: disk.configured,
                used_bytes: disk.used,
            },
        }
    }

    /// The uplink of `destination` as its worker and latest report show it.
    fn uplink_status(
        &self,
        view: &WorkerView,
        destination: &Destination,
        stopping: bool,
        now: Instant,
    ) -> UplinkStatus {
        let mut status = self.idle_uplink(destination.to_string(), stopping, now);
        status.worker = self.worker_status(view.pid, view.restarting, view.restarts, stopping, now);
        if let Some(Sample {
            report: WorkerReport::Uplink { uplink: counters },
            rate_per_s,
            connection_rates,
            ..
        }) = view.pid.and_then(|pid| self.latest.get(&pid))
        {
            status.counters = Some(counters.clone());
            status.sent_per_s = *rate_per_s;
            status.connections_sent_per_s = connection_rates.clone();
        }
        status
    }

    /// An uplink with no report (yet).
    fn idle_uplink(&self, destination: String, stopping: bool, now: Instant) -> UplinkStatus {
        UplinkStatus {
            worker: self.worker_status(None, false, 0, stopping, now),
            counters: None,
            sent_per_s: 0.0,
            connections_sent_per_s: Vec::new(),
            down_s: self
                .uplink_down
                .get(&destination)
                .map_or(0, Duration::as_secs),
            destination,
        }
    }

    fn forwarder_info(&self, cfg: &ForwarderConfig, stopping: bool, now: Instant) -> ForwarderInfo {
        let dest = &cfg.settings.destination;
        ForwarderInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_s: now.duration_since(self.started).as_secs(),
            destination: format!("{}:{}", dest.host, dest.port),
            stopping,
        }
    }

    fn worker_status(
        &self,
        pid: Option<u32>,
        restarting: bool,
        restarts: u64,
        stopping: bool,
        now: Instant,
    ) -> WorkerStatus {
        let age = pid
            .and_then(|p| self.latest.get(&p))
            .map(|s| now.duration_since(s.at));
        let state = match (pid, age) {
            (None, _) if restarting => WorkerState::Restarting,
            (None, _) if stopping => WorkerState::Stopped,
            (None, _) => WorkerState::Restarting,
            (Some(_), None) => WorkerState::Starting,
            (Some(_), Some(age)) if age > SILENT_AFTER => WorkerState::Silent,
            (Some(_), Some(_)) => WorkerState::Running,
        };
        WorkerStatus {
            state,
            pid,
            restarts,
            report_age_ms: age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// The number a rate is computed from: events received (ingest) or confirmed sent (uplink).
fn events(report: &WorkerReport) -> u64 {
    match report {
        WorkerReport::Ingest { input, .. } => input.received,
        WorkerReport::Uplink { uplink } => uplink.events_sent,
    }
}

/// Events per second each uplink connection got confirmed between two reports.
fn connection_rates(prev: &WorkerReport, now: &WorkerReport, elapsed: Duration) -> Vec<f64> {
    let (WorkerReport::Uplink { uplink: prev }, WorkerReport::Uplink { uplink: now }) = (prev, now)
    else {
        return Vec::new();
    };
    let secs = elapsed.as_secs_f64();
    now.connections
        .iter()
        .map(|c| {
            let before = prev.connections.get(c.id).map_or(0, |p| p.events_sent);
            match secs > 0.0 {
                true => c.events_sent.saturating_sub(before) as f64 / secs,
                false => 0.0,
            }
        })
        .collect()
}

/// Bytes of the regular files directly in `dir` (0 when it does not exist).
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
