//! The fair read budget: a cap on the read-buffer memory of all connections of one listener
//! that an honest sender gets through whatever the others do.
//!
//! The rule (docs/hostile-networks.md states it for operators):
//! - every connection may always hold [`FREE_PER_CONNECTION`] (16 KiB) of buffer without
//!   asking: it can always read new data while its unfinished frame is smaller than that, so
//!   a sender of ordinary messages never waits for anyone;
//! - only growth beyond that (a frame larger than 16 KiB being assembled, or a larger read
//!   window) is leased from the shared [`ReadBudget`]. Optional growth (a larger read window)
//!   uses [`BudgetLease::try_grow_to`] and never waits; growth that progress needs uses
//!   [`BudgetLease::grow_to`], which is granted at once while the total stays within the cap;
//! - when the cap is reached, the request waits (its connection stops reading, so TCP slows
//!   its sender) for memory given back. If none comes within the shed grace ([`SHED_GRACE`],
//!   1 s), the *worst* holder is shed: the lease holding the most bytes, the oldest on a tie
//!   (the one whose large frame started first). Its connection closes and its unfinished
//!   frame is discarded (the connection counts it). A lease is shed only by a request from a
//!   lease that holds less than it, so the worst holder itself only waits.
//!
//! Worst case: leases never pass the cap, so a listener's read buffers hold at most
//! `cap + connections × FREE_PER_CONNECTION`. Progress: a waiting request either gets memory
//! given back, or sheds a larger holder; the largest holder waits only for the others to
//! finish (or be shed by the partial-frame timeout).
//!
//! Invariant: `used` equals the sum of all live [`BudgetLease`]s; a lease is registered in
//! `holders` exactly while it holds more than zero bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Default cap on leased read-buffer bytes per listener: 256 MiB.
pub const DEFAULT_READ_BUDGET: usize = 256 << 20;
/// Buffer every connection may hold without a lease.
pub const FREE_PER_CONNECTION: usize = 16 << 10;
/// How long a request waits for memory before it sheds the worst holder.
pub const SHED_GRACE: Duration = Duration::from_secs(1);

/// The shared pool of read-buffer bytes beyond each connection's free allowance.
#[derive(Debug)]
pub struct ReadBudget {
    cap: usize,
    grace: Duration,
    used: AtomicUsize,
    holders: Mutex<Holders>,
    /// Woken whenever bytes are given back.
    freed: Notify,
}

#[derive(Debug, Default)]
struct Holders {
    next_id: u64,
    live: HashMap<u64, Arc<Holder>>,
}

/// What the budget knows of one lease that holds bytes.
#[derive(Debug)]
struct Holder {
    held: AtomicUsize,
    /// When the lease went from zero to holding bytes (its large frame started).
    since: Instant,
    shed: AtomicBool,
    shed_signal: Notify,
}

impl Holder {
    /// Ordering key: more bytes is worse, then older is worse.
    fn worse_than(&self, held: usize, since: Instant) -> bool {
        let mine = self.held.load(Ordering::Relaxed);
        mine > held || (mine == held && self.since < since)
    }
}

impl ReadBudget {
    pub fn new(cap: usize) -> Arc<Self> {
        Self::with_grace(cap, SHED_GRACE)
    }

