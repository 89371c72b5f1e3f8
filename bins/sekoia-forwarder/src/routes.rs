//! Which uplink worker drains which queue: one uplink per destination.
//!
//! Intakes are grouped by where their events go (their `region`/`endpoint`, else the global
//! one); two spellings of one place share one uplink. A queue whose intake is no longer
//! configured (its ring or journal still holds events) goes where its events were meant to
//! go: the supervisor records each intake's destination in the spool (`route-<key>.json`),
//! and such a queue follows its record, or the global destination when it has none (a
//! spool of a build before per-intake destinations). A queue is drained by exactly one
//! uplink: each holds the queue's consumer lock for its life (`InstanceDir::
//! consumer_lock_name`), so when a reload moves a queue, its new uplink waits until the old
//! one has stopped, and the queue's events go on in order.

use anyhow::{Context, Result};
use sekoia_shared::config::{Destination, ForwarderConfig};
use sekoia_shared::queue::layout::{InstanceDir, QueueKey, SpoolDir};
use sekoia_shared::queue::shared_file::{Create, PrivateDir};
use std::io::Read;

/// One uplink worker: a destination and the queues it drains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkPlan {
    pub destination: Destination,
    pub queues: Vec<QueueKey>,
}

/// The uplinks `cfg` needs, the default destination's first when it has queues.
pub fn plan(cfg: &ForwarderConfig, state: &InstanceDir) -> Vec<UplinkPlan> {
    let spool = SpoolDir::new(&cfg.settings.spool_dir);
    let mut plans: Vec<UplinkPlan> = Vec::new();
    let mut add = |destination: &Destination, key: QueueKey| match plans
        .iter_mut()
        .find(|p| p.destination.same_place(destination))
    {
        Some(plan) if !plan.queues.contains(&key) => plan.queues.push(key),
        Some(_) => {}
        None => plans.push(UplinkPlan {
            destination: destination.clone(),
            queues: vec![key],
        }),
    };
    for intake in &cfg.intakes {
        add(&intake.destination, QueueKey::of(intake));
    }
    if let Some(entry) = &cfg.stats {
        add(&entry.destination, QueueKey::STATS);
    }
    let mut leftovers = state.ring_keys().unwrap_or_default();
    leftovers.extend(spool.keys_on_disk());
    leftovers.sort();
    leftovers.dedup();
    for key in leftovers {
        let configured = cfg.intakes.iter().any(|i| QueueKey::of(i) == key)
            || (key == QueueKey::STATS && cfg.stats.is_some());
        if configured {
            continue;
        }
        let recorded = recorded_route(&spool, key);
        add(recorded.as_ref().unwrap_or(&cfg.settings.destination), key);
    }
    for plan in &mut plans {
        plan.queues.sort();
    }
    plans.sort_by_key(|p| !p.destination.same_place(&cfg.settings.destination));
    plans
}

/// Records where each configured intake's events go (`route-<key>.json` in the spool,
/// 0600, written atomically), for the day its intake is removed with events still queued.
pub fn record(cfg: &ForwarderConfig) -> Result<()> {
    let spool = PrivateDir::open(&cfg.settings.spool_dir)
        .context("cannot use the spool directory (SPOOL_DIR)")?;
    for intake in &cfg.intakes {
        let name = SpoolDir::route_name(QueueKey::of(intake));
        let json = serde_json::to_vec(&intake.destination)?;
        spool.write_atomically(&name, &json).with_context(|| {
            format!(
                "cannot record the destination of intake \"{}\"",
                intake.name
            )
        })?;
    }
    Ok(())
}

/// The destination recorded for `key`; None when there is none or it cannot be read (then
/// the default destination is used, and the reason logged).
fn recorded_route(spool: &SpoolDir, key: QueueKey) -> Option<Destination> {
    let name = SpoolDir::route_name(key);
    let read = || -> Result<Option<Destination>> {
        let dir = PrivateDir::open(spool.path())?;
        let mut file = match dir.file(&name, Create::No) {
            Ok(file) => file,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::new();
        file.by_ref().take(64 * 1024).read_to_end(&mut bytes)?;
        Ok(Some(serde_json::from_slice(&bytes)?))
    };
    read().unwrap_or_else(|e| {
        tracing::warn!(queue = %key, error = %format!("{e:#}"),
            "cannot read the queue's recorded destination; its events go to the global destination");
        None
    })
}

#[cfg(test)]
mod tests;
