//! The supervisor: validates, prepares the shared state, binds every port, starts the workers,
//! restarts any that dies, and stops them in order. With a workers' user (`--user`,
//! run_as.rs) it prepares and saves the state as that user, and keeps root itself.
//!
//! Order matters for losing nothing: at start the uplink comes first (it drains rings left by
//! a crashed predecessor); at SIGTERM/SIGINT the inputs stop first, then the uplink gets time
//! to flush the rings before it is told to stop.

use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use sekoia_shared::config::{self, Destination, ForwarderConfig, Intake, Protocol};
use sekoia_shared::control::report::{serve_reports, ReportLine, REPORT_SOCKET};
use sekoia_shared::control::{metrics, server, socket as control_socket};
use sekoia_shared::control::{Command, ReloadOutcome, Response, ResponseBody};
use sekoia_shared::queue::layout::{InstanceDir, QueueKey, SpoolDir};
use sekoia_shared::queue::shared_file::{PrivateDir, SharedFileError};
use sekoia_shared::queue::{DiskBudget, Doorbell, Ring, RingError};
use socket2::{Domain, Socket, Type};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::budgets::Budgets;
use crate::cli::RuntimeArgs;
use crate::instance::{self, Instance};
use crate::reload::Plan;
use crate::routes::{self, UplinkPlan};
use crate::run_as::RunAs;
use crate::status_board::StatusBoard;
use crate::worker_set::{Role, WorkerSet};

