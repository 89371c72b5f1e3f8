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
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use sekoia_shared::config::{self, ForwarderConfig, Intake, Protocol};
use sekoia_shared::control::report::{serve_reports, ReportLine, REPORT_SOCKET};
use sekoia_shared::control::{metrics, server, socket as control_socket};
use sekoia_shared::control::{Command, Request, Response, ResponseBody};
use sekoia_shared::queue::layout::{InstanceDir, QueueKey};
use sekoia_shared::queue::shared_file::{PrivateDir, SharedFileError};
use sekoia_shared::queue::{scan_usage, DiskBudget, Doorbell, Ring, RingError};
use socket2::{Domain, Socket, Type};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::cli::RuntimeArgs;
use crate::instance::{self, Instance};
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
    let (instance, budget) = as_user(run_as, || prepare_state(&cfg, runtime))?;
    let listeners = bind_all(&cfg.intakes)?;

    let event_loop = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the supervisor's event loop")?;
    event_loop.block_on(supervise(
        &cfg,
        instance,
        listeners,
        runtime_args,
        run_as,
        budget,
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

/// The private state the workers boot from: instance folder and lock, configuration, disk
/// budget, doorbell, one ring per intake (reopened when a previous run left them).
fn prepare_state(cfg: &ForwarderConfig, runtime: &RuntimeArgs) -> Result<(Instance, DiskBudget)> {
    let spool = &cfg.settings.spool_dir;
    PrivateDir::create(spool).context("cannot use the spool directory (SPOOL_DIR)")?;
    let instance = Instance::acquire(&runtime.shm_dir, spool)?;
    instance.write_config(cfg)?;
    let used = scan_usage(spool)
        .with_context(|| format!("cannot measure the spool directory {}", spool.display()))?;
    let budget = DiskBudget::create(&instance.dir().budget_path(), cfg.settings.disk_space, used)
        .context("cannot create the disk budget")?;
    log_disk_budget(&budget, spool);
    if used > 0 {
        info!(spool = %spool.display(), bytes = used, "found events queued on disk; they are sent first");
    }
    Doorbell::create_or_open(&instance.dir().doorbell_path())
        .context("cannot create the uplink doorbell")?;
    for intake in &cfg.intakes {
        create_ring(instance.dir(), intake)?;
    }
    Ok((instance, budget))
}

/// Creates the intake's ring, or reopens the one a previous run left. A ring file that
/// cannot be used (corrupt, another format) is moved aside, named in the log, and replaced:
/// one bad file must not keep the forwarder from starting.
fn create_ring(state: &InstanceDir, intake: &Intake) -> Result<()> {
    let key = QueueKey::of(intake);
    let path = state.ring_path(key);
    let capacity = instance::ring_capacity(intake.queue_size);
    let info = match Ring::create_or_open(&path, capacity, intake.id) {
        Ok(info) => info,
        Err(e) if is_unusable_file(&e) => {
            let aside = state.quarantine_ring(key).with_context(|| {
                format!("cannot move the unusable ring {} aside", path.display())
            })?;
            error!(intake = %intake.name, ring = %path.display(), moved_to = %aside.display(), error = %e,
                "ring file unusable; moved aside (inspect or delete it) and replaced by a new one");
            Ring::create_or_open(&path, capacity, intake.id)
                .with_context(|| format!("cannot create ring {}", path.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create ring {}", path.display())),
    };
    if info.reopened && info.head > info.committed {
        info!(intake = %intake.name, backlog_bytes = info.head - info.committed,
            "found events left by a previous run; they are sent first");
    }
    Ok(())
}

/// Measures the spool's file system and says when `DISK_SPACE` is more than it can hold:
/// then the smaller figure is the budget in force (`queue::journal::budget`).
fn log_disk_budget(budget: &DiskBudget, spool: &std::path::Path) {
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
fn bind(intake: &Intake) -> std::io::Result<OwnedFd> {
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
    cfg: &ForwarderConfig,
    instance: Instance,
    listeners: Vec<OwnedFd>,
    runtime: &RuntimeArgs,
    run_as: Option<&RunAs>,
    budget: DiskBudget,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sigchld = signal(SignalKind::child()).context("cannot watch SIGCHLD")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

    let common_args = vec![
        "--journal-sync".to_string(),
        runtime.journal_sync.as_arg().to_string(),
    ];
    let mut workers = WorkerSet::new(
        instance.dir().path().to_path_buf(),
        common_args,
        run_as.cloned(),
    );
    workers.add(Role::Uplink, None)?;
    for (intake, listener) in cfg.intakes.iter().zip(listeners) {
        let role = Role::Ingest {
            intake_id: intake.id,
            name: intake.name.clone(),
        };
        workers.add(role, Some(listener))?;
    }
    info!(
        intakes = cfg.intakes.len(),
        destination = %format!("{}:{}", cfg.settings.destination.host, cfg.settings.destination.port),
        "forwarder running"
    );
    let mut channels = control_channels(cfg, instance.dir().path(), run_as).await?;
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
                // Without a handler SIGHUP would kill the supervisor with no orderly stop.
                warn!("SIGHUP: configuration reload is not supported yet; restart to apply changes (nothing was changed)");
            }
            Some((pid, line)) = channels.reports.recv() => {
                if workers.is_worker(pid) {
                    board.record(pid, line.report, Instant::now());
                }
            }
            Some((request, reply)) = channels.requests.recv() => {
                board.retain(|pid| workers.is_worker(pid));
                let _ = reply.send(answer(&request, &board, cfg, &workers, &budget));
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
    workers.begin_stop();
    let is_ingest = |r: &Role| matches!(r, Role::Ingest { .. });
    workers.signal(is_ingest, Signal::SIGTERM);
    workers.close_listeners();
    if !wait_for(&mut workers, is_ingest, INGEST_STOP_TIMEOUT).await {
        warn!("ingest workers did not stop in time; killing them");
        workers.signal(is_ingest, Signal::SIGKILL);
        wait_for(&mut workers, is_ingest, Duration::from_secs(2)).await;
    }
    let is_uplink = |r: &Role| matches!(r, Role::Uplink);
    workers.signal(is_uplink, Signal::SIGTERM);
    if !wait_for(
        &mut workers,
        is_uplink,
        UPLINK_STOP_TIMEOUT + Duration::from_secs(5),
    )
    .await
    {
        warn!("uplink did not stop in time; killing it (queued events stay in the rings)");
        workers.signal(is_uplink, Signal::SIGKILL);
        wait_for(&mut workers, is_uplink, Duration::from_secs(2)).await;
    }
    if workers.all_exited(|_| true) {
        as_user(run_as, || {
            crate::stop_save::save_rings(cfg, instance.dir(), runtime.journal_sync)
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
        control_socket,
    })
}

fn answer(
    request: &Request,
    board: &StatusBoard,
    cfg: &ForwarderConfig,
    workers: &WorkerSet,
    budget: &DiskBudget,
) -> Response {
    match request.command {
        Command::Status => {
            let status = board.status(cfg, &workers.views(), workers.is_stopping(), budget);
            Response::new(ResponseBody::Status(Box::new(status)))
        }
    }
}
