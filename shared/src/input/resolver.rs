//! Reverse DNS of senders: a cache, lookups on a few threads, and a bounded wait for the name
//! of a sender seen for the first time.
//!
//! Why wait at all: the host field names the asset in Sekoia, so a sender's first events sent
//! under its IP (before its name is known) make a phantom asset (SPEC §4). So:
//!
//! - [`Resolver::host_or_wait`] answers at once, with one mutex lookup and no allocation, for
//!   every sender it knows: a fresh name, an expired name (or IP) while its refresh runs in the
//!   background (no flicker, no wait), or the IP of a sender without a name (negative entry).
//! - For a sender seen for the first time it queues a lookup and returns a [`FirstLookup`]:
//!   [`FirstLookup::wait`] (async, never blocks the thread) ends when the lookup answers, or at
//!   the sender's deadline, first sight + the wait timeout ([`DEFAULT_WAIT`],
//!   `--resolve-timeout`), whichever comes first. At the deadline the IP is used: the outcome
//!   says `timed_out` (the input counts it) and a warning is logged, at most once a minute.
//!   Every waiter for one sender shares that deadline, and after it nobody waits for that
//!   sender any more: the IP is served until the lookup answers. A wait of zero never waits.
//! - [`Resolver::host_for`] never waits: what `host_or_wait` knows, else the IP.
//!
//! Lookups run on threads, at most [`MAX_CONCURRENT_LOOKUPS`] at a time; more wait in a FIFO
//! queue (at most [`MAX_QUEUED_LOOKUPS`]) that a thread takes the next job from when it
//! finishes one. So when thousands of new senders arrive at once, every lookup runs in turn
//! (a queued lookup that a waiter gave up on still fills the cache), and each waiter waits at
//! most its own timeout. When even the queue is full, the new sender is not waited for: its
//! event goes out under the IP at once, and its lookup is tried again at its next event.
//!
//! Answers are kept [`POSITIVE_TTL`] (names) or [`NEGATIVE_TTL`] (no name). At most
//! `MAX_ENTRIES` senders are cached: expired entries are purged first, then everything. What
//! a name looks like and where the local domain comes from: see `resolver/name.rs`.
//! IPv4-mapped IPv6 senders are shown as IPv4. `Resolver::new(false)` (`--no-resolve`):
//! every sender is its IP, at once.

mod name;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::log_limit::{Repeating, Report};

use tokio::sync::watch;

#[cfg(test)]
use name::resolv_conf_domain;
use name::{display_name, system_local_domain, system_reverse_lookup};

/// How long a resolved name is trusted.
pub const POSITIVE_TTL: Duration = Duration::from_secs(600);
/// How long "no name for this address" is trusted.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Lookups running at the same time, at most.
pub const MAX_CONCURRENT_LOOKUPS: usize = 8;
/// Lookups waiting for a thread, at most; beyond it a new sender is not waited for.
pub const MAX_QUEUED_LOOKUPS: usize = 4_096;
/// How long, by default, the events of a new sender wait for its name.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);
/// Cached senders, at most; expired entries are purged first, then everything.
const MAX_ENTRIES: usize = 200_000;
/// At most one warning about timed-out first lookups per this interval.
const TIMEOUT_LOG_EVERY: Duration = Duration::from_secs(60);

/// A blocking reverse lookup: the raw PTR name of an address, or None.
pub type Lookup = Arc<dyn Fn(IpAddr) -> Option<String> + Send + Sync>;

/// Sender names for the inputs. Cheap to share (`Arc<Resolver>`).
pub struct Resolver {
    shared: Option<Arc<Shared>>,
}

/// What [`Resolver::host_or_wait`] knows now.
pub enum SenderHost {
    /// The host to show, at once.
    Known(Arc<str>),
    /// A new sender whose first lookup runs: await [`FirstLookup::wait`] for its host.
    Pending(FirstLookup),
}

/// The first lookup of one sender, to wait for (bounded by the sender's deadline).
pub struct FirstLookup {
    ip: IpAddr,
    /// The IP text, the host when the lookup does not answer in time.
    fallback: Arc<str>,
    /// Closed (its sender dropped) once the answer is in the cache.
    answered: watch::Receiver<()>,
    deadline: Instant,
    shared: Arc<Shared>,
}

/// The host a [`FirstLookup`] ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitedHost {
    pub host: Arc<str>,
    /// The lookup had not answered by the deadline: `host` is the IP.
    pub timed_out: bool,
}

struct Shared {
    lookup: Lookup,
    local_domain: OnceLock<Option<String>>,
    table: Mutex<Table>,
    positive_ttl: Duration,
    negative_ttl: Duration,
    wait: Duration,
    timeout_log: Mutex<Repeating>,
}

