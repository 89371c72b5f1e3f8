//! Worker → supervisor reports. Each worker connects to the supervisor's report socket in the
//! private instance folder and writes one [`ReportLine`] per [`REPORT_EVERY`]. The supervisor
//! identifies the sender by the socket's peer credentials (its pid must be one of its own
//! children), never by what the line says, and keeps the latest report of each worker.
//!
//! A socket in the instance folder rather than an inherited socketpair: adopting an inherited
//! descriptor needs `unsafe` (`from_raw_fd`), which we keep to the ring and journal code; the
//! folder is the supervisor's own 0700 folder and the peer check does the rest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::{codec, MAX_LINE, PROTOCOL_VERSION};
use crate::input::InputCountersSnapshot;
use crate::queue::intake::QueueSnapshot;
use crate::uplink::UplinkSnapshot;

/// How often a worker reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// File name of the report socket inside the instance folder.
pub const REPORT_SOCKET: &str = "report.sock";

/// One report: the version, then what the worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportLine {
    pub version: u32,
    #[serde(flatten)]
    pub report: WorkerReport,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "worker")]
pub enum WorkerReport {
    Ingest {
        intake_id: u16,
        input: InputCountersSnapshot,
        /// What the intake's queue took and holds (its writer's view).
        #[serde(default)]
        queue: QueueSnapshot,
    },
    Uplink {
        uplink: UplinkSnapshot,
    },
}

/// Worker side: reports `make()` every [`REPORT_EVERY`], until the task is dropped. A
/// supervisor that is not listening costs one connect attempt per interval; reporting never
/// blocks or fails the worker.
pub async fn report_periodically(socket: PathBuf, make: impl Fn() -> WorkerReport) {
    let mut stream: Option<UnixStream> = None;
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        send(&socket, &mut stream, &make()).await;
    }
}

/// Supervisor side: accepts workers on `listener` and passes each report line on with the
/// sender's pid from the socket's peer credentials (the caller checks it is its child).
pub async fn serve_reports(listener: UnixListener, to_supervisor: mpsc::Sender<(u32, ReportLine)>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Some(pid) = stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok())
        else {
            continue;
        };
        tokio::spawn(read_reports(stream, pid, to_supervisor.clone()));
    }
}

async fn read_reports(
    stream: UnixStream,
    pid: u32,
    to_supervisor: mpsc::Sender<(u32, ReportLine)>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while let Ok(true) = codec::read_line(&mut reader, &mut line, MAX_LINE).await {
        // A line of another version or shape is skipped: the worker is the same binary, so
        // this only happens to something that is not our worker.
        if let Ok(report) = codec::decode::<ReportLine>(&line) {
            if report.version == PROTOCOL_VERSION
                && to_supervisor.send((pid, report)).await.is_err()
            {
                return;
            }
        }
    }
}

async fn send(socket: &Path, stream: &mut Option<UnixStream>, report: &WorkerReport) {
    let line = ReportLine {
        version: PROTOCOL_VERSION,
        report: report.clone(),
    };
    let Ok(bytes) = codec::encode(&line) else {
        return;
    };
    if stream.is_none() {
        *stream = UnixStream::connect(socket).await.ok();
    }
    if let Some(s) = stream.as_mut() {
        let written = tokio::time::timeout(REPORT_EVERY, s.write_all(&bytes)).await;
        if !matches!(written, Ok(Ok(()))) {
            // Reconnect at the next interval; the supervisor may have restarted.
            *stream = None;
        }
    }
}
