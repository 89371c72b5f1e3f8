//! The names of every file and folder of the queue, in one place, typed.
//!
//! ```text
//! <SHM_DIR>/<instance>/              instance = 16 hex digits of a hash of the spool folder
//!     supervisor.lock                flock'd by the running supervisor (one per instance)
//!     doorbell                       futex word the ingest workers ring to wake the uplink
//!     disk-<destination>.budget      the DISK_SPACE share of one destination, mapped by
//!                                    every process that queues for it (`Destination::id`)
//!     intake-<key>.ring              one ring per port intake (the memory tier), and
//!                                    `intake-stats.ring` for the monitoring entry's lines
//!     intake-<key>.ring.producer.lock  flock'd by its ingest worker (one producer)
//!     intake-<key>.ring.consumer.lock  flock'd by the uplink worker draining the queue (one
//!                                    consumer of its ring, saved and journal tiers)
//!     intake-<key>.ring.corrupt-<µs> a ring file that could not be opened, moved aside
//! <SPOOL_DIR>/
//!     journal-<key>/                 the ring's overflow (written by the ingest worker)
//!     saved-<key>/                   the memory tier written out at an orderly stop
//!     route-<key>.json               the destination the queue's events go to
//! ```
//! `<key>` is a [`QueueKey`]: protocol and port (`tcp-514`), what makes an intake unique in
//! a valid configuration, or `stats` ([`QueueKey::STATS`]) for the monitoring entry, which
//! has no port: its queue is an intake queue like the others, written by the supervisor. Names found on disk are parsed back strictly: anything else in
//! these folders is not ours and is left alone.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::config::{Intake, Protocol};
use crate::queue::shared_file::{Create, PrivateDir, SharedFileError};

const RING_PREFIX: &str = "intake-";
const RING_SUFFIX: &str = ".ring";
const JOURNAL_PREFIX: &str = "journal-";
const SAVED_PREFIX: &str = "saved-";
pub const SUPERVISOR_LOCK: &str = "supervisor.lock";
const ROUTE_PREFIX: &str = "route-";
const ROUTE_SUFFIX: &str = ".json";
const DOORBELL_FILE: &str = "doorbell";
/// The monitoring entry's [`QueueKey`] in file names.
const STATS_NAME: &str = "stats";

/// Which intake a queue belongs to: its protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueKey {
    pub protocol: Protocol,
    pub port: u16,
}

impl QueueKey {
    /// The monitoring entry's queue (`stats: true`). Port 0, which no port intake can have,
    /// marks it; it is named `stats` on disk.
    pub const STATS: QueueKey = QueueKey {
        protocol: Protocol::Tcp,
        port: 0,
    };

    pub fn of(intake: &Intake) -> Self {
        Self {
            protocol: intake.protocol,
            port: intake.port,
        }
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Tls => "tls",
    }
}

impl fmt::Display for QueueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::STATS {
            return f.write_str(STATS_NAME);
        }
        write!(f, "{}-{}", protocol_name(self.protocol), self.port)
    }
}

impl FromStr for QueueKey {
    type Err = ();

    /// Exactly `tcp|udp|tls` `-` a port 1..=65535 in canonical decimal, or `stats`.
    fn from_str(s: &str) -> Result<Self, ()> {
        if s == STATS_NAME {
            return Ok(Self::STATS);
        }
        let (proto, port) = s.split_once('-').ok_or(())?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "tls" => Protocol::Tls,
            _ => return Err(()),
        };
        let port: u16 = port.parse().map_err(|_| ())?;
        if port == 0 || port.to_string() != s[proto.len() + 1..] {
            return Err(());
        }
        Ok(Self { protocol, port })
    }
}

/// The instance folder in shared memory, checked and held open.
#[derive(Debug)]
pub struct InstanceDir {
    dir: PrivateDir,
}

impl InstanceDir {
    /// Creates (supervisor) the instance folder of `spool_dir` under `shm_dir`.
    pub fn create(shm_dir: &Path, spool_dir: &Path) -> Result<Self, SharedFileError> {
        let root = PrivateDir::create(shm_dir)?;
        let dir = root.subdir(&instance_name(spool_dir), Create::IfMissing)?;
        Ok(Self { dir })
    }

    /// Where [`InstanceDir::create`] puts the instance folder of `spool_dir`, creating
    /// nothing (`check` looks there for the rings of a previous run).
    pub fn path_of(shm_dir: &Path, spool_dir: &Path) -> PathBuf {
        shm_dir.join(instance_name(spool_dir))
    }

    /// The ring file of `key` in the instance folder at `instance` (what [`Self::ring_path`]
    /// names once the folder is open).
    pub fn ring_path_in(instance: &Path, key: QueueKey) -> PathBuf {
        instance.join(ring_name(key))
    }

