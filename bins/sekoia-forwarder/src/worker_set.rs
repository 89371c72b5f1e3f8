//! The supervisor's children: start, reap, restart with backoff, signal, wait.
//!
//! Workers are this binary re-executed (`/proc/self/exe`, so an upgrade on disk never mixes
//! versions) with a hidden subcommand. An ingest worker gets its listening socket as fd 3
//! (`LISTEN_FDS=1`); the supervisor keeps its own copy, so the port stays bound and its
//! accept backlog survives while a dead worker is restarted. A worker that keeps crashing is
//! restarted forever (never stopping matters more than anything) but with a delay growing to
//! 30 s, and every crash is logged with its exit status. With a workers' user (run_as.rs)
//! each worker is started with its uid and gid; std drops the supplementary groups.

use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::run_as::RunAs;

/// The fd number a worker finds its listening socket at (systemd socket-activation layout).
pub const LISTEN_FD: i32 = 3;
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A worker that stayed up this long is healthy again: its next crash restarts it at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Ingest { intake_id: u16, name: String },
    Uplink,
}

/// One worker as seen from outside the set.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub role: Role,
    /// Its pid while it runs.
    pub pid: Option<u32>,
    /// Dead and waiting for its restart delay.
    pub restarting: bool,
    pub restarts: u64,
}

struct Worker {
    role: Role,
    listener: Option<OwnedFd>,
    child: Option<Child>,
    started_at: Instant,
    consecutive_crashes: u32,
    restart_at: Option<Instant>,
    total_restarts: u64,
}

pub struct WorkerSet {
    state_dir: PathBuf,
    /// Arguments every worker gets (the journal's fsync policy).
    common_args: Vec<String>,
    workers: Vec<Worker>,
    /// Once stopping, dead workers are not restarted any more.
    stopping: bool,
    /// The user workers run as; None: the supervisor's own.
    run_as: Option<RunAs>,
}

impl WorkerSet {
    pub fn new(state_dir: PathBuf, common_args: Vec<String>, run_as: Option<RunAs>) -> Self {
        Self {
            state_dir,
            common_args,
            workers: Vec::new(),
            stopping: false,
            run_as,
        }
    }

    /// Adds a worker and starts it now.
    pub fn add(&mut self, role: Role, listener: Option<OwnedFd>) -> Result<()> {
        self.workers.push(Worker {
            role,
            listener,
            child: None,
            started_at: Instant::now(),
            consecutive_crashes: 0,
            restart_at: None,
            total_restarts: 0,
        });
        let idx = self.workers.len() - 1;
        self.spawn(idx)
    }

