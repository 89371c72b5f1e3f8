//! The uplink worker: every ring of the instance → the TLS connection pool → the destination.
//!
//! It adapts the library's rings (`queue`) to the uplink's `BatchSource`, the doorbell to its
//! `Wakeup`, and runs until SIGTERM, when the uplink flushes what the rings still hold (bounded
//! by its drain timeout). Rings of intakes no longer configured are drained too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sekoia_shared::queue::intake_queue::{IntakeQueue, JournalTier, RingTier, Tier};
use sekoia_shared::queue::{DiskBudget, Doorbell, JournalOptions, RingConsumer};
use sekoia_shared::uplink::{BatchSource, Uplink, UplinkConfig, UplinkCounters, Wakeup};
use tracing::{error, info};

use crate::cli::{JournalSync, UplinkWorkerArgs};
use crate::{instance, spool};

pub fn run(args: &UplinkWorkerArgs) -> Result<()> {
    instance::die_with_supervisor()?;
    let _consumer_lock =
        instance::lock_exclusive(&args.state_dir.join("uplink.lock"), "uplink worker")?;
    let cfg = instance::read_config(&args.state_dir)?;
    let budget = spool::open_budget(&args.state_dir)?;
    let opts = spool::options(&cfg, args.journal_sync == JournalSync::Always);
    let spool_dir = &cfg.settings.spool_dir;
    let mut sources: Vec<Box<dyn BatchSource>> = Vec::new();
    let rings = instance::all_rings(&args.state_dir)?;
    let mut keys: Vec<String> = rings.iter().filter_map(|r| spool::key_of_ring(r)).collect();
    for key in spool::keys_on_disk(spool_dir) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for key in keys {
        let ring = rings
            .iter()
            .find(|r| spool::key_of_ring(r).as_deref() == Some(key.as_str()));
        sources.push(Box::new(intake_queue(
            &key, ring, spool_dir, &budget, &opts,
        )));
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
    let uplink_counters = counters.clone();
    crate::worker_runtime::runtime("uplink")?.block_on(async move {
        let stop_rx = crate::worker_runtime::stop_on_sigterm()?;
        let wake: Arc<dyn Wakeup> = Arc::new(DoorbellWakeup(doorbell));
        tokio::spawn(crate::uplink_report::report_periodically(
            uplink_counters.clone(),
            Duration::from_secs(10),
        ));
        Uplink::run(uplink_cfg, sources, wake, uplink_counters, stop_rx)
            .await
            .map_err(anyhow::Error::from)
    })?;
    crate::uplink_report::report_totals(&counters);
    info!("uplink worker stopped");
    Ok(())
}

/// An intake's queue as the uplink's source: what was saved at the last stop, then the
/// ring, then the journal (see `queue::intake_queue` for why that order is the intake's).
fn intake_queue(
    key: &str,
    ring: Option<&PathBuf>,
    spool_dir: &Path,
    budget: &DiskBudget,
    opts: &JournalOptions,
) -> IntakeQueue {
    let mut tiers: Vec<Box<dyn Tier>> = Vec::new();
    let saved = spool::saved_dir(spool_dir, key);
    if saved.is_dir() {
        tiers.push(Box::new(JournalTier::new(&saved, "saved", budget, opts)));
    }
    if let Some(ring) = ring {
        // A ring that cannot be attached is left as it is (its events stay in shared memory)
        // rather than stopping every other intake's delivery.
        match RingConsumer::attach(ring) {
            Ok(consumer) => tiers.push(Box::new(RingTier::new(consumer))),
            Err(e) => {
                error!(ring = %ring.display(), error = %e, "cannot attach the ring; skipping it")
            }
        }
    }
    let journal = spool::journal_dir(spool_dir, key);
    tiers.push(Box::new(JournalTier::new(
        &journal, "journal", budget, opts,
    )));
    IntakeQueue::new(key, tiers)
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
