//! The worker specification: everything a worker process needs, in one typed, versioned
//! value the supervisor writes to the worker's standard input when it starts it.
//!
//! A worker gets nothing else: no settings of its own from flags or the environment, no
//! configuration file to find in the shared-memory folder (a file there is one more thing
//! a local user could tamper with), only this value and, for an ingest worker, its listening
//! socket as fd 3. A pipe from the parent cannot be planted by anyone else, and each start
//! (first start, restart, reload) gets the specification in force at that moment.
//!
//! The encoding is JSON behind a one-line header `sekoia-worker-spec <version> <length>`,
//! so a worker of another build refuses a specification it does not understand, with a
//! message saying so, instead of misreading it; and a length that is read before the body,
//! so a truncated specification (a supervisor that died mid-write) is an error, not a guess.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{Destination, ForwarderConfig, Intake};
use crate::queue::layout::QueueKey;

/// Version of [`WorkerSpec`]'s encoding. Bump on any incompatible change.
pub const WORKER_SPEC_VERSION: u32 = 1;
/// Largest specification a worker reads (a configuration of thousands of intakes is a few
/// MiB).
pub const MAX_SPEC_BYTES: usize = 64 << 20;
const MAGIC: &str = "sekoia-worker-spec";

/// When the disk journal is fsync'ed (`JOURNAL_SYNC`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalSync {
    /// At most every second, on every segment roll and at stop: a power cut can cost the
    /// last second.
    Batch,
    /// After every write: nothing acknowledged to the journal is lost, at a throughput cost.
    Always,
}

/// What the worker is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WorkerRole {
    /// Serves `intake` on the socket inherited as fd 3.
    Ingest { intake: Box<Intake> },
    /// Drains `queues` (ring, saved and journal tiers) to `destination`.
    Uplink {
        destination: Destination,
        queues: Vec<QueueKey>,
    },
}

/// Everything one worker needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub version: u32,
    /// The instance folder in `SHM_DIR` (rings, doorbell, disk budget, report socket).
    pub state_dir: PathBuf,
    pub journal_sync: JournalSync,
    /// The configuration in force when the worker was started.
    pub config: ForwarderConfig,
    pub role: WorkerRole,
}

/// Why a worker could not read its specification.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the worker specification from standard input: {0}")]
    Io(#[from] std::io::Error),
    #[error("standard input does not start with a worker specification (this command is started by the supervisor, not by hand)")]
    NotASpec,
    #[error("the worker specification has version {found}, this build reads version {WORKER_SPEC_VERSION}: the supervisor and this worker are different builds; restart the forwarder")]
    Version { found: u32 },
    #[error("the worker specification announces {0} bytes, more than the {MAX_SPEC_BYTES} a worker reads")]
    TooLong(usize),
    #[error("the worker specification is truncated ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("the worker specification cannot be parsed: {0}")]
    Parse(#[from] serde_json::Error),
}

impl WorkerSpec {
    pub fn new(
        state_dir: PathBuf,
        journal_sync: JournalSync,
        config: ForwarderConfig,
        role: WorkerRole,
    ) -> Self {
        Self {
            version: WORKER_SPEC_VERSION,
            state_dir,
            journal_sync,
            config,
            role,
        }
    }

    /// The bytes written to the worker's standard input.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let body = serde_json::to_vec(self)?;
        let mut out = format!("{MAGIC} {WORKER_SPEC_VERSION} {}\n", body.len()).into_bytes();
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads one specification from `input` (the worker's standard input), bounded.
    pub fn read_from(input: impl Read) -> Result<Self, SpecError> {
        let mut input = BufReader::new(input);
        let mut header = Vec::new();
        input.by_ref().take(128).read_until(b'\n', &mut header)?;
        let (version, len) = parse_header(&header)?;
        if version != WORKER_SPEC_VERSION {
            return Err(SpecError::Version { found: version });
        }
        if len > MAX_SPEC_BYTES {
            return Err(SpecError::TooLong(len));
        }
        let mut body = Vec::with_capacity(len);
        input.take(len as u64).read_to_end(&mut body)?;
        if body.len() != len {
            return Err(SpecError::Truncated {
                got: body.len(),
                expected: len,
            });
        }
        let spec: WorkerSpec = serde_json::from_slice(&body)?;
        if spec.version != WORKER_SPEC_VERSION {
            return Err(SpecError::Version {
                found: spec.version,
            });
        }
        Ok(spec)
    }
}

fn parse_header(line: &[u8]) -> Result<(u32, usize), SpecError> {
    let line = std::str::from_utf8(line).map_err(|_| SpecError::NotASpec)?;
    let line = line.strip_suffix('\n').ok_or(SpecError::NotASpec)?;
    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(SpecError::NotASpec);
    }
    let version = words.next().and_then(|v| v.parse().ok());
    let len = words.next().and_then(|v| v.parse().ok());
    match (version, len, words.next()) {
        (Some(version), Some(len), None) => Ok((version, len)),
        _ => Err(SpecError::NotASpec),
    }
}

#[cfg(test)]
mod tests;
