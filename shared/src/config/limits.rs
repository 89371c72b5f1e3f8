//! Per-intake limits on connections and who may send (the hostile-networks settings).
//!
//! Fields (all optional; docs/configuration.md and docs/hostile-networks.md explain them):
//! - `max_connections` (tcp/tls): connections open at once on the intake, default 50,000;
//! - `max_connections_per_source` (tcp/tls): from one address, default 1,000;
//! - `partial_frame_timeout` (tcp/tls): a frame started and not finished within it is
//!   discarded and its connection closed, default 60 s (1 s to 1 day);
//! - `idle_timeout` (tcp/tls): a connection silent for that long is closed, off by default
//!   (quiet devices are normal);
//! - `read_buffer_budget` (tcp/tls): the shared read-buffer memory beyond each connection's
//!   16 KiB, a size in rsyslog syntax, default `256m`, at least `1m`;
//! - `allowed_sources` (all protocols): a list of CIDR networks; anything else is refused.
//!
//! Durations are whole seconds (`60`) or a number with `s`, `m` or `h` (`90s`, `5m`, `1h`).
//! A tcp/tls-only field on a udp intake is ignored with a warning.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::config::entry::Report;
use crate::config::size::parse_size;
use crate::config::yaml11::{boolean, describe, text, whole_number};
use crate::config::Protocol;
use crate::input::{Cidr, SourceFilter};

/// The fields read here, for the unknown-field check.
pub(crate) const FIELDS: [&str; 6] = [
    "max_connections",
    "max_connections_per_source",
    "partial_frame_timeout",
    "idle_timeout",
    "read_buffer_budget",
    "allowed_sources",
];
/// Fields that only mean something for a stream (tcp/tls) intake.
const STREAM_FIELDS: [&str; 5] = [
    "max_connections",
    "max_connections_per_source",
    "partial_frame_timeout",
    "idle_timeout",
    "read_buffer_budget",
];
const MAX_TIMEOUT_SECS: u64 = 86_400;
const MIN_READ_BUDGET: u64 = 1 << 20;

/// The limits of one intake, with the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IntakeLimits {
    pub max_connections: u32,
    pub max_connections_per_source: u32,
    pub partial_frame_timeout_secs: u64,
    /// None: off (the default).
    pub idle_timeout_secs: Option<u64>,
    pub read_buffer_budget: u64,
    pub allowed_sources: SourceFilter,
    /// tcp/tls: every connection starts with a PROXY protocol header (v1 or v2) naming the
    /// real sender; read by `entry.rs` (it changes what `allowed_sources` and the per-source
    /// limit apply to: docs/hostile-networks.md).
    pub proxy_protocol: bool,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_connections_per_source: 1_000,
            partial_frame_timeout_secs: 60,
            idle_timeout_secs: None,
            read_buffer_budget: crate::input::DEFAULT_READ_BUDGET as u64,
            allowed_sources: SourceFilter::default(),
            proxy_protocol: false,
        }
    }
}

/// Where the fields of one entry are reported.
pub(crate) struct At<'a> {
    pub file: &'a Path,
    pub label: &'a str,
}