/// The cache and the lookup queue, under one lock.
#[derive(Default)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    queued: VecDeque<Job>,
    /// Lookup threads alive (each runs jobs until the queue is empty).
    running: usize,
}

struct Entry {
    /// The name, or the IP text when there is none (yet).
    host: Arc<str>,
    expires: Instant,
    lookup: LookupState,
}

enum LookupState {
    /// No lookup queued or running.
    Idle,
    /// A refresh is queued or running; the entry's host is served meanwhile.
    Refreshing,
    /// The sender's first lookup is queued or running; callers wait until `deadline`.
    First {
        answered: watch::Receiver<()>,
        deadline: Instant,
    },
}

/// One lookup to run. Dropping `answered` (after the answer is stored) wakes the waiters.
struct Job {
    ip: IpAddr,
    answered: Option<watch::Sender<()>>,
}

impl Resolver {
    /// `enabled = false` (`--no-resolve`): every sender is shown by its IP.
    pub fn new(enabled: bool) -> Self {
        if !enabled {
            return Self { shared: None };
        }
        Self::build(Arc::new(system_reverse_lookup), OnceLock::new())
    }

    /// A resolver with its own lookup function and local domain (tests, embedding).
    pub fn with_lookup(lookup: Lookup, local_domain: Option<String>) -> Self {
        Self::build(lookup, OnceLock::from(local_domain))
    }

    /// Replaces the cache lifetimes (tests).
    pub fn with_ttls(mut self, positive: Duration, negative: Duration) -> Self {
        if let Some(shared) = self.shared.as_mut().and_then(Arc::get_mut) {
            shared.positive_ttl = positive;
            shared.negative_ttl = negative;
        }
        self
    }

    /// Replaces how long a new sender's events wait for its name ([`DEFAULT_WAIT`]).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        if let Some(shared) = self.shared.as_mut().and_then(Arc::get_mut) {
            shared.wait = wait;
        }
        self
    }

    fn build(lookup: Lookup, local_domain: OnceLock<Option<String>>) -> Self {
        let shared = Shared {
            lookup,
            local_domain,
            table: Mutex::new(Table::default()),
            positive_ttl: POSITIVE_TTL,
            negative_ttl: NEGATIVE_TTL,
            wait: DEFAULT_WAIT,
            timeout_log: Mutex::new(Repeating::new(TIMEOUT_LOG_EVERY)),
        };
        Self {
            shared: Some(Arc::new(shared)),
        }
    }

    /// The host to show for a sender now, or its first lookup to wait for (see the module doc).
    pub fn host_or_wait(&self, ip: IpAddr) -> SenderHost {
        let ip = ip.to_canonical();
        match &self.shared {
            None => SenderHost::Known(Arc::from(ip.to_string())),
            Some(shared) => shared.host_or_wait(ip),
        }
    }

    /// [`host_or_wait`](Self::host_or_wait), waiting for a new sender's name when needed.
    pub async fn host_waiting(&self, ip: IpAddr) -> WaitedHost {
        match self.host_or_wait(ip) {
            SenderHost::Known(host) => WaitedHost {
                host,
                timed_out: false,
            },
            SenderHost::Pending(first) => first.wait().await,
        }
    }

    /// The host to show for a sender; returns at once: the IP while a first lookup runs.
    pub fn host_for(&self, ip: IpAddr) -> Arc<str> {
        match self.host_or_wait(ip) {
            SenderHost::Known(host) => host,
            SenderHost::Pending(first) => first.fallback,
        }
    }

    /// Starts the lookup of a sender not known yet (at accept, so it overlaps the handshake).
    pub fn prefetch(&self, ip: IpAddr) {
        drop(self.host_or_wait(ip));
    }
}

impl FirstLookup {
    /// Waits for the answer, at most until the sender's deadline; then the IP (`timed_out`).
    pub async fn wait(mut self) -> WaitedHost {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        // Err (the only outcome: nothing is ever sent) means the job dropped its sender: the
        // answer is in the cache. The timeout's Err means the deadline came first.
        let _ = tokio::time::timeout_at(deadline, self.answered.changed()).await;
        match self.shared.answer(self.ip) {
            Some(host) => WaitedHost {
                host,
                timed_out: false,
            },
            None => {
                self.shared.note_timeout(self.ip);
                WaitedHost {
                    host: self.fallback,
                    timed_out: true,
                }
            }
        }
    }
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn host_or_wait(self: &Arc<Self>, ip: IpAddr) -> SenderHost {
        let now = Instant::now();
        let mut table = self.table();
        let Some(entry) = table.entries.get(&ip) else {
            return self.first_sight(&mut table, ip, now);
        };
        let stale = match &entry.lookup {
            LookupState::First { answered, deadline } if *deadline > now => {
                return SenderHost::Pending(FirstLookup {
                    ip,
                    fallback: entry.host.clone(),
                    answered: answered.clone(),
                    deadline: *deadline,
                    shared: Arc::clone(self),
                });
            }
            LookupState::Idle if entry.expires <= now => entry.host.clone(),
            _ => return SenderHost::Known(entry.host.clone()),
        };
        // Expired and idle: refresh in the background, serve the old answer meanwhile.
        let job = Job { ip, answered: None };
        if self.submit(&mut table, job) {
            if let Some(entry) = table.entries.get_mut(&ip) {
                entry.lookup = LookupState::Refreshing;
            }
        }
        SenderHost::Known(stale)
    }

