//! The uplink worker: every ring of the instance → the TLS connection pool → the destination.
//!
//! It adapts the library's rings (`queue`) to the uplink's `BatchSource`, the doorbell to its
//! `Wakeup`, and runs until SIGTERM, when the uplink flushes what the rings still hold (bounded
//! by its drain timeout). Rings of intakes no longer configured are drained too.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sekoia_shared::queue::intake_queue::{IntakeQueue, RingTier};
use sekoia_shared::queue::{Doorbell, RingConsumer};
use sekoia_shared::uplink::{BatchSource, Uplink, UplinkConfig, UplinkCounters, Wakeup};
use tracing::info;

use crate::cli::UplinkWorkerArgs;
use crate::instance;

pub fn run(args: &UplinkWorkerArgs) -> Result<()> {
    instance::die_with_supervisor()?;
    let _consumer_lock =
        instance::lock_exclusive(&args.state_dir.join("uplink.lock"), "uplink worker")?;
    let cfg = instance::read_config(&args.state_dir)?;
    let mut sources: Vec<Box<dyn BatchSource>> = Vec::new();
    for path in instance::all_rings(&args.state_dir)? {
        sources.push(Box::new(intake_queue(&path)?));
    }
    let doorbell = Doorbell::create_or_open(&instance::doorbell_path(&args.state_dir))
        .context("cannot open the uplink doorbell")?;
    let settings = &cfg.settings;
    let mut uplink_cfg =
        UplinkConfig::new(settings.destination.host.clone(), settings.destination.port);
    uplink_cfg.connections = settings.uplink_connections.max(1);
    uplink_cfg.ca_file = settings.ca_file.clone();
    info!(destination = %format!("{}:{}", uplink_cfg.host, uplink_cfg.port),
        connections = uplink_cfg.connections, rings = sources.len(), "uplink worker starting");
    let counters = Arc::new(UplinkCounters::default());
    crate::worker_runtime::runtime("uplink")?.block_on(async move {
        let stop_rx = crate::worker_runtime::stop_on_sigterm()?;
        let wake: Arc<dyn Wakeup> = Arc::new(DoorbellWakeup(doorbell));
        Uplink::run(uplink_cfg, sources, wake, counters, stop_rx)
            .await
            .map_err(anyhow::Error::from)
    })?;
    info!("uplink worker stopped");
    Ok(())
}

/// An intake's queue (today its ring) as the uplink's source.
fn intake_queue(ring_path: &Path) -> Result<IntakeQueue> {
    let ring = RingConsumer::attach(ring_path)
        .with_context(|| format!("cannot attach ring {}", ring_path.display()))?;
    let name = ring_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(IntakeQueue::new(name, vec![Box::new(RingTier(ring))]))
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