/// How long stopped inputs get to hand over what they already read.
const INGEST_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the uplink gets to flush the rings at stop (it stops earlier when they are empty).
const UPLINK_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a port may stay taken (a dying predecessor's worker) before start-up fails.
const BIND_RETRY_FOR: Duration = Duration::from_secs(10);

pub fn run(cfg: ForwarderConfig, runtime_args: &RuntimeArgs, run_as: Option<&RunAs>) -> Result<()> {
    let runtime = runtime_args;
    crate::open_files::raise_to_hard_limit();
    print!("{}", config::banner(&cfg));
    if let Some(user) = run_as {
        user.give_folder(&cfg.settings.spool_dir, "SPOOL_DIR")?;
        user.give_folder(&runtime.shm_dir, "SHM_DIR")?;
        info!(user = %user.name, uid = %user.uid, gid = %user.gid,
            "workers run as this user; the supervisor keeps root to hold the ports");
    }
    crate::check_shm::refuse_if_too_small(&cfg, &runtime.shm_dir)?;
    let (instance, budgets) = as_user(run_as, || prepare_state(&cfg, runtime))?;
    let listeners = bind_all(&cfg.intakes)?;

    let event_loop = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the supervisor's event loop")?;
    event_loop.block_on(supervise(
        Arc::new(cfg),
        instance,
        listeners,
        runtime_args,
        run_as,
        budgets,
    ))?;
    Ok(())
}

/// Runs `f` as the workers' user when there is one (see run_as.rs), else as we are.
fn as_user<T>(run_as: Option<&RunAs>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match run_as {
        Some(user) => user.as_user(f),
        None => f(),
    }
}

/// The private state the workers boot from: instance folder and lock, doorbell, one ring per
/// intake (reopened when a previous run left them), the routes, a disk budget per
/// destination.
fn prepare_state(cfg: &ForwarderConfig, runtime: &RuntimeArgs) -> Result<(Instance, Budgets)> {
    let spool = &cfg.settings.spool_dir;
    PrivateDir::create(spool).context("cannot use the spool directory (SPOOL_DIR)")?;
    let instance = Instance::acquire(&runtime.shm_dir, spool)?;
    Doorbell::create_or_open(&instance.dir().doorbell_path())
        .context("cannot create the uplink doorbell")?;
    for intake in &cfg.intakes {
        create_intake_ring(instance.dir(), intake)?;
    }
    create_stats_ring(instance.dir(), cfg)?;
    routes::record(cfg)?;
    let routes = routes::plan(cfg, instance.dir());
    let budgets = Budgets::create(
        instance.dir(),
        SpoolDir::new(spool),
        cfg.settings.disk_space,
        &routes,
    )?;
    Ok((instance, budgets))
}

fn create_intake_ring(state: &InstanceDir, intake: &Intake) -> Result<()> {
    let key = QueueKey::of(intake);
    create_ring(state, key, intake.queue_size, intake.id, &intake.name)
}

/// The monitoring entry's ring, when there is one.
fn create_stats_ring(state: &InstanceDir, cfg: &ForwarderConfig) -> Result<()> {
    let Some(entry) = &cfg.stats else {
        return Ok(());
    };
    let id = crate::stats_task::STATS_INTAKE_ID;
    create_ring(state, QueueKey::STATS, entry.queue_size, id, &entry.name)
}

/// Creates the intake's ring, or reopens the one a previous run left. A ring file that
/// cannot be used (corrupt, another format) is moved aside, named in the log, and replaced:
/// one bad file must not keep the forwarder from starting.
fn create_ring(
    state: &InstanceDir,
    key: QueueKey,
    queue_size: u64,
    id: u16,
    name: &str,
) -> Result<()> {
    let path = state.ring_path(key);
    let capacity = instance::ring_capacity(queue_size);
    let info = match Ring::create_or_open(&path, capacity, id) {
        Ok(info) => info,
        Err(e) if is_unusable_file(&e) => {
            let aside = state.quarantine_ring(key).with_context(|| {
                format!("cannot move the unusable ring {} aside", path.display())
            })?;
            error!(intake = %name, ring = %path.display(), moved_to = %aside.display(), error = %e,
                "ring file unusable; moved aside (inspect or delete it) and replaced by a new one");
            Ring::create_or_open(&path, capacity, id)
                .with_context(|| format!("cannot create ring {}", path.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create ring {}", path.display())),
    };
    if info.reopened && info.head > info.committed {
        info!(intake = %name, backlog_bytes = info.head - info.committed,
            "found events left by a previous run; they are sent first");
    }
    Ok(())
}

/// Measures the spool's file system and says when `DISK_SPACE` is more than it can hold:
/// then the smaller figure is the budget in force (`queue::journal::budget`).
pub(crate) fn log_disk_budget(budget: &DiskBudget, spool: &std::path::Path) {
    match budget.apply_fs(spool) {
        Ok(room) => {
            let f = budget.figures();
            if f.in_force < f.configured {
                warn!(spool = %spool.display(), disk_space = f.configured, in_force = f.in_force,
                    available = room.available, reserve = room.reserve,
                    "DISK_SPACE is more than the spool's file system can hold; the disk budget in force is the smaller figure (measured again while running)");
            }
        }
        Err(e) => warn!(spool = %spool.display(), error = %e,
            "cannot measure the spool's file system; the disk budget is DISK_SPACE until a measurement works"),
    }
}

/// A ring file that cannot be used as found (corrupt contents, or a link, FIFO or hard link
/// planted in its place: renaming moves the entry itself, never what it points to), as
/// opposed to a problem of the machine (no memory, no permission) that moving would not fix.
fn is_unusable_file(e: &RingError) -> bool {
    matches!(
        e,
        RingError::BadMagic { .. }
            | RingError::UnsupportedVersion { .. }
            | RingError::SizeMismatch { .. }
            | RingError::BadHeader { .. }
            | RingError::BadCapacity { .. }
            | RingError::SharedFile(
                SharedFileError::Symlink { .. }
                    | SharedFileError::WrongType { .. }
                    | SharedFileError::HardLinked { .. }
            )
    )
}

/// Binds every port before any worker starts, so a taken port stops start-up cleanly.
fn bind_all(intakes: &[Intake]) -> Result<Vec<OwnedFd>> {
    intakes.iter().map(bind_with_retry).collect()
}

fn bind_with_retry(intake: &Intake) -> Result<OwnedFd> {
    let deadline = Instant::now() + BIND_RETRY_FOR;
    loop {
        match bind(intake) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "intake \"{}\": cannot listen on {} port {}",
                        intake.name,
                        proto_name(intake.protocol),
                        intake.port
                    )
                })
            }
        }
    }
}

