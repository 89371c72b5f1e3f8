//! The monitoring entry (`stats: true`): every `STATS_INTERVAL` seconds the forwarder reports
//! its counters as rsyslog's impstats objects (SPEC §9), the names, origins and fields
//! Sekoia's parser keys on, plus our own objects.
//!
//! Who does what:
//! - the supervisor's stats task (`bins/sekoia-forwarder/src/stats_task.rs`) asks the
//!   supervisor's loop for the [`StatusReport`](crate::control::status::StatusReport) (the
//!   one `sekoia-ctl status` shows, built from the workers' reports), and builds the
//!   interval's objects ([`Interval`]);
//! - each object becomes one output line ([`render_line`]): PRI 46 (facility syslog,
//!   severity info, impstats' defaults), app-name `rsyslogd-pstats`, procid `-`, the
//!   forwarder's host name, MSG the object's JSON ([`StatsObject::to_json`]);
//! - the lines go into the monitoring entry's own queue (`queue::layout::QueueKey::STATS`:
//!   a ring and a journal like any intake's, with the same spill rule), which the uplink
//!   drains like the others: a destination that is down delays nothing and loses nothing;
//! - the same objects are appended to `STATS_FILE` ([`StatsFile`], rotated).

mod file;
mod impstats;
mod objects;
mod usage;

pub use file::{ctime_stamp, StatsFile, FILES_KEPT, ROTATE_AT};
pub use impstats::StatsObject;
pub use objects::Interval;
pub use usage::ResourceUsage;

use crate::syslog::{render_generated, EventContext};

/// PRI of the monitoring lines: facility 5 (syslog) × 8 + severity 6 (info).
pub const STATS_PRI: u8 = 46;
/// APP-NAME of the monitoring lines (impstats' tag `rsyslogd-pstats:`).
pub const STATS_APP_NAME: &str = "rsyslogd-pstats";

/// Appends one object's output line (`LEN SP LINE`) to `out`; returns the range of LINE.
pub fn render_line(
    object: &StatsObject,
    intake_key: &str,
    hostname: &str,
    timestamp: &str,
    out: &mut Vec<u8>,
) -> std::ops::Range<usize> {
    let ctx = EventContext {
        intake_key,
        sender_host: hostname,
        timestamp,
    };
    render_generated(STATS_PRI, STATS_APP_NAME, &object.to_json(), &ctx, out)
}

/// The host name the lines carry: this machine's, up to its first dot, as rsyslog's local
/// host name (without `PreserveFQDN`). `localhost` when it cannot be read.
pub fn local_hostname() -> String {
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_default();
    let short = name.split('.').next().unwrap_or_default();
    // A host name with a space or a control byte would break the header: never ours.
    if short.is_empty() || short.bytes().any(|b| b <= b' ' || b == 0x7f) {
        "localhost".to_string()
    } else {
        short.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_pri_46_the_pstats_app_name_and_the_json_as_msg() {
        let o = StatsObject::new("input-fw(514)", "imtcp").with("submitted", 3);
        let mut out = Vec::new();
        let r = render_line(
            &o,
            "KEY",
            "host1",
            "2026-12-01T01:00:00.000000+00:00",
            &mut out,
        );
        let line = "<46>1 2026-12-01T01:00:00.000000+00:00 host1 rsyslogd-pstats - LOG \
                    [SEKOIA@53288 intake_key=\"KEY\"] { \"name\": \"input-fw(514)\", \
                    \"origin\": \"imtcp\", \"submitted\": 3 }\n";
        assert_eq!(std::str::from_utf8(&out[r.clone()]).unwrap(), line);
        assert_eq!(&out[..r.start], format!("{} ", line.len()).as_bytes());
    }

    #[test]
    fn the_host_name_is_short_and_safe() {
        let h = local_hostname();
        assert!(!h.is_empty() && !h.contains('.') && !h.contains(' '), "{h}");
    }
}