    fn spawn(&mut self, idx: usize) -> Result<()> {
        let state_dir = self.state_dir.clone();
        let common_args = self.common_args.clone();
        let run_as = self.run_as.clone();
        let worker = &mut self.workers[idx];
        let mut cmd = Command::new("/proc/self/exe");
        match &worker.role {
            Role::Ingest { intake_id, .. } => {
                cmd.arg("ingest-worker")
                    .arg("--intake-id")
                    .arg(intake_id.to_string());
            }
            Role::Uplink => {
                cmd.arg("uplink-worker");
            }
        }
        cmd.arg("--state-dir").arg(&state_dir).args(&common_args);
        // Its own process group: a terminal's Ctrl-C reaches only the supervisor, which then
        // stops the workers in order (inputs first) instead of all at once.
        cmd.process_group(0);
        cmd.env("SEKOIA_SUPERVISOR_PID", std::process::id().to_string());
        if let Some(user) = &run_as {
            // std calls setgroups(0) before setuid when the real uid is 0 (no groups given).
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        if let Some(listener) = &worker.listener {
            let fd = listener
                .try_clone()
                .context("cannot duplicate listening socket for a worker")?;
            cmd.fd_mappings(vec![FdMapping {
                parent_fd: fd,
                child_fd: LISTEN_FD,
            }])
            .context("cannot map the listening socket")?;
            cmd.env("LISTEN_FDS", "1").env_remove("LISTEN_PID");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", describe(&worker.role)))?;
        info!(worker = %describe(&worker.role), pid = child.id(), "worker started");
        worker.child = Some(child);
        worker.started_at = Instant::now();
        worker.restart_at = None;
        Ok(())
    }

    /// Collects exited children, logs how they ended and schedules restarts.
    pub fn reap(&mut self) {
        let now = Instant::now();
        for worker in &mut self.workers {
            let Some(child) = worker.child.as_mut() else {
                continue;
            };
            let status = match child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    warn!(worker = %describe(&worker.role), error = %e, "cannot wait for worker");
                    continue;
                }
            };
            worker.child = None;
            if self.stopping {
                info!(worker = %describe(&worker.role), %status, "worker exited");
                continue;
            }
            if now.duration_since(worker.started_at) >= HEALTHY_AFTER {
                worker.consecutive_crashes = 0;
            }
            let delay = restart_delay(worker.consecutive_crashes);
            worker.consecutive_crashes = worker.consecutive_crashes.saturating_add(1);
            worker.restart_at = Some(now + delay);
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => status.to_string(),
            };
            let log = |msg| {
                if worker.consecutive_crashes > 5 {
                    error!(worker = %describe(&worker.role), ended = %how, crashes = worker.consecutive_crashes,
                        restart_in_ms = delay.as_millis() as u64, "{msg} (crash loop)");
                } else {
                    warn!(worker = %describe(&worker.role), ended = %how, crashes = worker.consecutive_crashes,
                        restart_in_ms = delay.as_millis() as u64, "{msg}");
                }
            };
            log("worker died, restarting");
        }
    }

    /// Starts the workers whose restart delay has passed.
    pub fn restart_due(&mut self) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        for idx in 0..self.workers.len() {
            let due = self.workers[idx].restart_at.is_some_and(|at| at <= now);
            if due {
                self.workers[idx].total_restarts += 1;
                if let Err(e) = self.spawn(idx) {
                    let worker = &mut self.workers[idx];
                    let delay = restart_delay(worker.consecutive_crashes);
                    worker.consecutive_crashes = worker.consecutive_crashes.saturating_add(1);
                    worker.restart_at = Some(now + delay);
                    error!(worker = %describe(&worker.role), error = %format!("{e:#}"), "restart failed, retrying");
                }
            }
        }
    }

    /// The earliest pending restart, so the supervisor can sleep until then.
    pub fn next_restart(&self) -> Option<Instant> {
        self.workers.iter().filter_map(|w| w.restart_at).min()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    pub fn begin_stop(&mut self) {
        self.stopping = true;
        for worker in &mut self.workers {
            worker.restart_at = None;
        }
    }

    /// Sends `signal` to the running workers that `select` picks.
    pub fn signal(&self, select: impl Fn(&Role) -> bool, signal: Signal) {
        for worker in self.workers.iter().filter(|w| select(&w.role)) {
            if let Some(child) = &worker.child {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = kill(Pid::from_raw(pid), signal);
                }
            }
        }
    }

    /// True when none of the workers `select` picks is running (after reaping).
    pub fn all_exited(&mut self, select: impl Fn(&Role) -> bool) -> bool {
        self.reap();
        !self
            .workers
            .iter()
            .any(|w| select(&w.role) && w.child.is_some())
    }

    /// What `sekoia-ctl status` shows of each worker.
    pub fn views(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|w| WorkerView {
                role: w.role.clone(),
                pid: w.child.as_ref().map(Child::id),
                restarting: w.restart_at.is_some(),
                restarts: w.total_restarts,
            })
            .collect()
    }

    /// True when `pid` is one of our running workers (a report's sender must be).
    pub fn is_worker(&self, pid: u32) -> bool {
        self.workers
            .iter()
            .any(|w| w.child.as_ref().is_some_and(|c| c.id() == pid))
    }

    /// Drops the supervisor's copies of the listening sockets: the ports close.
    pub fn close_listeners(&mut self) {
        for worker in &mut self.workers {
            worker.listener = None;
        }
    }
}

fn restart_delay(consecutive_crashes: u32) -> Duration {
    let factor = 1u32 << consecutive_crashes.min(16);
    FIRST_RESTART_DELAY
        .saturating_mul(factor)
        .min(MAX_RESTART_DELAY)
}

pub fn describe(role: &Role) -> String {
    match role {
        Role::Ingest { intake_id, name } => format!("ingest[{intake_id}:{name}]"),
        Role::Uplink => "uplink".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_grows_then_caps() {
        assert_eq!(restart_delay(0), Duration::from_millis(100));
        assert_eq!(restart_delay(1), Duration::from_millis(200));
        assert_eq!(restart_delay(3), Duration::from_millis(800));
        assert_eq!(restart_delay(20), MAX_RESTART_DELAY);
    }
}
