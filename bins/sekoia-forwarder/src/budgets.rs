//! `DISK_SPACE` shared between destinations, so that one dead region cannot starve the
//! others' disk.
//!
//! Each destination has its own budget file (`disk-<id>.budget`, `queue::journal::budget`)
//! bounding the journals of the queues it drains, and `DISK_SPACE` is divided equally among
//! the destinations in use: with one destination (every reference configuration) the whole
//! `DISK_SPACE` is its share, as before. A destination that is down fills its share, then its
//! intakes hold their TCP senders back (UDP drops are counted), while the other destinations'
//! intakes still have theirs. Each share is also bounded by what the spool's file system can
//! hold, measured per budget; the shares together may then promise more than the disk has,
//! and a full disk is handled as `journal.md` describes.
//!
//! A reload that changes the number of destinations sets every share again; a queue moved
//! to another destination takes its journal's charge along.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sekoia_shared::config::Destination;
use sekoia_shared::queue::layout::{InstanceDir, QueueKey, SpoolDir};
use sekoia_shared::queue::{usage_of, DiskBudget, DiskFigures};
use tracing::{info, warn};

use crate::routes::UplinkPlan;

/// The budget of every destination in use.
pub struct Budgets {
    disk_space: u64,
    spool: SpoolDir,
    each: Vec<(Destination, DiskBudget)>,
}

/// One destination's share of `disk_space` among `destinations`.
pub fn share(disk_space: u64, destinations: usize) -> u64 {
    disk_space / (destinations.max(1) as u64)
}

/// The budget a worker queues against: its destination's.
pub fn open(state: &InstanceDir, destination: &Destination) -> Result<DiskBudget> {
    let path = state.budget_path(&destination.id());
    DiskBudget::open(&path).with_context(|| format!("cannot open the disk budget of {destination}"))
}

impl Budgets {
    /// Creates each destination's budget, charged with what its queues hold on disk now.
    pub fn create(
        state: &InstanceDir,
        spool: SpoolDir,
        disk_space: u64,
        routes: &[UplinkPlan],
    ) -> Result<Self> {
        let mut budgets = Budgets {
            disk_space,
            spool,
            each: Vec::new(),
        };
        for route in routes {
            budgets.add(state, route, share(disk_space, routes.len()))?;
        }
        Ok(budgets)
    }

    fn add(&mut self, state: &InstanceDir, route: &UplinkPlan, limit: u64) -> Result<()> {
        let used = self.usage(&route.queues)?;
        let path = state.budget_path(&route.destination.id());
        let budget = DiskBudget::create(&path, limit, used)
            .with_context(|| format!("cannot create the disk budget of {}", route.destination))?;
        if used > 0 {
            info!(destination = %route.destination, bytes = used,
                "found events queued on disk for this destination; they are sent first");
        }
        crate::supervisor::log_disk_budget(&budget, self.spool.path());
        self.each.push((route.destination.clone(), budget));
        Ok(())
    }

    /// Bytes the journals of `queues` are charged for now.
    fn usage(&self, queues: &[QueueKey]) -> Result<u64> {
        let dirs: Vec<PathBuf> = queues
            .iter()
            .flat_map(|k| [self.spool.journal_dir(*k), self.spool.saved_dir(*k)])
            .collect();
        usage_of(dirs.iter().map(PathBuf::as_path)).with_context(|| {
            format!(
                "cannot measure the spool directory {}",
                self.spool.path().display()
            )
        })
    }

    /// After a reload: a budget for each new destination, every share set again, and the
    /// charge of each moved queue carried from its old destination to its new one.
    pub fn reshape(&mut self, state: &InstanceDir, old: &[UplinkPlan], new: &[UplinkPlan]) {
        let limit = share(self.disk_space, new.len());
        for route in new {
            let known = self
                .each
                .iter()
                .any(|(d, _)| d.same_place(&route.destination));
            if !known {
                let mut fresh = route.clone();
                // Queues moving in bring their charge below, not here.
                fresh
                    .queues
                    .retain(|k| !old.iter().any(|p| p.queues.contains(k)));
                if let Err(e) = self.add(state, &fresh, limit) {
                    warn!(error = %format!("{e:#}"), "reload: cannot create a disk budget; the destination's intakes will retry");
                }
            }
        }
        for (destination, budget) in &self.each {
            budget.set_limit(
                if new.iter().any(|r| r.destination.same_place(destination)) {
                    limit
                } else {
                    0
                },
            );
        }
        for (key, from, to) in moves(old, new) {
            let moved = self.usage(&[key]).unwrap_or(0);
            if let (Some(from), Some(to)) = (self.of(&from), self.of(&to)) {
                from.release(moved);
                to.force_reserve(moved);
            }
        }
    }

    pub fn of(&self, destination: &Destination) -> Option<&DiskBudget> {
        self.each
            .iter()
            .find(|(d, _)| d.same_place(destination))
            .map(|(_, b)| b)
    }

    /// The figures of every budget together, `configured` being `DISK_SPACE`.
    pub fn figures(&self) -> DiskFigures {
        let mut total = DiskFigures {
            configured: self.disk_space,
            in_force: 0,
            used: 0,
        };
        for (_, budget) in &self.each {
            let f = budget.figures();
            total.in_force = total.in_force.saturating_add(f.in_force);
            total.used = total.used.saturating_add(f.used);
        }
        total
    }
}

/// Queues whose destination changed: (queue, from, to).
fn moves(old: &[UplinkPlan], new: &[UplinkPlan]) -> Vec<(QueueKey, Destination, Destination)> {
    let mut out = Vec::new();
    for before in old {
        for key in &before.queues {
            let after = new.iter().find(|p| p.queues.contains(key));
            if let Some(after) = after.filter(|a| !a.destination.same_place(&before.destination)) {
                out.push((*key, before.destination.clone(), after.destination.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_space_is_shared_equally_and_one_destination_has_it_all() {
        assert_eq!(share(30 << 30, 1), 30 << 30);
        assert_eq!(share(30 << 30, 3), 10 << 30);
        assert_eq!(share(100, 0), 100);
    }

    #[test]
    fn a_queue_that_changed_destination_is_a_move() {
        let d = |host: &str| Destination {
            host: host.to_string(),
            port: 10514,
            output: Default::default(),
        };
        let k = |s: &str| s.parse::<QueueKey>().unwrap();
        let plan = |host: &str, keys: &[&str]| UplinkPlan {
            destination: d(host),
            queues: keys.iter().map(|s| k(s)).collect(),
        };
        let old = [plan("a", &["tcp-1", "tcp-2"])];
        let new = [plan("A", &["tcp-1"]), plan("b", &["tcp-2"])];
        let moved = moves(&old, &new);
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0].0, k("tcp-2"));
        assert_eq!(moved[0].2.host, "b");
    }
}