/// A dual-stack socket on every address (as the reference's rsyslog listens), IPv4 only where
/// the host has IPv6 disabled.
pub(crate) fn bind(intake: &Intake) -> std::io::Result<OwnedFd> {
    let ty = match intake.protocol {
        Protocol::Udp => Type::DGRAM,
        Protocol::Tcp | Protocol::Tls => Type::STREAM,
    };
    // SO_REUSEADDR lets a TCP listener rebind over TIME_WAIT after a restart; on UDP it
    // would let another socket bind the same port and take datagrams, so UDP goes without.
    let reuse = ty == Type::STREAM;
    let socket = match Socket::new(Domain::IPV6, ty, None) {
        Ok(s) => {
            s.set_only_v6(false)?;
            s.set_reuse_address(reuse)?;
            s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, intake.port)).into())?;
            s
        }
        Err(_) => {
            let s = Socket::new(Domain::IPV4, ty, None)?;
            s.set_reuse_address(reuse)?;
            s.bind(&SocketAddr::from(([0, 0, 0, 0], intake.port)).into())?;
            s
        }
    };
    if ty == Type::STREAM {
        socket.listen(4096)?;
    }
    Ok(socket.into())
}

pub(crate) fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Tls => "tls",
    }
}

async fn supervise(
    mut cfg: Arc<ForwarderConfig>,
    instance: Instance,
    listeners: Vec<OwnedFd>,
    runtime: &RuntimeArgs,
    run_as: Option<&RunAs>,
    mut budgets: Budgets,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sigchld = signal(SignalKind::child()).context("cannot watch SIGCHLD")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

    let routes = routes::plan(&cfg, instance.dir());
    let mut workers = WorkerSet::new(
        instance.dir().path().to_path_buf(),
        runtime.journal_sync,
        Arc::clone(&cfg),
        routes.clone(),
        run_as.cloned(),
    );
    for route in &routes {
        workers.add(uplink_role(route), None)?;
    }
    for (intake, listener) in cfg.intakes.iter().zip(listeners) {
        workers.add(ingest_role(intake), Some(listener))?;
    }
    for route in &routes {
        info!(destination = %route.destination, queues = route.queues.len(), "uplink");
    }
    info!(
        intakes = cfg.intakes.len(),
        uplinks = routes.len(),
        "forwarder running"
    );
    let mut channels = control_channels(&cfg, instance.dir().path(), run_as).await?;
    let mut stats = crate::stats_task::start(
        &cfg,
        instance.dir(),
        runtime.journal_sync,
        run_as,
        channels.request_tx.clone(),
    )?;
    let mut board = StatusBoard::new();
    crate::notify::notify("READY=1");
    let mut watchdog = crate::notify::Watchdog::from_env();

    let stop_signal = loop {
        watchdog.tick();
        let sleep_for = workers
            .next_restart()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sigchld.recv() => workers.reap(),
            _ = sighup.recv() => {
                info!("SIGHUP: reloading the configuration");
                let outcome = reload(&mut cfg, &mut workers, &mut budgets, instance.dir(), runtime, run_as);
                if outcome.applied {
                    stats = restart_stats(stats, &cfg, instance.dir(), runtime, run_as, &channels);
                }
            }
            Some((pid, line)) = channels.reports.recv() => {
                if workers.is_worker(pid) {
                    let destination = workers.uplink_destination(pid).map(|d| d.to_string());
                    board.record(pid, destination, line.report, Instant::now());
                }
            }
            Some((request, reply)) = channels.requests.recv() => {
                board.retain(|pid| workers.is_worker(pid));
                let response = match request.command {
                    Command::Reload => {
                        info!("sekoia-ctl reload: reloading the configuration");
                        let outcome = reload(&mut cfg, &mut workers, &mut budgets, instance.dir(), runtime, run_as);
                        if outcome.applied {
                            stats = restart_stats(stats, &cfg, instance.dir(), runtime, run_as, &channels);
                        }
                        Response::new(ResponseBody::Reload(outcome))
                    }
                    Command::Status => {
                        let status = board.status(&cfg, &workers.views(), workers.is_stopping(), budgets.figures());
                        Response::new(ResponseBody::Status(Box::new(status)))
                    }
                };
                let _ = reply.send(response);
            }
            _ = tokio::time::sleep(sleep_for) => {}
        }
        workers.reap();
        workers.restart_due();
    };

    info!(
        signal = stop_signal,
        "stopping: inputs first, then the uplink flushes"
    );
    crate::notify::notify("STOPPING=1");
    stop_workers(&mut workers).await;
    if let Some(stats) = stats {
        stats.stop();
    }
    if workers.all_exited(|_| true) {
        as_user(run_as, || {
            crate::stop_save::save_rings(
                &cfg,
                workers.routes(),
                instance.dir(),
                runtime.journal_sync,
            )
        })?;
    } else {
        warn!(
            "a worker is still running: rings are not saved to disk (they stay in shared memory)"
        );
    }
    channels.remove_socket();
    info!("stopped");
    drop(instance);
    Ok(())
}

