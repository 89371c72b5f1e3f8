//! Who gets in, and the log of who was turned away.
//!
//! [`Admission::admit`] runs on every accepted TCP/TLS connection before a byte is read from
//! it (before the TLS handshake): a peer outside `allowed_sources`, a full intake
//! (`max_connections`) or a full source address (`max_connections_per_source`) is refused,
//! i.e. the socket is closed at once. An admitted connection holds an [`Admitted`] that frees
//! its place when dropped, however the connection ends.
//!
//! With `proxy_protocol` the peer at accept is a load balancer: `allowed_sources` and
//! `max_connections` still apply to it there, but the per-source limit applies to the real
//! sender, once its PROXY header named it ([`Admission::claim_source`]); counting it per
//! balancer would cap the whole intake at `max_connections_per_source`.
//!
//! [`Notices`] counts every refusal and every connection closed by a limit in
//! [`InputCounters`], and logs each kind through one [`Repeating`]: the first occurrence with
//! the peer, then at most one summary with a count every 10 s, then an end line once a
//! summary interval passed without one ([`Notices::tick`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::config::IntakeLimits;
use crate::log_limit::{Repeating, Report, SUMMARY_EVERY};

use super::{InputCounters, SourceFilter};

/// Something refused or closed because of a limit; each kind is counted and logged apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    ConnectionFromElsewhere,
    DatagramFromElsewhere,
    IntakeFull,
    SourceFull,
    PartialFrameTimeout,
    IdleTimeout,
    BudgetShed,
    ProxyHeaderRejected,
}

const KINDS: usize = 8;

impl Notice {
    fn index(self) -> usize {
        self as usize
    }

    fn counter(self, c: &InputCounters) -> &AtomicU64 {
        match self {
            Notice::ConnectionFromElsewhere | Notice::DatagramFromElsewhere => &c.refused_source,
            Notice::IntakeFull => &c.refused_intake_full,
            Notice::SourceFull => &c.refused_source_full,
            Notice::PartialFrameTimeout => &c.partial_frame_timeouts,
            Notice::IdleTimeout => &c.idle_timeouts,
            Notice::BudgetShed => &c.shed_budget,
            Notice::ProxyHeaderRejected => &c.proxy_header_rejected,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Notice::ConnectionFromElsewhere => {
                "connection refused: its address is not in allowed_sources"
            }
            Notice::DatagramFromElsewhere => {
                "datagram dropped: its address is not in allowed_sources"
            }
            Notice::IntakeFull => "connection refused: the intake has max_connections open",
            Notice::SourceFull => {
                "connection refused: its address has max_connections_per_source open"
            }
            Notice::PartialFrameTimeout => {
                "connection closed: a frame was not finished within partial_frame_timeout; its start was discarded"
            }
            Notice::IdleTimeout => "connection closed: silent for idle_timeout",
            Notice::BudgetShed => {
                "connection closed: it held the most read-buffer memory when the read budget ran out; its unfinished frame was discarded"
            }
            Notice::ProxyHeaderRejected => {
                "connection closed: no valid PROXY protocol header (the intake has proxy_protocol: true)"
            }
        }
    }
}

/// Counts and rate-limited log lines of the [`Notice`]s of one listener.
pub(crate) struct Notices {
    intake_counters: Arc<InputCounters>,
    conditions: Mutex<[Condition; KINDS]>,
    /// When [`Notices::tick`] next looks for conditions that ended.
    next_tick: Mutex<Instant>,
    /// Some condition is in force (lets [`Notices::tick`] skip the lock when all is quiet).
    any_active: AtomicBool,
}

#[derive(Default)]
struct Condition {
    log: Repeating,
    /// Occurred since the last tick.
    recent: bool,
}

impl Notices {
    pub fn new(counters: Arc<InputCounters>) -> Self {
        Self {
            intake_counters: counters,
            conditions: Mutex::new(Default::default()),
            next_tick: Mutex::new(Instant::now() + SUMMARY_EVERY),
            any_active: AtomicBool::new(false),
        }
    }

    fn conditions(&self) -> MutexGuard<'_, [Condition; KINDS]> {
        self.conditions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one occurrence and logs it if a line is due.
    pub fn record(&self, kind: Notice, peer: IpAddr) {
        self.record_because(kind, peer, "");
    }

