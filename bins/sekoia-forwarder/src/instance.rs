//! The instance state folder as the binary uses it: the supervisor's lock and the workers'
//! role locks. Names and checks are the library's
//! (`queue::layout`, `queue::shared_file`); this module adds what only processes need.
//!
//! The folder lives on tmpfs and survives every process: a supervisor restarted after
//! `kill -9` reopens the same rings (same spool folder, same instance) and drains them.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::Flock;
use sekoia_shared::queue::layout::{InstanceDir, SUPERVISOR_LOCK};

/// An instance folder owned by this supervisor for as long as the value lives.
pub struct Instance {
    dir: InstanceDir,
    _lock: Flock<File>,
}

impl Instance {
    /// Creates (or finds) the instance folder of `spool_dir` and takes its lock.
    pub fn acquire(shm_dir: &Path, spool_dir: &Path) -> Result<Self> {
        let dir = InstanceDir::create(shm_dir, spool_dir)
            .context("cannot use the shared-memory folder (SHM_DIR)")?;
        let Some(lock) = dir.try_lock(SUPERVISOR_LOCK)? else {
            bail!(
                "another sekoia-forwarder already runs with spool directory {} (lock {}); \
                 stop it or give this one its own --spool-dir",
                spool_dir.display(),
                dir.dir().join(SUPERVISOR_LOCK).display()
            );
        };
        Ok(Self { dir, _lock: lock })
    }

    pub fn dir(&self) -> &InstanceDir {
        &self.dir
    }
}

/// Bytes of ring for an intake's memory share: about 512 bytes per queued message, a power of
/// two between 1 MiB (twice the largest record: a 256000-byte line) and 4 GiB.
pub fn ring_capacity(queue_size: u64) -> u64 {
    queue_size
        .saturating_mul(512)
        .clamp(1 << 20, 1 << 32)
        .next_power_of_two()
}

/// Takes the exclusive lock `name` of the instance, waiting for a previous holder (a worker
/// of a crashed supervisor that is still finishing) to go. This is what keeps each ring
/// single-producer and single-consumer across processes.
pub fn lock_exclusive(instance: &InstanceDir, name: &str, what: &str) -> Result<Flock<File>> {
    let started = Instant::now();
    let mut warned_at = started;
    loop {
        if let Some(lock) = instance.try_lock(name)? {
            return Ok(lock);
        }
        if warned_at.elapsed() >= Duration::from_secs(10) {
            tracing::warn!(lock = %instance.dir().join(name).display(), waited_s = started.elapsed().as_secs(),
                "waiting for the previous {what} to exit");
            warned_at = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
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
}
