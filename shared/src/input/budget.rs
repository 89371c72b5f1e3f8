//! A cap on the read-buffer memory of all connections of one listener.
//!
//! Each connection keeps a small read buffer for free (see `tcp::BASE_WINDOW`); everything it
//! allocates beyond that — larger read windows, a message of up to `MAX_MESSAGE` bytes being
//! assembled — is leased from one [`ReadBudget`]. Growth that is only an optimisation (a
//! larger read window) uses [`BudgetLease::try_grow_to`] and falls back to a small read when
//! the budget is tight; growth that progress needs (the buffer is full of an unfinished
//! message) uses [`BudgetLease::grow_to`] and waits — the connection stops reading, so TCP
//! slows its sender — until other connections give memory back. The cap bounds what
//! thousands of slow or hostile clients can pin in RAM.
//!
//! Overdraft: connections that each hold part of a large message and all wait for more would
//! deadlock. So when a request does not fit, ONE lease at a time may overdraw the cap (its
//! connection's buffer is itself bounded by `BUFFER_LIMIT`); it keeps the overdraft until the
//! budget is within its cap again (checked whenever it gives memory back) or it is dropped. Worst case memory is
//! therefore `cap + BUFFER_LIMIT`, and some connection can always finish its message, unless
//! the overdraft holder's own sender stalls mid-message while every other budget holder waits.
//!
//! Invariant: `used` equals the sum of all live [`BudgetLease`]s; at most one lease holds the
//! overdraft flag.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Default cap on leased read-buffer bytes per listener: 256 MiB.
pub const DEFAULT_READ_BUDGET: usize = 256 << 20;

/// The shared pool of read-buffer bytes.
#[derive(Debug)]
pub struct ReadBudget {
    cap: usize,
    used: AtomicUsize,
    /// Some lease is over the cap (see the module doc).
    overdrawn: AtomicBool,
    /// Woken whenever bytes or the overdraft are given back.
    freed: Notify,
}

