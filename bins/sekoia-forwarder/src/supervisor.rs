//! The supervisor: validates, prepares the shared state, binds every port, starts the workers,
//! restarts any that dies, and stops them in order.
//!
//! Order matters for losing nothing: at start the uplink comes first (it drains rings left by
//! a crashed predecessor); at SIGTERM/SIGINT the inputs stop first, then the uplink gets time
//! to flush the rings before it is told to stop.

use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use sekoia_shared::config::{self, ForwarderConfig, Intake, Protocol};
use sekoia_shared::queue::layout::{InstanceDir, QueueKey};
use sekoia_shared::queue::shared_file::{PrivateDir, SharedFileError};
use sekoia_shared::queue::{scan_usage, DiskBudget, Doorbell, Ring, RingError};
use socket2::{Domain, Socket, Type};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::cli::RuntimeArgs;
use crate::instance::{self, Instance};
use crate::worker_set::{Role, WorkerSet};

/// How long stopped inputs get to hand over what they already read.
const INGEST_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the uplink gets to flush the rings at stop (it stops earlier when they are empty).
const UPLINK_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a port may stay taken (a dying predecessor's worker) before start-up fails.
const BIND_RETRY_FOR: Duration = Duration::from_secs(10);

pub fn run(cfg: ForwarderConfig, runtime_args: &RuntimeArgs) -> Result<()> {
    let runtime = runtime_args;
    crate::open_files::raise_to_hard_limit();
    print!("{}", config::banner(&cfg));
    let spool = &cfg.settings.spool_dir;
    PrivateDir::create(spool).context("cannot use the spool directory (SPOOL_DIR)")?;
    let instance = Instance::acquire(&runtime.shm_dir, spool)?;
    instance.write_config(&cfg)?;
    let used = scan_usage(spool)
        .with_context(|| format!("cannot measure the spool directory {}", spool.display()))?;
    DiskBudget::create(&instance.dir().budget_path(), cfg.settings.disk_space, used)
        .context("cannot create the disk budget")?;
    if used > 0 {
        info!(spool = %spool.display(), bytes = used, "found events queued on disk; they are sent first");
    }
    Doorbell::create_or_open(&instance.dir().doorbell_path())
        .context("cannot create the uplink doorbell")?;
    for intake in &cfg.intakes {
        create_ring(instance.dir(), intake)?;
    }
    let listeners = bind_all(&cfg.intakes)?;

    let event_loop = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the supervisor's event loop")?;
    event_loop.block_on(supervise(&cfg, instance, listeners, runtime_args))?;
    Ok(())
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
    let socket = match Socket::new(Domain::IPV6, ty, None) {
        Ok(s) => {
            s.set_only_v6(false)?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, intake.port)).into())?;
            s
        }
        Err(_) => {
            let s = Socket::new(Domain::IPV4, ty, None)?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::from(([0, 0, 0, 0], intake.port)).into())?;
            s
        }
    };
    if ty == Type::STREAM {
        socket.listen(4096)?;
    }
    Ok(socket.into())
}

fn proto_name(p: Protocol) -> &'static str {
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
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sigchld = signal(SignalKind::child()).context("cannot watch SIGCHLD")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

    let common_args = vec![
        "--journal-sync".to_string(),
        runtime.journal_sync.as_arg().to_string(),
    ];
    let mut workers = WorkerSet::new(instance.dir().path().to_path_buf(), common_args);
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
    crate::notify::notify("READY=1");

    let stop_signal = loop {
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
        crate::stop_save::save_rings(cfg, instance.dir(), runtime.journal_sync)?;
    } else {
        warn!(
            "a worker is still running: rings are not saved to disk (they stay in shared memory)"
        );
    }
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