    /// Opens (workers) the instance folder the supervisor named.
    pub fn open(path: &Path) -> Result<Self, SharedFileError> {
        Ok(Self {
            dir: PrivateDir::open(path)?,
        })
    }

    pub fn dir(&self) -> &PrivateDir {
        &self.dir
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ring_path(&self, key: QueueKey) -> PathBuf {
        self.dir.join(&ring_name(key))
    }

    pub fn doorbell_path(&self) -> PathBuf {
        self.dir.join(DOORBELL_FILE)
    }

    /// The disk budget of the queues going to the destination whose id is `destination_id`
    /// (`Destination::id`).
    pub fn budget_path(&self, destination_id: &str) -> PathBuf {
        self.dir.join(&format!("disk-{destination_id}.budget"))
    }

    /// The ring's producer lock (one ingest worker per ring).
    pub fn producer_lock_name(key: QueueKey) -> String {
        format!("{}.producer.lock", ring_name(key))
    }

    /// The queue's consumer lock (one uplink worker drains a queue: ring, saved and journal
    /// tiers), held for the worker's life.
    pub fn consumer_lock_name(key: QueueKey) -> String {
        format!("{}.consumer.lock", ring_name(key))
    }

    /// Keys of every ring file here, configured intakes or not (an intake removed from the
    /// configuration still delivers what it had accepted).
    pub fn ring_keys(&self) -> Result<Vec<QueueKey>, SharedFileError> {
        let mut keys: Vec<QueueKey> = list_names(self.dir.path())?
            .iter()
            .filter_map(|name| name.strip_prefix(RING_PREFIX)?.strip_suffix(RING_SUFFIX))
            .filter_map(|key| key.parse().ok())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Moves a ring file that cannot be used aside (`<name>.corrupt-<µs>`), so a fresh one can
    /// be created; the old file is kept for inspection. Returns its new path.
    pub fn quarantine_ring(&self, key: QueueKey) -> Result<PathBuf, SharedFileError> {
        let name = ring_name(key);
        let aside = format!("{name}.corrupt-{}", crate::queue::journal::unix_micros());
        self.dir.rename(&name, &aside)?;
        Ok(self.dir.join(&aside))
    }

    /// Takes the exclusive `flock` on the lock file `name` without waiting: None when
    /// another process holds it.
    pub fn try_lock(&self, name: &str) -> Result<Option<Flock<File>>, SharedFileError> {
        let file = self.dir.file(name, Create::IfMissing)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(SharedFileError::Io {
                op: "lock",
                path: self.dir.join(name),
                source: errno.into(),
            }),
        }
    }
}

fn ring_name(key: QueueKey) -> String {
    format!("{RING_PREFIX}{key}{RING_SUFFIX}")
}

/// The instance of a spool folder: stable across restarts, distinct per spool folder.
fn instance_name(spool_dir: &Path) -> String {
    let canonical = std::fs::canonicalize(spool_dir).unwrap_or_else(|_| spool_dir.to_path_buf());
    // FNV-1a: stable across builds and Rust versions, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The spool folder: where the disk tiers live.
#[derive(Debug, Clone)]
pub struct SpoolDir {
    path: PathBuf,
}

impl SpoolDir {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ring's overflow.
    pub fn journal_dir(&self, key: QueueKey) -> PathBuf {
        self.path.join(format!("{JOURNAL_PREFIX}{key}"))
    }

    /// What the ring held at the last orderly stop.
    pub fn saved_dir(&self, key: QueueKey) -> PathBuf {
        self.path.join(format!("{SAVED_PREFIX}{key}"))
    }

    /// The file naming the destination of `key`'s events (written by the supervisor), so
    /// that a queue whose intake was removed still goes where its events were meant to go.
    pub fn route_name(key: QueueKey) -> String {
        format!("{ROUTE_PREFIX}{key}{ROUTE_SUFFIX}")
    }

    /// Keys of every journal or saved folder (intakes removed from the configuration
    /// included: what they queued is still sent). A missing spool holds none.
    pub fn keys_on_disk(&self) -> Vec<QueueKey> {
        let names = list_names(&self.path).unwrap_or_default();
        let mut keys: Vec<QueueKey> = names
            .iter()
            .filter(|name| self.path.join(name).is_dir())
            .filter_map(|name| {
                name.strip_prefix(JOURNAL_PREFIX)
                    .or_else(|| name.strip_prefix(SAVED_PREFIX))
            })
            .filter_map(|key| key.parse().ok())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// The UTF-8 names in a folder (others cannot be ours).
fn list_names(dir: &Path) -> Result<Vec<String>, SharedFileError> {
    let io = |source| SharedFileError::Io {
        op: "list",
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        if let Ok(name) = entry.map_err(io)?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests;
