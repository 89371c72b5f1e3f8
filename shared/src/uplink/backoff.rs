//! Reconnect delays: exponential backoff with full jitter, capped, reset once a connection has
//! stayed healthy for a while.
//!
//! Attempt `n` (0-based) waits a uniformly random time in `[0, min(max, initial * 2^n)]`
//! ("full jitter"), so a pool of connections, or many forwarders restarted together, do not
//! reconnect in lockstep. A session that lasted at least `healthy_after` starts over at attempt
//! 0; a session that broke sooner keeps growing the delay (a server that accepts and then drops
//! us is not hammered).

use std::time::Duration;

use rand::Rng;

/// Backoff state of one connection.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    healthy_after: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, healthy_after: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            healthy_after,
            attempt: 0,
        }
    }

    /// Upper bound of the next delay (before jitter).
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay to wait before the next attempt; each call grows the next ceiling.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
    }

    /// A session that was up for `lasted` ended: reset if it had been healthy long enough.
    pub(crate) fn session_ended(&mut self, lasted: Duration) {
        if lasted >= self.healthy_after {
            self.attempt = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_grow_exponentially_and_stay_under_the_ceiling() {
        let mut b = Backoff::new(ms(100), ms(1_000), ms(5_000));
        let ceilings: Vec<_> = (0..6)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay();
                assert!(d <= c, "{d:?} > {c:?}");
                c
            })
            .collect();
        assert_eq!(
            ceilings,
            [ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]
        );
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(ms(1_000), ms(1_000), ms(5_000));
        let delays: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10, "delays are not jittered: {delays:?}");
    }

    #[test]
    fn healthy_session_resets_and_short_session_does_not() {
        let mut b = Backoff::new(ms(100), ms(10_000), ms(5_000));
        for _ in 0..4 {
            b.next_delay();
        }
        b.session_ended(ms(10));
        assert_eq!(b.ceiling(), ms(1_600));
        b.session_ended(ms(5_000));
        assert_eq!(b.ceiling(), ms(100));
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff::new(ms(500), Duration::from_secs(30), ms(5_000));
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}