/// After a reload: the monitoring task again, with the new configuration (its objects name
/// the intakes, its entry may have changed or gone). Its R counters start a new interval.
fn restart_stats(
    running: Option<crate::stats_task::StatsTask>,
    cfg: &ForwarderConfig,
    state: &InstanceDir,
    runtime: &RuntimeArgs,
    run_as: Option<&RunAs>,
    channels: &Channels,
) -> Option<crate::stats_task::StatsTask> {
    if let Some(task) = running {
        task.stop();
    }
    let started = crate::stats_task::start(
        cfg,
        state,
        runtime.journal_sync,
        run_as,
        channels.request_tx.clone(),
    );
    started.unwrap_or_else(|e| {
        error!(error = %format!("{e:#}"), "reload: cannot start the monitoring task; its lines are not produced until the next reload or restart");
        None
    })
}

fn uplink_role(route: &UplinkPlan) -> Role {
    Role::Uplink {
        destination: route.destination.clone(),
    }
}

fn ingest_role(intake: &Intake) -> Role {
    Role::Ingest {
        key: QueueKey::of(intake),
        name: intake.name.clone(),
    }
}

/// Inputs first (they hand over what they read), then the uplink flushes the rings.
async fn stop_workers(workers: &mut WorkerSet) {
    workers.begin_stop();
    let is_ingest = |r: &Role| matches!(r, Role::Ingest { .. });
    workers.signal(is_ingest, Signal::SIGTERM);
    workers.close_listeners();
    if !wait_for(workers, is_ingest, INGEST_STOP_TIMEOUT).await {
        warn!("ingest workers did not stop in time; killing them");
        workers.signal(is_ingest, Signal::SIGKILL);
        wait_for(workers, is_ingest, Duration::from_secs(2)).await;
    }
    let is_uplink = |r: &Role| matches!(r, Role::Uplink { .. });
    workers.signal(is_uplink, Signal::SIGTERM);
    let uplink_limit = UPLINK_STOP_TIMEOUT + Duration::from_secs(5);
    if !wait_for(workers, is_uplink, uplink_limit).await {
        warn!("uplink did not stop in time; killing it (queued events stay in the rings)");
        workers.signal(is_uplink, Signal::SIGKILL);
        wait_for(workers, is_uplink, Duration::from_secs(2)).await;
    }
}

