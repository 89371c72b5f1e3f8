//! The uplink worker: every ring of the instance → the TLS connection pool → the destination.
//!
//! It opens every intake's queue (`queue::intake`: saved, ring, journal) as the uplink's
//! sources, adapts the doorbell to its `Wakeup`, and runs until SIGTERM, when the uplink flushes what the rings still hold (bounded
//! by its drain timeout). Rings of intakes no longer configured are drained too.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sekoia_shared::control::report::{self, WorkerReport, REPORT_SOCKET};
use sekoia_shared::queue::intake;
use sekoia_shared::queue::layout::{InstanceDir, SpoolDir, UPLINK_LOCK};
use sekoia_shared::queue::{DiskBudget, Doorbell};
use sekoia_shared::uplink::{BatchSource, Uplink, UplinkConfig, UplinkCounters, Wakeup};
use tracing::info;

use crate::cli::UplinkWorkerArgs;
use crate::instance;

pub fn run(args: &UplinkWorkerArgs) -> Result<()> {
    instance::die_with_supervisor()?;
    let state = InstanceDir::open(&args.state_dir)?;
    let _consumer_lock = instance::lock_exclusive(&state, UPLINK_LOCK, "uplink worker")?;
    let cfg = instance::read_config(&state)?;
    let budget = DiskBudget::open(&state.budget_path()).context("cannot open the disk budget")?;
    let opts = crate::journal_options(&cfg, args.journal_sync, &budget);
    let spool = SpoolDir::new(&cfg.settings.spool_dir);
    let rings = state.ring_keys()?;
    let mut keys = rings.clone();
    keys.extend(spool.keys_on_disk());
    keys.sort();
    keys.dedup();
    let mut sources: Vec<Box<dyn BatchSource>> = Vec::new();
    for key in keys {
        let ring = rings.contains(&key).then(|| state.ring_path(key));
        let queue = intake::open_queue(key, ring.as_deref(), &spool, &budget, &opts);
        sources.push(Box::new(queue));
    }
    let doorbell = Doorbell::create_or_open(&state.doorbell_path())
        .context("cannot open the uplink doorbell")?;
    let settings = &cfg.settings;
    let mut uplink_cfg =
        UplinkConfig::new(settings.destination.host.clone(), settings.destination.port);
    uplink_cfg.connections = settings.uplink_connections.max(1);
    uplink_cfg.ca_file = settings.ca_file.clone();
    uplink_cfg.output = settings.destination.output;
    info!(destination = %settings.destination.describe(),
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
