//! The ingest worker: one intake's port → framing (input) → its `IntakeSink` (render, ring,
//! journal), plus the periodic jobs around them (journal fsync, loss reports).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sekoia_shared::config::{Intake, Protocol};
use sekoia_shared::control::report::{self, WorkerReport, REPORT_SOCKET};
use sekoia_shared::input::{self, InputCounters, MessageSink, Resolver};
use sekoia_shared::queue::intake::{IntakeWriter, JournalOpener};
use sekoia_shared::queue::layout::{InstanceDir, QueueKey, SpoolDir};
use sekoia_shared::queue::{Doorbell, RingProducer};
use tracing::info;

use crate::instance;
use crate::intake_sink::IntakeSink;
use sekoia_shared::control::worker_spec::{WorkerRole, WorkerSpec};

/// How often drops and errors are reported in the log.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

pub fn run(spec: WorkerSpec, label: &str) -> Result<()> {
    instance::die_with_supervisor()?;
    let WorkerRole::Ingest { intake } = spec.role else {
        bail!("an ingest worker was given another worker's specification");
    };
    let intake = *intake;
    let key = QueueKey::of(&intake);
    if key.to_string() != label {
        bail!("the ingest worker of {label} was given the specification of {key}");
    }
    let cfg = spec.config;
    let state = InstanceDir::open(&spec.state_dir)?;
    let ring_path = state.ring_path(key);
    let _producer_lock = instance::lock_exclusive(
        &state,
        &InstanceDir::producer_lock_name(key),
        "ingest worker",
    )?;
    let doorbell = Doorbell::create_or_open(&state.doorbell_path())
        .context("cannot open the uplink doorbell")?;
    let mut producer = RingProducer::attach_with_doorbell(&ring_path, doorbell.clone())
        .with_context(|| format!("cannot attach ring {}", ring_path.display()))?;
    // The memory tier holds `queue_size` events (and at most the ring's bytes).
    producer.set_max_records(Some(intake.queue_size));
    let budget = crate::budgets::open(&state, &intake.destination)?;
    let options = crate::journal_options(&cfg, spec.journal_sync, &budget);
    let opener = JournalOpener::new(
        SpoolDir::new(&cfg.settings.spool_dir).journal_dir(key),
        intake.id,
        budget,
        options,
    );
    let writer = IntakeWriter::new(&intake.name, producer, opener, doorbell);
    let sink = Arc::new(IntakeSink::new(intake.clone(), writer));
    let wait = std::time::Duration::from_millis(cfg.settings.resolve_timeout_ms);
    let resolver = Arc::new(Resolver::new(cfg.settings.resolve_hostnames).with_wait(wait));
    let counters = Arc::new(InputCounters::default());

    let report_socket = state.path().join(REPORT_SOCKET);
    crate::worker_runtime::runtime("ingest")?.block_on(serve(
        intake,
        sink,
        resolver,
        counters,
        report_socket,
    ))
}

async fn serve(
    intake: Intake,
    sink: Arc<IntakeSink>,
    resolver: Arc<Resolver>,
    counters: Arc<InputCounters>,
    report_socket: PathBuf,
) -> Result<()> {
    let stop_rx = crate::worker_runtime::stop_on_sigterm()?;
    let mut fds = listenfd::ListenFd::from_env();
    info!(intake = %intake.name, port = intake.port, "ingest worker serving");
    let sink_dyn: Arc<dyn MessageSink> = sink.clone();
    let syncer = tokio::spawn(sync_periodically(sink.clone()));
    let reporter = tokio::spawn(crate::input_report::report_periodically(
        intake.name.clone(),
        counters.clone(),
        REPORT_EVERY,
    ));
    let to_supervisor = {
        let (intake_id, counters, sink) = (intake.id, counters.clone(), sink.clone());
        tokio::spawn(report::report_periodically(report_socket, move || {
            WorkerReport::Ingest {
                intake_id,
                input: counters.snapshot(),
                queue: sink.queue_snapshot(),
            }
        }))
    };
    match intake.protocol {
        Protocol::Udp => {
            let socket = fds
                .take_udp_socket(0)
                .context("cannot take the inherited UDP socket")?
                .ok_or_else(|| anyhow!("no UDP socket inherited (LISTEN_FDS)"))?;
            let sources = intake.limits.allowed_sources.clone();
            input::serve_udp_from(
                socket,
                sink_dyn,
                resolver,
                counters.clone(),
                stop_rx,
                sources,
            )
            .await?;
        }
        Protocol::Tcp => {
            let listener = take_tcp(&mut fds)?;
            let options = input::ListenerOptions::new(intake.limits.clone());
            input::serve_tcp_with(
                listener,
                sink_dyn,
                resolver,
                counters.clone(),
                stop_rx,
                options,
            )
            .await?;
        }
        Protocol::Tls => {
            let files = intake
                .tls
                .as_ref()
                .ok_or_else(|| anyhow!("tls intake without certificate files"))?;
            let tls = input::TlsIntake::load(&intake.name, files)?;
            let listener = take_tcp(&mut fds)?;
            let options = input::ListenerOptions::new(intake.limits.clone());
            input::serve_tls_with(
                listener,
                tls,
                sink_dyn,
                resolver,
                counters.clone(),
                stop_rx,
                options,
            )
            .await?;
        }
    }
    reporter.abort();
    to_supervisor.abort();
    syncer.abort();
    sink.close();
    crate::input_report::report_totals(&intake.name, &counters);
    info!(intake = %intake.name, "ingest worker stopped");
    Ok(())
}

fn take_tcp(fds: &mut listenfd::ListenFd) -> Result<std::net::TcpListener> {
    fds.take_tcp_listener(0)
        .context("cannot take the inherited TCP listener")?
        .ok_or_else(|| anyhow!("no TCP listener inherited (LISTEN_FDS)"))
}

/// Lets the journal's batch fsync happen even when no more events come.
async fn sync_periodically(sink: Arc<IntakeSink>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        sink.sync_if_due();
    }
}