/// Reads the limit fields of a port intake; a bad value is reported and its default kept.
pub(crate) fn read(
    fields: &HashMap<&str, &Value>,
    protocol: Option<Protocol>,
    at: &At<'_>,
    report: &mut Report<'_>,
) -> IntakeLimits {
    let mut limits = IntakeLimits::default();
    if protocol == Some(Protocol::Udp) {
        for field in STREAM_FIELDS.iter().filter(|f| fields.contains_key(**f)) {
            let what = "is ignored: it applies to tcp and tls intakes, this one is udp";
            report.warning(at.file, at.label, field, what.into(), "remove it".into());
        }
    }
    let count = |field: &str, report: &mut Report<'_>| {
        let value = fields.get(field)?;
        match whole_number(value).map(u32::try_from) {
            Ok(Ok(n)) if n > 0 => Some(n),
            Ok(_) => {
                let what = format!("{} is out of range", describe(value));
                let fix = "use a number of connections from 1 to 4294967295, or remove it for the default";
                report.problem(at.file, at.label, field, what, fix);
                None
            }
            Err(what) => {
                let fix = "use a whole number of connections, or remove it for the default";
                report.problem(at.file, at.label, field, what, fix);
                None
            }
        }
    };
    if let Some(n) = count("max_connections", report) {
        limits.max_connections = n;
    }
    if let Some(n) = count("max_connections_per_source", report) {
        limits.max_connections_per_source = n;
    }
    if let Some(value) = fields.get("partial_frame_timeout") {
        match duration_secs(value) {
            Ok(Some(s)) if (1..=MAX_TIMEOUT_SECS).contains(&s) => {
                limits.partial_frame_timeout_secs = s
            }
            Ok(_) => {
                let what = format!("{} is out of range", describe(value));
                let fix = "use 1 s to 1 day (e.g. 60, 90s, 5m); it cannot be turned off";
                report.problem(at.file, at.label, "partial_frame_timeout", what, fix);
            }
            Err(what) => {
                let fix = "use whole seconds or a number with s, m or h (e.g. 60, 90s, 5m)";
                report.problem(at.file, at.label, "partial_frame_timeout", what, fix);
            }
        }
    }
    if let Some(value) = fields.get("idle_timeout") {
        match duration_secs(value) {
            Ok(None) | Ok(Some(0)) => limits.idle_timeout_secs = None,
            Ok(Some(s)) if s <= MAX_TIMEOUT_SECS => limits.idle_timeout_secs = Some(s),
            Ok(Some(_)) => {
                let what = format!("{} is longer than a day", describe(value));
                let fix = "use at most 1 day (86400, 24h), or `off`";
                report.problem(at.file, at.label, "idle_timeout", what, fix);
            }
            Err(what) => {
                let fix = "use whole seconds, a number with s, m or h (e.g. 600, 10m), or `off`";
                report.problem(at.file, at.label, "idle_timeout", what, fix);
            }
        }
    }
    if let Some(bytes) = read_budget(fields, at, report) {
        limits.read_buffer_budget = bytes;
    }
    if let Some(filter) = allowed_sources(fields, at, report) {
        limits.allowed_sources = filter;
    }
    if protocol == Some(Protocol::Udp) {
        // Only the allow-list applies to udp; the rest was warned about above.
        let allowed_sources = limits.allowed_sources;
        limits = IntakeLimits {
            allowed_sources,
            ..IntakeLimits::default()
        };
    }
    limits
}

fn read_budget(
    fields: &HashMap<&str, &Value>,
    at: &At<'_>,
    report: &mut Report<'_>,
) -> Option<u64> {
    let value = fields.get("read_buffer_budget")?;
    let parsed = match whole_number(value) {
        Ok(n) => Ok(n),
        Err(_) => text(value, false).and_then(|t| parse_size(&t).map_err(|e| e.to_string())),
    };
    let field = "read_buffer_budget";
    match parsed {
        Ok(n) if n >= MIN_READ_BUDGET => Some(n),
        Ok(n) => {
            let what = format!("{n} bytes is less than 1 MiB, too small for one 256000-byte message and a few others");
            report.problem(at.file, at.label, field, what, "use at least 1m");
            None
        }
        Err(what) => {
            let fix = "use a size such as 64m or 1g (lower-case suffixes are binary)";
            report.problem(at.file, at.label, field, what, fix);
            None
        }
    }
}

fn allowed_sources(
    fields: &HashMap<&str, &Value>,
    at: &At<'_>,
    report: &mut Report<'_>,
) -> Option<SourceFilter> {
    let value = fields.get("allowed_sources")?;
    let field = "allowed_sources";
    let items: Vec<&Value> = match value {
        Value::Sequence(items) => items.iter().collect(),
        Value::String(_) => vec![*value],
        other => {
            let what = format!("{} is not a list of networks", describe(other));
            let fix = "write a list such as [\"10.0.0.0/8\", \"2001:db8::/32\"]";
            report.problem(at.file, at.label, field, what, fix);
            return None;
        }
    };
    if items.is_empty() {
        let what = "the list is empty, which would refuse every sender";
        let fix = "list the networks allowed to send, or remove the field to accept any";
        report.problem(at.file, at.label, field, what.into(), fix);
        return None;
    }
    let mut networks = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match text(item, false).map(|t| t.parse::<Cidr>()) {
            Ok(Ok(net)) => networks.push(net),
            Ok(Err(e)) => {
                let fix = "write each network as ADDRESS/PREFIX, e.g. 10.0.0.0/8 or 2001:db8::/32";
                report.problem(at.file, at.label, field, e.to_string(), fix);
                ok = false;
            }
            Err(what) => {
                report.problem(at.file, at.label, field, what, "write each network as text");
                ok = false;
            }
        }
    }
    ok.then(|| SourceFilter::new(networks))
}

/// Seconds from `60`, `"90s"`, `"5m"`, `"1h"`; `None` for `off` (YAML 1.1 reads it as false).
fn duration_secs(value: &Value) -> Result<Option<u64>, String> {
    if let Ok(Some(false)) = boolean(value) {
        return Ok(None);
    }
    if let Ok(n) = whole_number(value) {
        return Ok(Some(n));
    }
    let bad = || format!("{} is not a duration", describe(value));
    let t = text(value, false).map_err(|_| bad())?;
    let t = t.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => return Err(bad()),
    };
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        _ => return Err(bad()),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    n.checked_mul(factor).map(Some).ok_or_else(bad)
}
