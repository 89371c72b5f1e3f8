//! Reverse DNS of senders, in the background, with a cache.
//!
//! [`Resolver::host_for`] never blocks: it answers from the cache, or with the IP text while a
//! lookup runs on its own thread (at most [`MAX_CONCURRENT_LOOKUPS`] at a time; beyond that
//! the IP is used and the lookup is tried again on a later call). Answers are kept
//! [`POSITIVE_TTL`] (names) or [`NEGATIVE_TTL`] (no name); an expired name is still served while
//! its refresh runs, so a sender's host name does not flicker to its IP every ten minutes.
//!
//! What a name looks like and where the local domain comes from (found once, on the first
//! lookup thread): see `resolver/name.rs`; a refused name gives the IP. IPv4-mapped IPv6
//! senders are shown as IPv4.

mod name;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

#[cfg(test)]
use name::resolv_conf_domain;
use name::{display_name, system_local_domain, system_reverse_lookup};

/// How long a resolved name is trusted.
pub const POSITIVE_TTL: Duration = Duration::from_secs(600);
/// How long "no name for this address" is trusted.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Lookups running at the same time, at most.
pub const MAX_CONCURRENT_LOOKUPS: usize = 8;
/// Cached senders, at most; expired entries are purged first, then everything.
const MAX_ENTRIES: usize = 200_000;

/// A blocking reverse lookup: the raw PTR name of an address, or None.
pub type Lookup = Arc<dyn Fn(IpAddr) -> Option<String> + Send + Sync>;

/// Sender names for the inputs. Cheap to share (`Arc<Resolver>`); never blocks.
pub struct Resolver {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    lookup: Lookup,
    local_domain: OnceLock<Option<String>>,
    cache: Mutex<HashMap<IpAddr, Entry>>,
    in_flight: AtomicUsize,
    positive_ttl: Duration,
    negative_ttl: Duration,
}

struct Entry {
    /// The name, or the IP text when there is none (yet).
    host: Arc<str>,
    expires: Instant,
    refreshing: bool,
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

    fn build(lookup: Lookup, local_domain: OnceLock<Option<String>>) -> Self {
        let shared = Shared {
            lookup,
            local_domain,
            cache: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            positive_ttl: POSITIVE_TTL,
            negative_ttl: NEGATIVE_TTL,
        };
        Self {
            shared: Some(Arc::new(shared)),
        }
    }

    /// The name to show for a sender; returns at once (see the module doc).
    pub fn host_for(&self, ip: IpAddr) -> Arc<str> {
        let ip = ip.to_canonical();
        let Some(shared) = &self.shared else {
            return Arc::from(ip.to_string());
        };
        let now = Instant::now();
        let mut cache = shared
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = cache.get_mut(&ip) {
            if entry.expires > now || entry.refreshing {
                return entry.host.clone();
            }
            entry.refreshing = Shared::start_lookup(shared, ip);
            return entry.host.clone();
        }
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, e| e.refreshing || e.expires > now);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        let host: Arc<str> = Arc::from(ip.to_string());
        let refreshing = Shared::start_lookup(shared, ip);
        cache.insert(
            ip,
            Entry {
                host: host.clone(),
                expires: now,
                refreshing,
            },
        );
        host
    }
}

impl Shared {
    /// Starts a background lookup unless too many run; true when started.
    fn start_lookup(this: &Arc<Self>, ip: IpAddr) -> bool {
        let running = this.in_flight.fetch_add(1, Ordering::Relaxed);
        if running >= MAX_CONCURRENT_LOOKUPS {
            this.in_flight.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let job = Arc::clone(this);
        let spawned = std::thread::Builder::new()
            .name("sekoia-rdns".into())
            .spawn(move || job.run_lookup(ip));
        if let Err(e) = spawned {
            this.in_flight.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot start a reverse DNS lookup thread");
            return false;
        }
        true
    }

    fn run_lookup(&self, ip: IpAddr) {
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
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.insert(
            ip,
            Entry {
                host,
                expires: Instant::now() + ttl,
                refreshing: false,
            },
        );
        drop(cache);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
