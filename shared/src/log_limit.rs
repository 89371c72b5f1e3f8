//! One rule for conditions that repeat (disk full, a checkpoint that cannot be written, a
//! destination refusing, refused connections): log once when it starts, then at most one
//! summary with a count per interval, then once when it ends. A flood of identical warnings
//! hides the line that matters and can itself fill the disk the spool shares.
//!
//! [`Repeating`] only decides *what* to log; the caller writes the line, with its own fields,
//! from the [`Report`] it gets back. It is not synchronised: a caller shared between tasks
//! keeps it behind a `Mutex` (a few nanoseconds, and only on the failure path).

use std::time::{Duration, Instant};

/// Default interval between two summaries of one condition.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// What the caller should log for this occurrence or end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The first occurrence: log it in full.
    Started,
    /// A summary: `count` occurrences since the previous line, `total` since the start.
    Ongoing {
        count: u64,
        total: u64,
        lasted: Duration,
    },
    /// The condition cleared after `total` occurrences over `lasted`.
    Ended { total: u64, lasted: Duration },
}

/// The state of one repeating condition. See the module doc for the rule.
#[derive(Debug)]
pub struct Repeating {
    every: Duration,
    active: Option<Active>,
}

#[derive(Debug)]
struct Active {
    since: Instant,
    next_line: Instant,
    unreported: u64,
    total: u64,
}

impl Default for Repeating {
    fn default() -> Self {
        Self::new(SUMMARY_EVERY)
    }
}

impl Repeating {
    /// A condition summarised at most once per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            active: None,
        }
    }

    /// Whether the condition is in force (occurred and not cleared since).
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Records one occurrence at `now`; `Some` says a line is due.
    pub fn occurred(&mut self, now: Instant) -> Option<Report> {
        let Some(active) = self.active.as_mut() else {
            self.active = Some(Active {
                since: now,
                next_line: now + self.every,
                unreported: 0,
                total: 1,
            });
            return Some(Report::Started);
        };
        active.total += 1;
        active.unreported += 1;
        if now < active.next_line {
            return None;
        }
        active.next_line = now + self.every;
        Some(Report::Ongoing {
            count: std::mem::take(&mut active.unreported),
            total: active.total,
            lasted: now.saturating_duration_since(active.since),
        })
    }

    /// The condition cleared at `now`; `Some` (an end line) only if it had started.
    pub fn cleared(&mut self, now: Instant) -> Option<Report> {
        let active = self.active.take()?;
        Some(Report::Ended {
            total: active.total,
            lasted: now.saturating_duration_since(active.since),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_start_then_one_summary_per_interval_then_the_end() {
        let t0 = Instant::now();
        let mut cond = Repeating::new(Duration::from_secs(10));
        assert_eq!(cond.occurred(t0), Some(Report::Started));
        let mut lines = 0;
        // One occurrence every 100 ms for 30 s: the start, then 3 summaries at most.
        for i in 1..300u64 {
            if cond.occurred(t0 + Duration::from_millis(100 * i)).is_some() {
                lines += 1;
            }
        }
        assert!(lines <= 3, "{lines} summaries in 30 s");
        assert!(lines >= 2, "{lines} summaries in 30 s");
        let end = cond.cleared(t0 + Duration::from_secs(30));
        assert_eq!(
            end,
            Some(Report::Ended {
                total: 300,
                lasted: Duration::from_secs(30)
            })
        );
        assert!(!cond.is_active());
        assert_eq!(cond.cleared(t0 + Duration::from_secs(31)), None);
    }

    #[test]
    fn a_summary_counts_what_it_did_not_log() {
        let t0 = Instant::now();
        let mut cond = Repeating::new(Duration::from_secs(10));
        cond.occurred(t0);
        assert_eq!(cond.occurred(t0 + Duration::from_secs(1)), None);
        assert_eq!(cond.occurred(t0 + Duration::from_secs(2)), None);
        assert_eq!(
            cond.occurred(t0 + Duration::from_secs(10)),
            Some(Report::Ongoing {
                count: 3,
                total: 4,
                lasted: Duration::from_secs(10)
            })
        );
    }

    #[test]
    fn a_condition_that_returns_starts_again() {
        let t0 = Instant::now();
        let mut cond = Repeating::default();
        cond.occurred(t0);
        cond.cleared(t0 + Duration::from_secs(1));
        assert_eq!(
            cond.occurred(t0 + Duration::from_secs(2)),
            Some(Report::Started)
        );
    }
}
