//! At an orderly stop, once every worker has exited: each ring's undelivered events go to
//! its intake's saved tier on disk (`queue::intake::save_ring` says how and why that order
//! loses nothing). Rings of intakes no longer configured are saved too.

use std::path::Path;

use anyhow::Result;
use sekoia_shared::config::ForwarderConfig;
use sekoia_shared::queue::intake;
use sekoia_shared::queue::layout::{InstanceDir, QueueKey, SpoolDir};
use tracing::{error, info};

use crate::cli::JournalSync;
use crate::routes::UplinkPlan;

/// Saves every ring's undelivered records. Call only once every worker has exited.
pub fn save_rings(
    cfg: &ForwarderConfig,
    routes: &[UplinkPlan],
    state: &InstanceDir,
    sync: JournalSync,
) -> Result<()> {
    let spool = SpoolDir::new(&cfg.settings.spool_dir);
    for key in state.ring_keys()? {
        // Charged to the destination the queue goes to (budgets.rs).
        let destination = routes
            .iter()
            .find(|r| r.queues.contains(&key))
            .map_or(&cfg.settings.destination, |r| &r.destination);
        let budget = crate::budgets::open(state, destination)?;
        let intake_id = match key {
            QueueKey::STATS => crate::stats_task::STATS_INTAKE_ID,
            _ => cfg
                .intakes
                .iter()
                .find(|i| QueueKey::of(i) == key)
                .map_or(0, |i| i.id),
        };
        let (ring, dir) = (state.ring_path(key), spool.saved_dir(key));
        let opts = crate::journal_options(cfg, sync, &budget);
        match intake::save_ring(&ring, &dir, intake_id, budget.clone(), opts) {
            Ok(saved) => log_saved(&ring, &dir, &saved),
            Err(e) => error!(ring = %ring.display(), error = %e,
                "cannot save the ring to disk: its events stay in shared memory, where the next start sends them first (a reboot loses them)"),
        }
    }
    Ok(())
}

/// Says exactly what was saved and what stayed in shared memory, and why.
fn log_saved(ring: &Path, dir: &Path, saved: &intake::Saved) {
    if saved.events > 0 {
        info!(ring = %ring.display(), events = saved.events, bytes = saved.bytes,
            to = %dir.display(), "saved undelivered events to disk");
    }
    if saved.left_bytes > 0 {
        let reason = saved.left_because.as_deref().unwrap_or("unknown");
        error!(ring = %ring.display(), left_bytes = saved.left_bytes, saved_events = saved.events, %reason,
            "not every undelivered event could be saved to disk: the rest stays in shared memory, where the next start sends it first (a reboot loses it)");
    }
}
