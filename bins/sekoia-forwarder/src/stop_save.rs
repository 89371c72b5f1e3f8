//! At an orderly stop, whatever the uplink could not send from the rings is written to the
//! spool (`saved-<proto>-<port>/`), so it survives a reboot or a new container, where
//! `/dev/shm` does not. The next start drains it before the ring and the journal: it is the
//! oldest part of the intake's queue.
//!
//! Order of operations, so no crash loses anything: records are appended and fsync'ed
//! first, and only then freed from the ring (a crash in between gives duplicates, never a
//! loss). If `DISK_SPACE` is exhausted, what does not fit stays in the ring (shared memory)
//! and is said in the log.

use std::path::Path;

use anyhow::{Context, Result};
use sekoia_shared::config::ForwarderConfig;
use sekoia_shared::queue::{JournalWriter, RecordMeta, RingConsumer};
use tracing::{error, info};

use crate::{instance, spool};

/// Saves every ring's undelivered records. Call only once every worker has exited.
pub fn save_rings(cfg: &ForwarderConfig, state_dir: &Path, sync_always: bool) -> Result<()> {
    for ring in instance::all_rings(state_dir)? {
        let Some(key) = spool::key_of_ring(&ring) else {
            continue;
        };
        if let Err(e) = save_ring(cfg, state_dir, &ring, &key, sync_always) {
            error!(ring = %ring.display(), error = %format!("{e:#}"),
                "cannot save the ring to disk; its events stay in shared memory");
        }
    }
    Ok(())
}

fn save_ring(
    cfg: &ForwarderConfig,
    state_dir: &Path,
    ring: &Path,
    key: &str,
    sync_always: bool,
) -> Result<()> {
    let mut consumer = RingConsumer::attach(ring)
        .with_context(|| format!("cannot attach ring {}", ring.display()))?;
    let (mut pos, head) = (consumer.committed(), consumer.head());
    if pos == head {
        return Ok(());
    }
    let intake_id = cfg
        .intakes
        .iter()
        .find(|i| instance::ring_path(state_dir, i) == ring)
        .map_or(0, |i| i.id);
    let dir = spool::saved_dir(&cfg.settings.spool_dir, key);
    let mut writer = JournalWriter::open(
        &dir,
        intake_id,
        spool::open_budget(state_dir)?,
        spool::options(cfg, sync_always),
    )
    .with_context(|| format!("cannot open {}", dir.display()))?;
    let now_us = chrono::Utc::now().timestamp_micros();
    let meta = RecordMeta {
        intake_id,
        recv_time_us: now_us,
        flags: 0,
    };
    let (mut events, mut bytes) = (0u64, 0u64);
    let mut payload = Vec::new();
    let mut full = false;
    // One record per read, so the ring is freed exactly up to what was written.
    loop {
        payload.clear();
        let Some(span) = consumer
            .read(pos, None, 1, &mut payload)
            .context("cannot read the ring")?
        else {
            break;
        };
        if span.records > 0 && !writer.append(&meta, &payload)? {
            full = true;
            break;
        }
        pos = span.end;
        events += u64::from(span.records);
        bytes += span.bytes;
    }
    writer.flush()?;
    writer.sync()?;
    writer.close()?;
    consumer.commit(pos);
    info!(ring = %ring.display(), events, bytes, to = %dir.display(), "saved undelivered events to disk");
    if full {
        error!(ring = %ring.display(), left_bytes = head - pos,
            "DISK_SPACE is exhausted: the rest stays in shared memory (lost on reboot)");
    }
    Ok(())
}