    /// [`Notices::record`], with what was wrong in words (`why`, logged when not empty).
    pub fn record_because(&self, kind: Notice, peer: IpAddr, why: &str) {
        InputCounters::add(kind.counter(&self.intake_counters), 1);
        let report = {
            let mut conditions = self.conditions();
            let condition = &mut conditions[kind.index()];
            condition.recent = true;
            condition.log.occurred(Instant::now())
        };
        self.any_active.store(true, Ordering::Relaxed);
        let what = kind.what();
        match report {
            Some(Report::Started) if why.is_empty() => tracing::warn!(peer = %peer, "{what}"),
            Some(Report::Started) => tracing::warn!(peer = %peer, problem = why, "{what}"),
            Some(Report::Ongoing { count, total, .. }) if why.is_empty() => {
                tracing::warn!(count, total, last_peer = %peer, "{what} (repeated)")
            }
            Some(Report::Ongoing { count, total, .. }) => {
                let last_problem = why;
                tracing::warn!(count, total, last_peer = %peer, last_problem, "{what} (repeated)")
            }
            Some(Report::Ended { .. }) | None => {}
        }
    }

    /// Ends the conditions that did not occur during the last [`SUMMARY_EVERY`]; call it
    /// as often as convenient (it looks at most once per interval).
    pub fn tick(&self) {
        if !self.any_active.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        {
            let mut next = self
                .next_tick
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if now < *next {
                return;
            }
            *next = now + SUMMARY_EVERY;
        }
        let mut active = false;
        let mut ended = Vec::new();
        for (i, condition) in self.conditions().iter_mut().enumerate() {
            if !std::mem::take(&mut condition.recent) {
                if let Some(Report::Ended { total, lasted }) = condition.log.cleared(now) {
                    ended.push((i, total, lasted));
                }
            }
            active |= condition.log.is_active();
        }
        self.any_active.store(active, Ordering::Relaxed);
        for (i, total, lasted) in ended {
            let what = ALL[i].what();
            let lasted_s = lasted.as_secs();
            tracing::info!(total, lasted_s, "no more: {what}");
        }
    }
}

const ALL: [Notice; KINDS] = [
    Notice::ConnectionFromElsewhere,
    Notice::DatagramFromElsewhere,
    Notice::IntakeFull,
    Notice::SourceFull,
    Notice::PartialFrameTimeout,
    Notice::IdleTimeout,
    Notice::BudgetShed,
    Notice::ProxyHeaderRejected,
];

/// The connection limits and allow-list of one TCP/TLS listener.
pub(crate) struct Admission {
    sources: SourceFilter,
    max_connections: u32,
    max_per_source: u32,
    /// Off with `proxy_protocol`: the per-source limit waits for the real sender.
    per_source_at_accept: bool,
    open: Mutex<Open>,
    pub notices: Notices,
}

#[derive(Default)]
struct Open {
    total: u32,
    per_source: HashMap<IpAddr, u32>,
}

impl Admission {
    pub fn new(limits: &IntakeLimits, counters: Arc<InputCounters>) -> Self {
        Self {
            sources: limits.allowed_sources.clone(),
            max_connections: limits.max_connections,
            max_per_source: limits.max_connections_per_source,
            per_source_at_accept: !limits.proxy_protocol,
            open: Mutex::new(Open::default()),
            notices: Notices::new(counters),
        }
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection from `peer`, or `None` (refused: counted and logged).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Admitted> {
        let ip = peer.to_canonical();
        let refusal = if !self.sources.allows(ip) {
            Some(Notice::ConnectionFromElsewhere)
        } else {
            let mut open = self.open();
            if open.total >= self.max_connections {
                Some(Notice::IntakeFull)
            } else if self.per_source_at_accept && !self.take_source(&mut open, ip) {
                Some(Notice::SourceFull)
            } else {
                open.total += 1;
                None
            }
        };
        match refusal {
            Some(kind) => {
                self.notices.record(kind, ip);
                None
            }
            None => Some(Admitted {
                admission: self.clone(),
                source: self.per_source_at_accept.then_some(ip),
            }),
        }
    }

    /// Counts `place` against the per-source limit of `source`, the sender its PROXY header
    /// named (`proxy_protocol`); `false` when that source is full (counted and logged).
    pub fn claim_source(&self, place: &mut Admitted, source: IpAddr) -> bool {
        if place.source.is_some() {
            return true; // counted at accept already
        }
        let ip = source.to_canonical();
        if !self.take_source(&mut self.open(), ip) {
            self.notices.record(Notice::SourceFull, ip);
            return false;
        }
        place.source = Some(ip);
        true
    }

    /// One more connection from `ip`, unless it has `max_connections_per_source`.
    fn take_source(&self, open: &mut Open, ip: IpAddr) -> bool {
        let from_ip = open.per_source.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_source {
            return false;
        }
        open.per_source.insert(ip, from_ip + 1);
        true
    }

    fn leave(&self, source: Option<IpAddr>) {
        let mut open = self.open();
        open.total = open.total.saturating_sub(1);
        let Some(ip) = source else { return };
        if let Some(n) = open.per_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.per_source.remove(&ip);
            }
        }
    }
}

