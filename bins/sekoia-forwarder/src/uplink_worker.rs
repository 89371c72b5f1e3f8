//! The uplink worker: every ring of the instance → the TLS connection pool → the destination.
//!
//! It adapts the library's rings (`queue`) to the uplink's `BatchSource`, the doorbell to its
//! `Wakeup`, and runs until SIGTERM, when the uplink flushes what the rings still hold (bounded
//! by its drain timeout). Rings of intakes no longer configured are drained too.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sekoia_shared::queue::{Doorbell, RingConsumer};
use sekoia_shared::uplink::{BatchSource, ReadSpan, Uplink, UplinkConfig, UplinkCounters, Wakeup};
use tracing::{info, warn};

use crate::cli::UplinkWorkerArgs;
use crate::instance;

pub fn run(args: &UplinkWorkerArgs) -> Result<()> {
    instance::die_with_supervisor()?;
    let _consumer_lock =
        instance::lock_exclusive(&args.state_dir.join("uplink.lock"), "uplink worker")?;
    let cfg = instance::read_config(&args.state_dir)?;
    let mut sources: Vec<Box<dyn BatchSource>> = Vec::new();
    for path in instance::all_rings(&args.state_dir)? {
        sources.push(Box::new(RingSource::attach(&path)?));
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

/// An intake's ring seen as a queue the uplink drains.
struct RingSource {
    name: String,
    ring: RingConsumer,
}

impl RingSource {
    fn attach(path: &Path) -> Result<Self> {
        let ring = RingConsumer::attach(path)
            .with_context(|| format!("cannot attach ring {}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self { name, ring })
    }
}

impl BatchSource for RingSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn committed(&self) -> u64 {
        self.ring.committed()
    }

    fn read(
        &mut self,
        from: u64,
        until: Option<u64>,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<ReadSpan>> {
        let span = self
            .ring
            .read(from, until, max_bytes, out)
            .map_err(io::Error::other)?;
        Ok(span.map(|s| {
            if s.corrupt_skipped > 0 {
                warn!(ring = %self.name, skipped = s.corrupt_skipped, "skipped corrupt records");
            }
            ReadSpan {
                start: s.start,
                end: s.end,
                records: s.records,
                bytes: s.bytes,
            }
        }))
    }

    fn commit(&mut self, pos: u64) {
        self.ring.commit(pos);
    }
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
