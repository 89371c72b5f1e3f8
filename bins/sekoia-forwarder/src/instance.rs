//! The instance state directory: where the supervisor keeps what its workers share.
//!
//! ```text
//! <shm_dir>/<instance>/            instance = 16 hex digits of a hash of the spool directory
//!     supervisor.lock              flock'd by the running supervisor (one per instance)
//!     config.json                  the resolved configuration the workers boot from
//!     doorbell                     futex word the ingest workers ring to wake the uplink
//!     intake-<proto>-<port>.ring   one ring per port intake
//! ```
//! The directory lives on tmpfs and survives every process: a supervisor restarted after
//! `kill -9` reopens the same rings (same spool directory, same instance) and drains them.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use sekoia_shared::config::{ForwarderConfig, Intake, Protocol};

/// An instance directory owned by this supervisor for as long as the value lives.
pub struct Instance {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Instance {
    /// Creates (or finds) the instance directory of `spool_dir` and takes its lock.
    pub fn acquire(shm_dir: &Path, spool_dir: &Path) -> Result<Self> {
        let dir = shm_dir.join(instance_name(spool_dir));
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        let lock_path = dir.join("supervisor.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, errno)) => bail!(
                "another sekoia-forwarder already runs with spool directory {} (lock {}: {errno}); \
                 stop it or give this one its own --spool-dir",
                spool_dir.display(),
                lock_path.display()
            ),
        };
        Ok(Self { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the configuration the workers boot from (atomically: temp file, then rename).
    pub fn write_config(&self, cfg: &ForwarderConfig) -> Result<()> {
        let tmp = self.dir.join("config.json.tmp");
        let json = serde_json::to_vec_pretty(cfg).context("cannot serialise configuration")?;
        fs::write(&tmp, json).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, config_path(&self.dir))
            .with_context(|| format!("cannot install {}", config_path(&self.dir).display()))?;
        Ok(())
    }
}

/// The instance of a spool directory: stable across restarts, distinct per spool directory.
fn instance_name(spool_dir: &Path) -> String {
    let canonical = fs::canonicalize(spool_dir).unwrap_or_else(|_| spool_dir.to_path_buf());
    // FNV-1a: stable across builds and Rust versions, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

pub fn config_path(state_dir: &Path) -> PathBuf {
    state_dir.join("config.json")
}

pub fn doorbell_path(state_dir: &Path) -> PathBuf {
    state_dir.join("doorbell")
}

/// The ring of a port intake, named by what makes it unique in a valid configuration.
pub fn ring_path(state_dir: &Path, intake: &Intake) -> PathBuf {
    let proto = match intake.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Tls => "tls",
    };
    state_dir.join(format!("intake-{proto}-{}.ring", intake.port))
}

/// Every ring file in the state directory, current intakes or not: the uplink drains them all,
/// so an intake removed from the configuration still delivers what it had accepted.
pub fn all_rings(state_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut rings = Vec::new();
    for entry in fs::read_dir(state_dir)
        .with_context(|| format!("cannot list state directory {}", state_dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "ring") {
            rings.push(path);
        }
    }
    rings.sort();
    Ok(rings)
}

/// Reads the configuration written by the supervisor.
pub fn read_config(state_dir: &Path) -> Result<ForwarderConfig> {
    let path = config_path(state_dir);
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("cannot parse {}", path.display()))
}

/// Bytes of ring for an intake's memory share: about 512 bytes per queued message, a power of
/// two between 1 MiB (twice the largest record: a 256000-byte line) and 4 GiB. (The durable-queue work replaces this with a byte cap.)
pub fn ring_capacity(queue_size: u64) -> u64 {
    queue_size
        .saturating_mul(512)
        .clamp(1 << 20, 1 << 32)
        .next_power_of_two()
}

/// Takes an exclusive lock on `path`, waiting for a previous holder (a worker of a crashed
/// supervisor that is still finishing) to go. This is what keeps each ring single-producer and
/// single-consumer across processes.
pub fn lock_exclusive(path: &Path, what: &str) -> Result<Flock<File>> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock {}", path.display()))?;
    let started = std::time::Instant::now();
    let mut warned_at = started;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                file = f;
                if warned_at.elapsed() >= std::time::Duration::from_secs(10) {
                    tracing::warn!(lock = %path.display(), waited_s = started.elapsed().as_secs(),
                        "waiting for the previous {what} to exit");
                    warned_at = std::time::Instant::now();
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err((_, errno)) => bail!("cannot lock {}: {errno}", path.display()),
        }
    }
}

/// Ends this worker with its supervisor: a worker must never outlive it (a restarted
/// supervisor must be able to bind the ports and own the rings again).
pub fn die_with_supervisor() -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .context("cannot set the parent-death signal")?;
    if let Ok(expected) = std::env::var("SEKOIA_SUPERVISOR_PID") {
        let parent = nix::unistd::getppid().as_raw().to_string();
        if parent != expected {
            bail!("supervisor {expected} is gone (parent is now {parent}); exiting");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_capacity_is_a_bounded_power_of_two() {
        assert_eq!(ring_capacity(0), 1 << 20);
        assert_eq!(ring_capacity(30_000), 16 << 20);
        assert_eq!(ring_capacity(u64::MAX), 1 << 32);
    }

    #[test]
    fn instance_name_depends_on_spool_dir_only() {
        assert_eq!(
            instance_name(Path::new("/a/b")),
            instance_name(Path::new("/a/b"))
        );
        assert_ne!(
            instance_name(Path::new("/a/b")),
            instance_name(Path::new("/a/c"))
        );
    }
}
