//! The uplink worker of one destination: its queues → the TLS connection pool → the
//! destination.
//!
//! It opens the queues its specification names (`queue::intake`: saved, ring, journal; the
//! supervisor's routes.rs decides which, queues of intakes no longer configured included) as
//! the uplink's sources, adapts the doorbell to its `Wakeup`, and runs until SIGTERM, when
//! the uplink flushes what the rings still hold (bounded by its drain timeout).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sekoia_shared::control::report::{self, WorkerReport, REPORT_SOCKET};
use sekoia_shared::queue::intake;
use sekoia_shared::queue::layout::{InstanceDir, SpoolDir};
use sekoia_shared::queue::Doorbell;
use sekoia_shared::uplink::{BatchSource, Uplink, UplinkConfig, UplinkCounters, Wakeup};
use tracing::info;

use crate::instance;
use sekoia_shared::control::worker_spec::{WorkerRole, WorkerSpec};

pub fn run(spec: WorkerSpec, label: &str) -> Result<()> {
    instance::die_with_supervisor()?;
    let WorkerRole::Uplink {
        destination,
        queues,
    } = spec.role
    else {
        bail!("the uplink worker was given another worker's specification");
    };
    if destination.to_string() != label {
        bail!("the uplink worker of {label} was given the specification of {destination}");
    }
    let cfg = spec.config;
    let state = InstanceDir::open(&spec.state_dir)?;
    // One consumer per queue: wait for an uplink that drained one of them before (a
    // reload moved it here) to stop.
    let mut _consumer_locks = Vec::new();
    for key in &queues {
        let lock = InstanceDir::consumer_lock_name(*key);
        _consumer_locks.push(instance::lock_exclusive(
            &state,
            &lock,
            "uplink of this queue",
        )?);
    }
    let budget = crate::budgets::open(&state, &destination)?;
    let opts = crate::journal_options(&cfg, spec.journal_sync, &budget);
    let spool = SpoolDir::new(&cfg.settings.spool_dir);
    let rings = state.ring_keys()?;
    let mut sources: Vec<Box<dyn BatchSource>> = Vec::new();
    for key in queues {
        let ring = rings.contains(&key).then(|| state.ring_path(key));
        let queue = intake::open_queue(key, ring.as_deref(), &spool, &budget, &opts);
        sources.push(Box::new(queue));
    }
    let doorbell = Doorbell::create_or_open(&state.doorbell_path())
        .context("cannot open the uplink doorbell")?;
    let settings = &cfg.settings;
    let mut uplink_cfg = UplinkConfig::new(destination.host.clone(), destination.port);
    uplink_cfg.connections = settings.uplink_connections.max(1);
    uplink_cfg.ca_file = settings.ca_file.clone();
    uplink_cfg.output = destination.output;
    info!(destination = %destination.describe(),
        connections = uplink_cfg.connections, rings = sources.len(), "uplink worker starting");
    let counters = Arc::new(UplinkCounters::default());
    let report_socket = state.path().join(REPORT_SOCKET);
    let uplink_counters = counters.clone();
    crate::worker_runtime::runtime("uplink")?.block_on(async move {
        let stop_rx = crate::worker_runtime::stop_on_sigterm()?;
        let wake: Arc<dyn Wakeup> = Arc::new(DoorbellWakeup(doorbell));
        tokio::spawn(crate::uplink_report::report_periodically(
            uplink_counters.clone(),
            Duration::from_secs(10),
        ));
        let reported = uplink_counters.clone();
        tokio::spawn(report::report_periodically(report_socket, move || {
            WorkerReport::Uplink {
                uplink: reported.snapshot(),
            }
        }));
        Uplink::run(uplink_cfg, sources, wake, uplink_counters, stop_rx)
            .await
            .map_err(anyhow::Error::from)
    })?;
    crate::uplink_report::report_totals(&counters);
    info!("uplink worker stopped");
    Ok(())
}

/// The doorbell the ingest workers ring, as the uplink's wake-up source.
struct DoorbellWakeup(Doorbell);

impl Wakeup for DoorbellWakeup {
    fn wait(&self, timeout: Duration) {
        self.0.wait(timeout);
    }

    fn notify(&self) {
        self.0.ring();
    }
}