    /// A budget whose waiting requests shed the worst holder after `grace`.
    pub fn with_grace(cap: usize, grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            cap,
            grace,
            used: AtomicUsize::new(0),
            holders: Mutex::new(Holders::default()),
            freed: Notify::new(),
        })
    }

    /// Bytes leased now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Takes `n` bytes if they fit under the cap.
    fn try_take(&self, n: usize) -> bool {
        // Relaxed throughout: no data is published through this word; the compare-exchange
        // only keeps the sum exact and under the cap.
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used.saturating_add(n) > self.cap {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    fn give(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
            self.freed.notify_waiters();
        }
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, Holders> {
        // The map stays consistent whatever panicked while it was held.
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self) -> (u64, Arc<Holder>) {
        let holder = Arc::new(Holder {
            held: AtomicUsize::new(0),
            since: Instant::now(),
            shed: AtomicBool::new(false),
            shed_signal: Notify::new(),
        });
        let mut holders = self.holders();
        holders.next_id += 1;
        let id = holders.next_id;
        holders.live.insert(id, holder.clone());
        (id, holder)
    }

    fn unregister(&self, id: u64) {
        self.holders().live.remove(&id);
    }

    /// Sheds the worst holder if it is worse than a lease holding `held` since `since`
    /// (`me` is excluded). Returns whether one was shed.
    fn shed_worse_than(&self, me: Option<u64>, held: usize, since: Instant) -> bool {
        let holders = self.holders();
        let worst = holders
            .live
            .iter()
            .filter(|(id, _)| Some(**id) != me)
            .map(|(_, h)| h)
            .filter(|h| h.worse_than(held, since))
            .max_by(|a, b| {
                let (ha, hb) = (
                    a.held.load(Ordering::Relaxed),
                    b.held.load(Ordering::Relaxed),
                );
                ha.cmp(&hb).then(b.since.cmp(&a.since))
            });
        let Some(worst) = worst else { return false };
        worst.shed.store(true, Ordering::Relaxed);
        // notify_one keeps a permit, so a connection that is not waiting right now still
        // sees it at its next wait.
        worst.shed_signal.notify_one();
        true
    }
}

/// Why a lease could not grow: the budget shed it to make room for a smaller holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shed by the read budget: a smaller holder needed the memory")]
pub struct Shed;

/// The bytes one connection holds from a [`ReadBudget`] beyond its free allowance; given
/// back on drop.
#[derive(Debug)]
pub struct BudgetLease {
    budget: Arc<ReadBudget>,
    held: usize,
    /// Present while `held > 0`.
    entry: Option<(u64, Arc<Holder>)>,
}

impl BudgetLease {
    pub fn new(budget: Arc<ReadBudget>) -> Self {
        Self {
            budget,
            held: 0,
            entry: None,
        }
    }

    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether the budget shed this lease (its connection must close).
    pub fn is_shed(&self) -> bool {
        self.entry
            .as_ref()
            .is_some_and(|(_, h)| h.shed.load(Ordering::Relaxed))
    }

    /// Resolves when the budget sheds this lease; never while it holds nothing.
    pub async fn shed(&self) {
        match &self.entry {
            Some((_, holder)) => loop {
                if holder.shed.load(Ordering::Relaxed) {
                    return;
                }
                holder.shed_signal.notified().await;
            },
            None => std::future::pending().await,
        }
    }

    /// Holds at least `n` bytes; waits while the cap is reached, shedding a worse holder
    /// after the grace (see the module doc). Fails when this lease is shed meanwhile.
    pub async fn grow_to(&mut self, n: usize) -> Result<(), Shed> {
        let since = self
            .entry
            .as_ref()
            .map_or_else(Instant::now, |(_, h)| h.since);
        let mut shed_at = tokio::time::Instant::now() + self.budget.grace;
        loop {
            if self.is_shed() {
                return Err(Shed);
            }
            if self.try_grow_to(n) {
                return Ok(());
            }
            let budget = self.budget.clone();
            let freed = budget.freed.notified();
            tokio::pin!(freed);
            // Register before re-checking, so memory given back in between is not missed.
            freed.as_mut().enable();
            if self.try_grow_to(n) {
                return Ok(());
            }
            tokio::select! {
                _ = freed => {}
                _ = self.shed() => return Err(Shed),
                _ = tokio::time::sleep_until(shed_at) => {
                    let me = self.entry.as_ref().map(|(id, _)| *id);
                    budget.shed_worse_than(me, self.held, since);
                    shed_at = tokio::time::Instant::now() + budget.grace;
                }
            }
        }
    }

    /// Holds at least `n` bytes if that fits under the cap now (never waits nor sheds).
    pub fn try_grow_to(&mut self, n: usize) -> bool {
        if n <= self.held {
            return true;
        }
        if !self.budget.try_take(n - self.held) {
            return false;
        }
        self.set_held(n);
        true
    }

    /// Holds at most `n` bytes, giving the rest back.
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.held {
            let surplus = self.held - n;
            self.set_held(n);
            self.budget.give(surplus);
        }
    }

    fn set_held(&mut self, n: usize) {
        self.held = n;
        if n == 0 {
            if let Some((id, _)) = self.entry.take() {
                self.budget.unregister(id);
            }
            return;
        }
        let (_, holder) = self.entry.get_or_insert_with(|| self.budget.register());
        holder.held.store(n, Ordering::Relaxed);
    }
}

impl Drop for BudgetLease {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests;