impl ReadBudget {
    pub fn new(cap: usize) -> Arc<Self> {
        let (used, overdrawn) = (AtomicUsize::new(0), AtomicBool::new(false));
        Arc::new(Self {
            cap,
            used,
            overdrawn,
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
    fn try_take_within_cap(&self, n: usize) -> bool {
        // Relaxed throughout: no data is published through these words; the
        // compare-exchanges only keep the sum exact and the overdraft unique.
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used.saturating_add(n) > self.cap {
                return false;
            }
            let next = used + n;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Takes `n` bytes if they fit, else through the overdraft (sets `overdraft`); a lease
    /// that already holds the overdraft is always served.
    fn try_take(&self, n: usize, overdraft: &mut bool) -> bool {
        if self.try_take_within_cap(n) {
            return true;
        }
        if !*overdraft {
            let free = (self.overdrawn).compare_exchange(
                false,
                true,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if free.is_err() {
                return false;
            }
            *overdraft = true;
        }
        self.used.fetch_add(n, Ordering::Relaxed);
        true
    }

    async fn take(&self, n: usize, overdraft: &mut bool) {
        loop {
            if self.try_take(n, overdraft) {
                return;
            }
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Register before re-checking, so a release between the check and the await
            // is not missed.
            freed.as_mut().enable();
            if self.try_take(n, overdraft) {
                return;
            }
            freed.await;
        }
    }

    /// Gives back `n` bytes; ends `overdraft` once the budget is within its cap again.
    fn give(&self, n: usize, overdraft: &mut bool) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
        }
        let ended = *overdraft && self.in_use() <= self.cap;
        if ended {
            self.end_overdraft(overdraft);
        } else if n > 0 {
            self.freed.notify_waiters();
        }
    }

    fn end_overdraft(&self, overdraft: &mut bool) {
        *overdraft = false;
        self.overdrawn.store(false, Ordering::Relaxed);
        self.freed.notify_waiters();
    }
}

/// The bytes one connection holds from a [`ReadBudget`]; given back on drop.
#[derive(Debug)]
pub struct BudgetLease {
    budget: Arc<ReadBudget>,
    held: usize,
    /// This lease holds the budget's overdraft.
    overdraft: bool,
}

impl BudgetLease {
    pub fn new(budget: Arc<ReadBudget>) -> Self {
        Self {
            budget,
            held: 0,
            overdraft: false,
        }
    }

    pub fn held(&self) -> usize {
        self.held
    }

    /// Holds at least `n` bytes, waiting for other leases to shrink if needed.
    pub async fn grow_to(&mut self, n: usize) {
        if n > self.held {
            self.budget.take(n - self.held, &mut self.overdraft).await;
            self.held = n;
        }
    }

    /// Holds at least `n` bytes if that fits under the cap now (never waits or overdraws).
    pub fn try_grow_to(&mut self, n: usize) -> bool {
        if n <= self.held {
            return true;
        }
        let granted = self.budget.try_take_within_cap(n - self.held);
        if granted {
            self.held = n;
        }
        granted
    }

    /// Holds at most `n` bytes, giving the rest back; gives back the overdraft, if held,
    /// once the budget is within its cap again.
    pub fn shrink_to(&mut self, n: usize) {
        let surplus = self.held.saturating_sub(n);
        self.budget.give(surplus, &mut self.overdraft);
        self.held -= surplus;
    }
}

impl Drop for BudgetLease {
    fn drop(&mut self) {
        self.budget.give(self.held, &mut self.overdraft);
        if self.overdraft {
            self.budget.end_overdraft(&mut self.overdraft);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn lease_within_cap_is_granted_at_once_and_returned_on_drop() {
        let budget = ReadBudget::new(1000);
        let mut a = BudgetLease::new(budget.clone());
        a.grow_to(600).await;
        let mut b = BudgetLease::new(budget.clone());
        b.grow_to(400).await;
        assert_eq!(budget.in_use(), 1000);
        drop(a);
        b.shrink_to(100);
        assert_eq!(budget.in_use(), 100);
    }

    #[tokio::test]
    async fn connection_without_budget_waits_until_another_gives_back() {
        let budget = ReadBudget::new(1000);
        let mut big = BudgetLease::new(budget.clone());
        big.grow_to(900).await;
        let mut hog = BudgetLease::new(budget.clone());
        hog.grow_to(200).await; // takes the overdraft
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut lease = BudgetLease::new(budget);
                lease.grow_to(500).await;
                lease.held()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "must wait while the budget is exhausted"
        );
        big.shrink_to(200);
        let held = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(held, Ok(Ok(500))));
        assert_eq!(budget.in_use(), 200 + 200);
    }

    #[tokio::test]
    async fn one_lease_may_overdraw_so_large_messages_cannot_deadlock() {
        let budget = ReadBudget::new(100);
        let mut a = BudgetLease::new(budget.clone());
        a.grow_to(80).await;
        let mut b = BudgetLease::new(budget.clone());
        b.grow_to(50).await;
        assert_eq!(budget.in_use(), 130, "b overdraws the cap");
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut c = BudgetLease::new(budget);
                c.grow_to(50).await;
                c.held()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "only one overdraft at a time");
        b.grow_to(5000).await;
        assert_eq!(budget.in_use(), 5080, "the overdraft holder keeps growing");
        b.shrink_to(30);
        assert!(b.overdraft, "still over the cap: 110 in use");
        b.shrink_to(0);
        let held = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(held, Ok(Ok(50))));
        assert_eq!(budget.in_use(), 80);
    }

    #[tokio::test]
    async fn optional_growth_never_waits_nor_overdraws() {
        let budget = ReadBudget::new(100);
        let mut a = BudgetLease::new(budget.clone());
        assert!(a.try_grow_to(90));
        let mut b = BudgetLease::new(budget.clone());
        assert!(!b.try_grow_to(20));
        assert!(b.try_grow_to(10));
        assert_eq!(budget.in_use(), 100);
        assert!(!b.overdraft);
    }

    #[tokio::test]
    async fn overdraft_ends_when_others_shrink_below_the_cap() {
        let budget = ReadBudget::new(100);
        let mut a = BudgetLease::new(budget.clone());
        a.grow_to(90).await;
        let mut b = BudgetLease::new(budget.clone());
        b.grow_to(30).await;
        assert!(b.overdraft);
        a.shrink_to(0);
        b.shrink_to(30);
        assert!(
            !b.overdraft,
            "within the cap again: the overdraft is free for others"
        );
        assert_eq!(budget.in_use(), 30);
    }
}
