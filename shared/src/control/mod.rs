//! The control channel: how workers report to the supervisor, and how `sekoia-ctl` asks the
//! supervisor what is going on.
//!
//! - Supervisor → workers: each worker reads its [`worker_spec::WorkerSpec`] on its standard
//!   input when it starts.
//! - Workers → supervisor: each worker connects to the report socket of its instance folder
//!   ([`report::REPORT_SOCKET`]) and writes a [`report::WorkerReport`] as one JSON line every
//!   second. The supervisor keeps the latest of each.
//! - `sekoia-ctl` → supervisor: one JSON [`Request`] line on the Unix socket
//!   `CONTROL_SOCKET`, answered by one JSON [`Response`] line, then the connection closes.
//!   Every message carries [`PROTOCOL_VERSION`]; a mismatch is reported as such, not guessed.
//!
//! Nothing read from either socket is trusted: lines are bounded ([`MAX_REQUEST`],
//! [`MAX_LINE`]), a client that does not finish its request in [`CLIENT_TIMEOUT`] is dropped,
//! and at most [`MAX_CLIENTS`] are served at once, so a hostile or stuck client cannot disturb
//! the supervisor, let alone the data path (which never goes through it).

pub mod client;
pub mod codec;
pub mod metrics;
pub mod report;
pub mod server;
pub mod socket;
pub mod status;
pub mod worker_spec;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the supervisor listens unless `--control-socket` / `CONTROL_SOCKET` say otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sekoia-forwarder/control.sock";
/// Version of the request/response and report formats. Bump on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line a client may send.
pub const MAX_REQUEST: usize = 4 * 1024;
/// Longest response or worker report line read.
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// How long a control client has to send its request.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Control clients served at once; more wait in the listen backlog. Each holds a slot for at
/// most twice [`CLIENT_TIMEOUT`].
pub const MAX_CLIENTS: usize = 32;

/// What a control client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// The whole [`status::StatusReport`].
    Status,
    /// Read the configuration again and apply it (as SIGHUP does): [`ReloadOutcome`].
    Reload,
}

impl Request {
    pub fn new(command: Command) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            command,
        }
    }
}

/// The supervisor's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    #[serde(flatten)]
    pub body: ResponseBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum ResponseBody {
    Status(Box<status::StatusReport>),
    Reload(ReloadOutcome),
    /// The request was not understood (bad JSON, other version, unknown command).
    Error {
        message: String,
    },
}

/// What a reload did. A rejected configuration changes nothing: `problems` lists every one
/// of them, as `check` would.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    pub applied: bool,
    /// Intakes started, restarted with new settings, and stopped (their queues are still
    /// delivered), by name.
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    /// Destinations whose uplink was started, restarted (its queues changed: a new intake,
    /// or one that moved) or stopped (no queue goes there any more).
    pub uplinks_started: Vec<String>,
    pub uplinks_restarted: Vec<String>,
    pub uplinks_stopped: Vec<String>,
    pub problems: Vec<String>,
}

impl ReloadOutcome {
    /// Applied, and nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.uplinks_started.is_empty()
            && self.uplinks_restarted.is_empty()
            && self.uplinks_stopped.is_empty()
    }
}

impl Response {
    pub fn new(body: ResponseBody) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            body,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self::new(ResponseBody::Error {
            message: message.into(),
        })
    }
}