/// One admitted connection's place; given back on drop.
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    /// The address it counts against for the per-source limit (`None` until a PROXY header
    /// named the sender).
    source: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.leave(self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Cidr;

    fn admission(limits: IntakeLimits) -> (Arc<Admission>, Arc<InputCounters>) {
        let counters = Arc::new(InputCounters::new());
        (
            Arc::new(Admission::new(&limits, counters.clone())),
            counters,
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn places_are_limited_per_intake_and_per_source_and_given_back() {
        let limits = IntakeLimits {
            max_connections: 3,
            max_connections_per_source: 2,
            ..IntakeLimits::default()
        };
        let (admission, counters) = admission(limits);
        let a1 = admission.admit(ip("10.0.0.1")).expect("first");
        let a2 = admission
            .admit(ip("::ffff:10.0.0.1"))
            .expect("second, same source");
        assert!(admission.admit(ip("10.0.0.1")).is_none(), "third from it");
        let b1 = admission.admit(ip("10.0.0.2")).expect("another source");
        assert!(admission.admit(ip("10.0.0.3")).is_none(), "intake full");
        let s = counters.snapshot();
        assert_eq!((s.refused_source_full, s.refused_intake_full), (1, 1));
        drop(a1);
        assert!(
            admission.admit(ip("10.0.0.3")).is_some(),
            "a place came back"
        );
        drop((a2, b1));
        assert!(admission.open().per_source.is_empty());
        assert_eq!(admission.open().total, 0);
    }

    #[test]
    fn behind_a_balancer_the_per_source_limit_counts_the_real_senders() {
        let limits = IntakeLimits {
            max_connections: 4,
            max_connections_per_source: 1,
            proxy_protocol: true,
            ..IntakeLimits::default()
        };
        let (admission, counters) = admission(limits);
        let balancer = ip("10.9.9.9");
        let mut a = admission.admit(balancer).expect("first via the balancer");
        let mut b = admission
            .admit(balancer)
            .expect("second via the same balancer");
        let mut c = admission
            .admit(balancer)
            .expect("third via the same balancer");
        assert!(admission.claim_source(&mut a, ip("192.0.2.1")));
        assert!(admission.claim_source(&mut b, ip("192.0.2.2")));
        assert!(
            !admission.claim_source(&mut c, ip("::ffff:192.0.2.1")),
            "a second connection of the same sender"
        );
        assert_eq!(counters.snapshot().refused_source_full, 1);
        assert_eq!(admission.open().per_source.len(), 2);
        drop((a, b, c));
        assert!(admission.open().per_source.is_empty());
        assert_eq!(admission.open().total, 0);
    }

    #[test]
    fn peers_outside_the_allow_list_are_refused_and_counted() {
        let net: Cidr = "127.0.0.1/32".parse().unwrap();
        let limits = IntakeLimits {
            allowed_sources: SourceFilter::new(vec![net]),
            ..IntakeLimits::default()
        };
        let (admission, counters) = admission(limits);
        assert!(admission.admit(ip("127.0.0.1")).is_some());
        assert!(admission.admit(ip("127.0.0.2")).is_none());
        assert_eq!(counters.snapshot().refused_source, 1);
        assert_eq!(admission.open().total, 0, "the refused took no place");
    }

    #[test]
    fn a_quiet_interval_ends_the_condition() {
        let counters = Arc::new(InputCounters::new());
        let notices = Notices::new(counters.clone());
        notices.record(Notice::IdleTimeout, ip("10.0.0.1"));
        notices.record(Notice::IdleTimeout, ip("10.0.0.1"));
        assert_eq!(counters.snapshot().idle_timeouts, 2);
        notices.tick();
        assert!(notices.conditions()[Notice::IdleTimeout.index()]
            .log
            .is_active());
        *notices.next_tick.lock().unwrap() = Instant::now();
        notices.tick();
        assert!(notices.conditions()[Notice::IdleTimeout.index()]
            .log
            .is_active());
        *notices.next_tick.lock().unwrap() = Instant::now();
        notices.tick();
        assert!(!notices.conditions()[Notice::IdleTimeout.index()]
            .log
            .is_active());
        assert!(!notices.any_active.load(Ordering::Relaxed));
    }
}
