//! Besides its one-second reports to the supervisor (`sekoia-ctl status`, the monitoring
//! entry, Prometheus), the uplink says in its log what it did: every interval, events and bytes sent, events sent again after a broken
//! connection (the duplicates the intake may see), connections up, the last error.

use std::sync::Arc;
use std::time::Duration;

use sekoia_shared::uplink::UplinkCounters;
use tracing::info;

/// Logs the uplink's activity every `every`, when anything happened.
pub async fn report_periodically(counters: Arc<UplinkCounters>, every: Duration) {
    let mut last = counters.snapshot();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = counters.snapshot();
        let sent = now.events_sent - last.events_sent;
        let resent = now.resent_events - last.resent_events;
        let failures = (now.connect_failures + now.tls_failures + now.write_failures)
            - (last.connect_failures + last.tls_failures + last.write_failures);
        if sent + resent + failures > 0 {
            info!(
                events_sent = sent,
                bytes_sent = now.bytes_sent - last.bytes_sent,
                resent_events = resent,
                resent_total = now.resent_events,
                connection_failures = failures,
                connections_up = now.connections_up,
                relp_acknowledged = now.relp_acknowledged - last.relp_acknowledged,
                relp_window_in_use = now.relp_window_in_use,
                last_error = now.last_error.as_deref().unwrap_or("-"),
                every_s = every.as_secs(),
                "uplink activity"
            );
        }
        last = now;
    }
}

/// The totals, logged once when the uplink stops.
pub fn report_totals(counters: &UplinkCounters) {
    let s = counters.snapshot();
    info!(
        events_sent = s.events_sent,
        bytes_sent = s.bytes_sent,
        resent_events = s.resent_events,
        connects = s.connects,
        connection_failures = s.connect_failures + s.tls_failures + s.write_failures,
        relp_sessions = s.relp_sessions,
        relp_acknowledged = s.relp_acknowledged,
        "uplink totals"
    );
}
