//! The supervisor's children: start, reap, restart with backoff, signal, wait, and at a
//! reload retire or replace them.
//!
//! Workers are this binary re-executed (`/proc/self/exe`, so an upgrade on disk never mixes
//! versions) with a hidden subcommand. Each start writes the worker's whole specification
//! (`control::worker_spec`), built from the configuration in force, to its standard input.
//! An ingest worker gets its listening socket as fd 3
//! (`LISTEN_FDS=1`); the supervisor keeps its own copy, so the port stays bound and its
//! accept backlog survives while a dead worker is restarted. A worker that keeps crashing is
//! restarted forever (never stopping matters more than anything) but with a delay growing to
//! 30 s, and every crash is logged with its exit status. With a workers' user (run_as.rs)
//! each worker is started with its uid and gid; std drops the supplementary groups.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sekoia_shared::config::{Destination, ForwarderConfig};
use sekoia_shared::control::worker_spec::{JournalSync, WorkerRole, WorkerSpec};
use sekoia_shared::queue::layout::QueueKey;
use tracing::{error, info, warn};

use crate::routes::UplinkPlan;
use crate::run_as::RunAs;

/// The fd number a worker finds its listening socket at (systemd socket-activation layout).
pub const LISTEN_FD: i32 = 3;
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A worker that stayed up this long is healthy again: its next crash restarts it at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Serves the intake of this protocol and port (its identity across reloads).
    Ingest { key: QueueKey, name: String },
    /// Drains the queues the routes give this destination (routes.rs).
    Uplink { destination: Destination },
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
    /// What happens when it exits next: restart (after a delay if it crashed), start again
    /// at once (replaced at a reload), or nothing (retired at a reload).
    on_exit: OnExit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnExit {
    Restart,
    Replace,
    Retire,
}

pub struct WorkerSet {
    state_dir: PathBuf,
    journal_sync: JournalSync,
    /// The configuration workers are started with (replaced at a reload).
    config: Arc<ForwarderConfig>,
    /// Which queues each uplink drains (replaced at a reload).
    routes: Vec<UplinkPlan>,
    workers: Vec<Worker>,
    /// Once stopping, dead workers are not restarted any more.
    stopping: bool,
    /// The user workers run as; None: the supervisor's own.
    run_as: Option<RunAs>,
}

