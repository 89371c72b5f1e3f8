//! What `sekoia-ctl status` shows: the supervisor's [`StatusReport`], assembled from its own
//! view of the workers, their latest reports and the spool. Its JSON form is the documented
//! schema of `sekoia-ctl status --json` (docs/operations.md): fields are only ever added.

use serde::{Deserialize, Serialize};

use crate::input::InputCountersSnapshot;
use crate::queue::intake::QueueSnapshot;
use crate::uplink::UplinkSnapshot;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub forwarder: ForwarderInfo,
    pub intakes: Vec<IntakeStatus>,
    /// The uplink of the global destination (`REGION`/`ENDPOINT`), or the first one when no
    /// intake goes there; every destination's is in `uplinks`.
    pub uplink: UplinkStatus,
    /// One uplink per destination, the global destination's first.
    #[serde(default)]
    pub uplinks: Vec<UplinkStatus>,
    pub disk: DiskStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwarderInfo {
    /// The supervisor's package version.
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    /// `host:port` of the Sekoia intake.
    pub destination: String,
    /// True once SIGTERM/SIGINT started the orderly stop.
    pub stopping: bool,
}

/// A worker process as the supervisor sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub state: WorkerState,
    pub pid: Option<u32>,
    /// Restarts since the supervisor started (each one is a crash or a kill).
    pub restarts: u64,
    /// Age of its latest report; `None` until it sent one.
    pub report_age_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Started, no report yet.
    Starting,
    /// Running and reporting.
    Running,
    /// Running, but no report for more than three report intervals.
    Silent,
    /// Dead, waiting for its restart delay.
    Restarting,
    /// Exited during the orderly stop.
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntakeStatus {
    pub name: String,
    pub protocol: String,
    pub port: u16,
    /// `host:port` its events go to (its uplink is the one in `uplinks` with this
    /// destination).
    #[serde(default)]
    pub destination: String,
    pub worker: WorkerStatus,
    /// Counters since the worker (re)started; `None` before its first report.
    pub input: Option<InputCountersSnapshot>,
    /// Events received per second over the last report interval.
    pub received_per_s: f64,
    /// This intake's events confirmed received by the destination (uplink counters, since
    /// the uplink worker started), and those sent again after a broken connection.
    pub events_sent: u64,
    pub events_resent: u64,
    /// Bytes of this intake's journal and saved-ring files on disk (the delivered start of
    /// the segment being read is included until the segment is removed).
    pub journal_bytes: u64,
    /// The queue as its ingest worker sees it: events put in the ring and the journal since
    /// the worker started, and the backlog of each now (`ring_events`, `ring_bytes`,
    /// `journal_events`, `journal_bytes`); `None` before the worker's first report.
    #[serde(default)]
    pub queue: Option<QueueSnapshot>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UplinkStatus {
    /// `host:port` it sends to.
    #[serde(default)]
    pub destination: String,
    pub worker: WorkerStatus,
    /// Counters since the uplink worker (re)started; `None` before its first report.
    pub counters: Option<UplinkSnapshot>,
    /// Events confirmed sent per second over the last report interval.
    pub sent_per_s: f64,
    /// Events confirmed sent per second over the last report interval, per connection of
    /// the pool (by id; `counters.connections` has the rest of each row).
    #[serde(default)]
    pub connections_sent_per_s: Vec<f64>,
    /// Seconds the uplink ran with no connection up, since the supervisor started (from
    /// its reports, to the second).
    #[serde(default)]
    pub down_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskStatus {
    /// The bound in force: the smaller of DISK_SPACE and what the spool's file system can
    /// hold (minus a reserve), as last measured.
    pub limit_bytes: u64,
    /// DISK_SPACE as configured.
    pub configured_bytes: u64,
    /// What the journals hold now.
    pub used_bytes: u64,
}