/// Reads the configuration files again and applies what changed, in the order `reload.rs`
/// explains; a configuration with any problem, or a new port that cannot be bound, changes
/// nothing.
fn reload(
    cfg: &mut Arc<ForwarderConfig>,
    workers: &mut WorkerSet,
    budgets: &mut Budgets,
    state: &InstanceDir,
    runtime: &RuntimeArgs,
    run_as: Option<&RunAs>,
) -> ReloadOutcome {
    let new = match crate::cli::reload_config(cfg.settings.clone(), run_as) {
        Ok(new) => new,
        Err(errors) => return rejected(errors.0.iter().map(ToString::to_string).collect()),
    };
    let plan = Plan::between(cfg, &new);
    let mut listeners = Vec::new();
    let mut problems = Vec::new();
    match crate::check_shm::problem(&new, &runtime.shm_dir) {
        Ok(None) => {}
        Ok(Some(problem)) => return rejected(vec![problem.to_string()]),
        Err(warning) => warn!("reload: {warning}"),
    }
    for intake in &plan.added {
        let listener = reusable_listener(workers, &plan, intake).map_or_else(|| bind(intake), Ok);
        match listener {
            Ok(fd) => listeners.push(fd),
            Err(e) => problems.push(format!(
                "intake \"{}\": cannot listen on {} port {}: {e}; free the port or choose another",
                intake.name,
                proto_name(intake.protocol),
                intake.port
            )),
        }
        if let Err(e) = as_user(run_as, || create_intake_ring(state, intake)) {
            problems.push(format!("intake \"{}\": {e:#}", intake.name));
        }
    }
    if let Err(e) = as_user(run_as, || create_stats_ring(state, &new)) {
        problems.push(format!("the monitoring entry: {e:#}"));
    }
    if let Err(e) = as_user(run_as, || routes::record(&new)) {
        problems.push(format!("{e:#}"));
    }
    if !problems.is_empty() {
        return rejected(problems);
    }
    let new = Arc::new(new);
    let old_routes = workers.routes().to_vec();
    let new_routes = routes::plan(&new, state);
    as_user(run_as, || {
        budgets.reshape(state, &old_routes, &new_routes);
        Ok(())
    })
    .ok();
    workers.set_config(Arc::clone(&new), new_routes.clone());
    let removed: Vec<QueueKey> = plan.removed.iter().map(|(key, _)| *key).collect();
    workers.retire(|r| matches!(r, Role::Ingest { key, .. } if removed.contains(key)));
    for intake in &plan.changed {
        workers.rename(QueueKey::of(intake), &intake.name);
    }
    let changed: Vec<QueueKey> = plan.changed.iter().map(QueueKey::of).collect();
    workers.replace(|r| matches!(r, Role::Ingest { key, .. } if changed.contains(key)));
    for (intake, listener) in plan.added.iter().zip(listeners) {
        if let Err(e) = workers.add(ingest_role(intake), Some(listener)) {
            error!(intake = %intake.name, error = %format!("{e:#}"), "cannot start the new intake's worker; retrying");
        }
    }
    let uplinks = apply_routes(workers, &old_routes, &new_routes);
    *cfg = new;
    let outcome = applied(&plan, uplinks);
    if outcome.is_empty() {
        info!("configuration reloaded: nothing changed");
        return outcome;
    }
    info!(added = ?outcome.added, changed = ?outcome.changed, removed = ?outcome.removed,
        unchanged = outcome.unchanged, uplinks_started = ?outcome.uplinks_started,
        uplinks_restarted = ?outcome.uplinks_restarted, uplinks_stopped = ?outcome.uplinks_stopped,
        "configuration reloaded");
    outcome
}

/// Destinations whose uplink was started, restarted (its queues changed) and stopped (no
/// queue goes there any more), as reload reports them.
#[derive(Default)]
struct UplinkChanges {
    started: Vec<String>,
    restarted: Vec<String>,
    stopped: Vec<String>,
}

/// Starts, replaces and retires uplinks so that each drains the queues `new` gives it. A
/// queue moving between uplinks is taken by the new one once the old one has stopped (it
/// holds the queue's consumer lock until then: routes.rs).
fn apply_routes(workers: &mut WorkerSet, old: &[UplinkPlan], new: &[UplinkPlan]) -> UplinkChanges {
    let mut changes = UplinkChanges::default();
    let at = |plans: &[UplinkPlan], d: &Destination| {
        plans.iter().find(|p| p.destination.same_place(d)).cloned()
    };
    for route in old {
        if at(new, &route.destination).is_none() {
            let gone = route.destination.clone();
            workers.retire(
                |r| matches!(r, Role::Uplink { destination } if destination.same_place(&gone)),
            );
            changes.stopped.push(gone.to_string());
        }
    }
    for route in new {
        match at(old, &route.destination) {
            Some(before) if before.queues == route.queues => {}
            Some(_) => {
                let d = route.destination.clone();
                workers.replace(
                    |r| matches!(r, Role::Uplink { destination } if destination.same_place(&d)),
                );
                changes.restarted.push(d.to_string());
            }
            None => {
                if let Err(e) = workers.add(uplink_role(route), None) {
                    error!(destination = %route.destination, error = %format!("{e:#}"),
                        "cannot start the uplink; retrying");
                }
                changes.started.push(route.destination.to_string());
            }
        }
    }
    changes
}