impl WorkerSet {
    pub fn new(
        state_dir: PathBuf,
        journal_sync: JournalSync,
        config: Arc<ForwarderConfig>,
        routes: Vec<UplinkPlan>,
        run_as: Option<RunAs>,
    ) -> Self {
        Self {
            state_dir,
            journal_sync,
            config,
            routes,
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
            on_exit: OnExit::Restart,
        });
        let idx = self.workers.len() - 1;
        self.spawn(idx)
    }

    /// The specification of `role` under the configuration in force.
    fn spec(&self, role: &Role) -> Result<Vec<u8>> {
        let role = match role {
            Role::Ingest { key, name } => {
                let intake = self
                    .config
                    .intakes
                    .iter()
                    .find(|i| QueueKey::of(i) == *key)
                    .with_context(|| format!("intake \"{name}\" ({key}) is not configured"))?;
                WorkerRole::Ingest {
                    intake: Box::new(intake.clone()),
                }
            }
            Role::Uplink { destination } => {
                let plan = self
                    .routes
                    .iter()
                    .find(|p| p.destination.same_place(destination))
                    .with_context(|| format!("no queue goes to {destination}"))?;
                WorkerRole::Uplink {
                    destination: plan.destination.clone(),
                    queues: plan.queues.clone(),
                }
            }
        };
        let spec = WorkerSpec::new(
            self.state_dir.clone(),
            self.journal_sync,
            (*self.config).clone(),
            role,
        );
        spec.encode()
            .context("cannot encode the worker specification")
    }

    fn spawn(&mut self, idx: usize) -> Result<()> {
        let spec = self.spec(&self.workers[idx].role)?;
        let run_as = self.run_as.clone();
        let worker = &mut self.workers[idx];
        let mut cmd = Command::new("/proc/self/exe");
        match &worker.role {
            Role::Ingest { key, .. } => cmd
                .arg("ingest-worker")
                .arg("--intake")
                .arg(key.to_string()),
            Role::Uplink { destination } => cmd
                .arg("uplink-worker")
                .arg("--destination")
                .arg(destination.to_string()),
        };
        cmd.stdin(Stdio::piped());
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
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", describe(&worker.role)))?;
        hand_over_spec(&mut child, spec, describe(&worker.role));
        info!(worker = %describe(&worker.role), pid = child.id(), "worker started");
        worker.child = Some(child);
        worker.started_at = Instant::now();
        worker.restart_at = None;
        worker.on_exit = OnExit::Restart;
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
            if self.stopping || worker.on_exit != OnExit::Restart {
                info!(worker = %describe(&worker.role), %status, "worker exited");
                if worker.on_exit == OnExit::Replace && !self.stopping {
                    worker.restart_at = Some(now);
                }
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

    /// Starts the workers whose restart delay has passed; forgets retired workers that
    /// exited.
    pub fn restart_due(&mut self) {
        if self.stopping {
            return;
        }
        self.workers
            .retain(|w| !(w.on_exit == OnExit::Retire && w.child.is_none()));
        let now = Instant::now();
        for idx in 0..self.workers.len() {
            let due = self.workers[idx].restart_at.is_some_and(|at| at <= now);
            if due {
                if self.workers[idx].on_exit == OnExit::Restart {
                    self.workers[idx].total_restarts += 1;
                }
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
            if let Some(pid) = worker
                .child
                .as_ref()
                .and_then(|c| i32::try_from(c.id()).ok())
            {
                let _ = kill(Pid::from_raw(pid), signal);
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

    /// The destination of the uplink worker `pid`; None for another worker.
    pub fn uplink_destination(&self, pid: u32) -> Option<&Destination> {
        self.workers
            .iter()
            .find(|w| w.child.as_ref().is_some_and(|c| c.id() == pid))
            .and_then(|w| match &w.role {
                Role::Uplink { destination } => Some(destination),
                Role::Ingest { .. } => None,
            })
    }

    /// True when `pid` is one of our running workers (a report's sender must be).
    pub fn is_worker(&self, pid: u32) -> bool {
        self.workers
            .iter()
            .any(|w| w.child.as_ref().is_some_and(|c| c.id() == pid))
    }

    /// The configuration and routes workers start with from now on (a reload).
    pub fn set_config(&mut self, config: Arc<ForwarderConfig>, routes: Vec<UplinkPlan>) {
        self.config = config;
        self.routes = routes;
    }

    /// Which queues each uplink drains.
    pub fn routes(&self) -> &[UplinkPlan] {
        &self.routes
    }

    /// A copy of the listening socket the supervisor holds for `key`'s intake.
    pub fn listener(&self, key: QueueKey) -> Option<OwnedFd> {
        self.workers
            .iter()
            .find(|w| matches!(&w.role, Role::Ingest { key: k, .. } if *k == key))
            .and_then(|w| w.listener.as_ref())
            .and_then(|fd| fd.try_clone().ok())
    }

    /// Renames `key`'s worker (an unchanged intake whose name moved with the file).
    pub fn rename(&mut self, key: QueueKey, name: &str) {
        for worker in &mut self.workers {
            if let Role::Ingest { key: k, name: n } = &mut worker.role {
                if *k == key {
                    *n = name.to_string();
                }
            }
        }
    }

    /// Stops `select`'s workers in order (SIGTERM: they hand over what they read) and
    /// forgets them once they exit; their listening sockets close now.
    pub fn retire(&mut self, select: impl Fn(&Role) -> bool) {
        for worker in self.workers.iter_mut().filter(|w| select(&w.role)) {
            worker.on_exit = OnExit::Retire;
            worker.restart_at = None;
            worker.listener = None;
            term(worker);
        }
    }

    /// Stops `select`'s workers in order and starts them again at once, with the
    /// configuration in force (a reload that changed what they do).
    pub fn replace(&mut self, select: impl Fn(&Role) -> bool) {
        let now = Instant::now();
        for worker in self.workers.iter_mut().filter(|w| select(&w.role)) {
            worker.on_exit = OnExit::Replace;
            if worker.child.is_none() {
                worker.restart_at = Some(now);
            }
            term(worker);
        }
    }

    /// Drops the supervisor's copies of the listening sockets: the ports close.
    pub fn close_listeners(&mut self) {
        for worker in &mut self.workers {
            worker.listener = None;
        }
    }
}

fn term(worker: &Worker) {
    if let Some(pid) = worker
        .child
        .as_ref()
        .and_then(|c| i32::try_from(c.id()).ok())
    {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Writes `spec` to the child's standard input on a thread of its own, so that a child
/// that does not read (stuck, or dead at once) never blocks the supervisor's loop; the
/// pipe closes when the thread ends, and a child that died finds nothing to read.
fn hand_over_spec(child: &mut Child, spec: Vec<u8>, worker: String) {
    let Some(mut stdin) = child.stdin.take() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("worker-spec".into())
        .spawn(move || {
            if let Err(e) = stdin.write_all(&spec) {
                warn!(%worker, error = %e, "cannot hand the worker its specification; it will exit and be restarted");
            }
        });
    if let Err(e) = spawned {
        error!(error = %e, "cannot start the thread that hands a worker its specification");
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
        Role::Ingest { key, name } => format!("ingest[{key}:{name}]"),
        Role::Uplink { destination } => format!("uplink[{destination}]"),
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
