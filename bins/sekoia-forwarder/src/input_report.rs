//! Besides its one-second reports to the supervisor (`sekoia-ctl status`, the monitoring
//! entry, Prometheus), the ingest worker says in its log what it had to drop or cut: every interval, the counts that grew; at stop, the totals.
//! Losses must never be silent (including datagrams the kernel dropped before we could read
//! them, `udp_kernel_drops`), nor events sent under a sender's IP because its name came
//! too late (`resolve_timeouts`) or its held datagrams overflowed (`resolve_wait_overflows`),
//! nor senders refused or connections closed by the intake's limits (docs/hostile-networks.md),
//! nor connections closed for a missing or bad PROXY header (`proxy_header_rejected`).

use std::sync::Arc;
use std::time::Duration;

use sekoia_shared::input::{InputCounters, InputCountersSnapshot};
use tracing::{info, warn};

/// Logs, every `every`, the drop and error counters that grew since the last report.
pub async fn report_periodically(intake: String, counters: Arc<InputCounters>, every: Duration) {
    let mut last = counters.snapshot();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = counters.snapshot();
        let grew = |f: fn(&InputCountersSnapshot) -> u64| f(&now) - f(&last);
        let (dropped, truncated, partial, tls) = (
            grew(|s| s.dropped_full),
            grew(|s| s.truncated),
            grew(|s| s.partial_discarded),
            grew(|s| s.tls_handshake_failures),
        );
        let (resolve_timeouts, resolve_overflows) = (
            grew(|s| s.resolve_timeouts),
            grew(|s| s.resolve_wait_overflows),
        );
        let (kernel_drops, not_tls, over_limit) = (
            grew(|s| s.udp_kernel_drops),
            grew(|s| s.tls_not_tls),
            grew(|s| s.tls_handshakes_over_limit),
        );
        let refused = tls + not_tls + over_limit;
        if dropped
            + kernel_drops
            + truncated
            + partial
            + refused
            + resolve_timeouts
            + resolve_overflows
            > 0
        {
            warn!(intake = %intake, dropped_full = dropped, udp_kernel_drops = kernel_drops,
                truncated, partial_discarded = partial, tls_handshake_failures = tls,
                tls_not_tls = not_tls, tls_handshakes_over_limit = over_limit, resolve_timeouts,
                resolve_wait_overflows = resolve_overflows, every_s = every.as_secs(),
                "input losses and errors in the last interval");
        }
        let (refused, timeouts, shed) = (
            grew(|s| {
                s.refused_source
                    + s.refused_intake_full
                    + s.refused_source_full
                    + s.proxy_header_rejected
            }),
            grew(|s| s.partial_frame_timeouts + s.idle_timeouts),
            grew(|s| s.shed_budget),
        );
        if refused + timeouts + shed > 0 {
            warn!(intake = %intake, refused_source = grew(|s| s.refused_source),
                refused_intake_full = grew(|s| s.refused_intake_full),
                refused_source_full = grew(|s| s.refused_source_full),
                proxy_header_rejected = grew(|s| s.proxy_header_rejected),
                partial_frame_timeouts = grew(|s| s.partial_frame_timeouts),
                idle_timeouts = grew(|s| s.idle_timeouts), shed_budget = shed,
                every_s = every.as_secs(), "connections refused or closed by limits in the last interval");
        }
        last = now;
    }
}

/// The totals, logged once when the worker stops.
pub fn report_totals(intake: &str, counters: &InputCounters) {
    let s = counters.snapshot();
    info!(intake = %intake, received = s.received, dropped_full = s.dropped_full,
        udp_kernel_drops = s.udp_kernel_drops, truncated = s.truncated,
        partial_discarded = s.partial_discarded, tls_handshake_failures = s.tls_handshake_failures,
        tls_not_tls = s.tls_not_tls, tls_handshakes_over_limit = s.tls_handshakes_over_limit,
        tls_closed_before_hello = s.tls_closed_before_hello, resolve_timeouts = s.resolve_timeouts,
        resolve_wait_overflows = s.resolve_wait_overflows, connections_total = s.connections_total,
        refused_source = s.refused_source, refused_intake_full = s.refused_intake_full,
        refused_source_full = s.refused_source_full, partial_frame_timeouts = s.partial_frame_timeouts,
        idle_timeouts = s.idle_timeouts, shed_budget = s.shed_budget,
        proxy_header_rejected = s.proxy_header_rejected, "input totals");
}