/// A stream listener of a removed intake on the same port (say TCP becoming TLS): the new
/// intake takes it over, so the port never closes.
fn reusable_listener(workers: &WorkerSet, plan: &Plan, intake: &Intake) -> Option<OwnedFd> {
    let stream = |p: Protocol| p != Protocol::Udp;
    plan.removed
        .iter()
        .find(|(key, _)| key.port == intake.port && stream(key.protocol) && stream(intake.protocol))
        .and_then(|(key, _)| workers.listener(*key))
}

fn rejected(problems: Vec<String>) -> ReloadOutcome {
    error!(
        problems = problems.len(),
        "reload rejected; the running configuration stays"
    );
    for problem in &problems {
        error!("reload: {problem}");
    }
    ReloadOutcome {
        applied: false,
        problems,
        ..ReloadOutcome::default()
    }
}

fn applied(plan: &Plan, uplinks: UplinkChanges) -> ReloadOutcome {
    let names = |intakes: &[Intake]| intakes.iter().map(|i| i.name.clone()).collect();
    ReloadOutcome {
        applied: true,
        added: names(&plan.added),
        changed: names(&plan.changed),
        removed: plan.removed.iter().map(|(_, name)| name.clone()).collect(),
        unchanged: plan.unchanged,
        uplinks_started: uplinks.started,
        uplinks_restarted: uplinks.restarted,
        uplinks_stopped: uplinks.stopped,
        problems: Vec::new(),
    }
}

async fn wait_for(
    workers: &mut WorkerSet,
    select: impl Fn(&Role) -> bool + Copy,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if workers.all_exited(select) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.all_exited(select)
}

/// The two channels into the supervisor's loop: worker reports and control requests.
struct Channels {
    reports: mpsc::Receiver<(u32, ReportLine)>,
    requests: mpsc::Receiver<server::Pending>,
    /// Another way in for requests: the monitoring task asks the status with it.
    request_tx: mpsc::Sender<server::Pending>,
    /// The control socket we created (removed at stop), if it could be created.
    control_socket: Option<PathBuf>,
}

impl Channels {
    fn remove_socket(&mut self) {
        if let Some(path) = self.control_socket.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds the report socket (in the private instance folder), the control socket and the
/// metrics address. A control socket or metrics address that cannot be bound is logged and
/// done without: forwarding matters more.
async fn control_channels(
    cfg: &ForwarderConfig,
    instance_dir: &Path,
    run_as: Option<&RunAs>,
) -> Result<Channels> {
    let (report_tx, reports) = mpsc::channel(256);
    // Bound as the workers' user: they must be able to connect to it.
    let report_listener = as_user(run_as, || {
        control_socket::bind(&instance_dir.join(REPORT_SOCKET))
            .context("cannot create the workers' report socket")
    })?;
    tokio::spawn(serve_reports(report_listener, report_tx));
    let (request_tx, requests) = mpsc::channel(16);
    let path = &cfg.settings.control_socket;
    let control_socket = match control_socket::bind(path) {
        Ok(listener) => {
            tokio::spawn(server::serve(listener, request_tx.clone()));
            info!(path = %path.display(), "control socket ready (sekoia-ctl status)");
            Some(path.clone())
        }
        Err(e) => {
            error!(error = %e, "no control socket: sekoia-ctl cannot reach this forwarder (forwarding goes on)");
            None
        }
    };
    if let Some(addr) = cfg.settings.metrics_listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tokio::spawn(metrics::serve(listener, request_tx.clone()));
                info!(%addr, "Prometheus metrics at http://{addr}/metrics");
            }
            Err(e) => {
                error!(%addr, error = %e, "cannot serve Prometheus metrics (METRICS_LISTEN); forwarding goes on");
            }
        }
    }
    Ok(Channels {
        reports,
        requests,
        request_tx,
        control_socket,
    })
}