    /// A sender not in the cache: queue its lookup and hand out something to wait on.
    fn first_sight(self: &Arc<Self>, table: &mut Table, ip: IpAddr, now: Instant) -> SenderHost {
        let ip_text: Arc<str> = Arc::from(ip.to_string());
        let (sender, answered) = watch::channel(());
        let job = Job {
            ip,
            answered: Some(sender),
        };
        if !self.submit(table, job) {
            // Not even queued: no entry, so the next event tries again; nobody waits for nothing.
            return SenderHost::Known(ip_text);
        }
        if table.entries.len() >= MAX_ENTRIES {
            let idle = |e: &Entry| matches!(e.lookup, LookupState::Idle);
            table.entries.retain(|_, e| !idle(e) || e.expires > now);
            if table.entries.len() >= MAX_ENTRIES {
                table.entries.clear();
            }
        }
        let deadline = now + self.wait;
        let lookup = LookupState::First {
            answered: answered.clone(),
            deadline,
        };
        let entry = Entry {
            host: ip_text.clone(),
            expires: now,
            lookup,
        };
        table.entries.insert(ip, entry);
        if deadline <= now {
            return SenderHost::Known(ip_text);
        }
        SenderHost::Pending(FirstLookup {
            ip,
            fallback: ip_text,
            answered,
            deadline,
            shared: Arc::clone(self),
        })
    }

    /// Runs `job` on a new thread when fewer than the maximum run, else queues it if there is
    /// room; false when it was neither.
    fn submit(self: &Arc<Self>, table: &mut Table, job: Job) -> bool {
        if table.running >= MAX_CONCURRENT_LOOKUPS {
            if table.queued.len() >= MAX_QUEUED_LOOKUPS {
                return false;
            }
            table.queued.push_back(job);
            return true;
        }
        let worker = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("sekoia-rdns".into())
            .spawn(move || worker.run_jobs(job));
        match spawned {
            Ok(_) => {
                table.running += 1;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a reverse DNS lookup thread");
                false
            }
        }
    }

    /// A lookup thread: runs `job`, then queued jobs, until the queue is empty.
    fn run_jobs(&self, mut job: Job) {
        loop {
            self.run_lookup(job);
            let mut table = self.table();
            match table.queued.pop_front() {
                Some(next) => job = next,
                None => {
                    table.running -= 1;
                    return;
                }
            }
        }
    }

    fn run_lookup(&self, job: Job) {
        let ip = job.ip;
        let lookup = &self.lookup;
        let name = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let domain = self
                .local_domain
                .get_or_init(|| system_local_domain(lookup.as_ref()));
            lookup(ip).and_then(|raw| display_name(&raw, domain.as_deref()))
        }))
        .unwrap_or(None);
        let (host, ttl): (Arc<str>, _) = match name {
            Some(name) => (Arc::from(name), self.positive_ttl),
            None => (Arc::from(ip.to_string()), self.negative_ttl),
        };
        let entry = Entry {
            host,
            expires: Instant::now() + ttl,
            lookup: LookupState::Idle,
        };
        self.table().entries.insert(ip, entry);
        // The answer is stored: now wake whoever waits for it.
        drop(job.answered);
    }

    /// The cached host of `ip` once its first lookup has answered; None while it runs.
    fn answer(&self, ip: IpAddr) -> Option<Arc<str>> {
        let table = self.table();
        let entry = table.entries.get(&ip)?;
        match entry.lookup {
            LookupState::First { .. } => None,
            _ => Some(entry.host.clone()),
        }
    }

    /// Logs a timed-out first lookup: the first, then a count at most once per
    /// [`TIMEOUT_LOG_EVERY`] (timeouts are not an episode that ends, so no end line).
    fn note_timeout(&self, ip: IpAddr) {
        let report = self
            .timeout_log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .occurred(Instant::now());
        let wait_ms = u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX);
        match report {
            Some(Report::Started) => tracing::warn!(
                sender = %ip,
                wait_ms,
                "reverse DNS of a new sender did not answer in time; its first events use its IP"
            ),
            Some(Report::Ongoing { count, total, .. }) => tracing::warn!(
                sender = %ip,
                wait_ms,
                count,
                total,
                "reverse DNS of new senders still timing out; their first events use their IP"
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
