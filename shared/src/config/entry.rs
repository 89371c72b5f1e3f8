//! Reading one raw entry: which fields it has (unknown ones are warnings, with the closest
//! known name suggested), whether each is present when required and of the right kind and
//! range, and, for tls intakes, where its files are. The result is a [`Draft`] whose `None`
//! fields were reported; checks across entries are `validate`'s.
//!
//! Rules: `name` (text, or a whole number) and `intake_key` are required everywhere;
//! `stats: true` makes the monitoring entry (no port; protocol, debug and tls fields are
//! ignored with a warning); other entries need `protocol` (tcp/udp/tls, any case) and `port`
//! (1..=65535). The intake key follows the reference's rule `^[a-zA-Z0-9]{16}` (its first
//! 16 characters are ASCII letters or digits; anything may follow) and must not hold `"`,
//! `\`, `]` or control characters, which would break the output's structured data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use crate::config::intakes::RawEntry;
use crate::config::limits::{self, IntakeLimits};
use crate::config::problem::Problem;
use crate::config::region::Destination;
use crate::config::route;
use crate::config::tls_client;
use crate::config::tls_files::{self, TlsFileKind};
use crate::config::validate::Built;
use crate::config::yaml11::{boolean, describe, text, whole_number};
use crate::config::{Protocol, TlsFiles};

const FIELDS: [&str; 14] = [
    "name",
    "protocol",
    "port",
    "intake_key",
    "debug",
    "queue_size",
    "tls_key_name",
    "tls_cert_name",
    "tls_ca_name",
    "stats",
    // tls_client.rs
    "tls_client_auth",
    "tls_max_handshakes",
    "tls_handshake_timeout",
    // read_proxy_protocol below
    "proxy_protocol",
];
const TLS_FIELDS: [&str; 6] = [
    "tls_key_name",
    "tls_cert_name",
    "tls_ca_name",
    // tls_client.rs
    "tls_client_auth",
    "tls_max_handshakes",
    "tls_handshake_timeout",
];
const KEY_FIX: &str = "copy the intake key again from the Intakes page of Sekoia.io";

/// An entry after its own checks; `None` fields were reported as problems.
pub(crate) struct Draft<'a> {
    pub file: &'a Path,
    pub label: String,
    pub name: Option<String>,
    pub stats: bool,
    pub protocol: Option<Protocol>,
    pub port: Option<u16>,
    pub intake_key: Option<String>,
    pub debug: bool,
    pub queue_size: Option<u64>,
    pub tls: Option<TlsFiles>,
    /// Connection limits and allow-list (`config/limits.rs`); defaults for the stats entry.
    pub limits: IntakeLimits,
    /// Where its events go (`config/route.rs`).
    pub destination: Destination,
}

/// Collects problems and warnings about one entry.
pub(crate) struct Report<'r> {
    pub built: &'r mut Built,
}

impl Report<'_> {
    pub(crate) fn problem(
        &mut self,
        file: &Path,
        label: &str,
        field: &str,
        what: String,
        fix: &str,
    ) {
        let p = Problem::in_entry(file, label, Some(field), what, fix);
        self.built.problems.push(p);
    }
    pub(crate) fn warning(
        &mut self,
        file: &Path,
        label: &str,
        field: &str,
        what: String,
        fix: String,
    ) {
        let w = Problem::in_entry(file, label, Some(field), what, fix);
        self.built.warnings.push(w);
    }
}

pub(crate) fn read_entry<'a>(
    raw: &'a RawEntry,
    certs_dir: &Path,
    default_destination: &Destination,
    report: &mut Report<'_>,
) -> Option<Draft<'a>> {
    let file = raw.file.as_path();
    let index_label = format!("#{}", raw.position);
    let Value::Mapping(mapping) = &raw.value else {
        let what = format!("the entry is {}, not a set of fields", describe(&raw.value));
        let fix = "write each intake as `- name: ...` followed by its fields, indented";
        report
            .built
            .problems
            .push(Problem::in_entry(file, &index_label, None, what, fix));
        return None;
    };
    let mut fields: HashMap<&str, &Value> = HashMap::new();
    let mut unknown = Vec::new();
    for (key, value) in mapping {
        let known = |k: &str| known_fields().find(|f| *f == k);
        match key.as_str().and_then(known) {
            // A field written but left empty (`debug:`) counts as absent.
            Some(known) if !value.is_null() => {
                fields.insert(known, value);
            }
            Some(_) => {}
            None => unknown.push(key.as_str().map_or_else(|| describe(key), str::to_string)),
        }
    }

    let name = match fields.get("name").map(|v| text(v, true)) {
        Some(Ok(name)) if !name.trim().is_empty() && !name.chars().any(char::is_control) => {
            Some(name)
        }
        Some(Ok(_)) => {
            let what = "the name is empty or holds control characters".to_string();
            report.problem(
                file,
                &index_label,
                "name",
                what,
                "give the intake a readable name",
            );
            None
        }
        Some(Err(what)) => {
            report.problem(file, &index_label, "name", what, "write the name as text");
            None
        }
        None => {
            let what = "is missing".to_string();
            report.problem(
                file,
                &index_label,
                "name",
                what,
                "add `name: ...` to the entry",
            );
            None
        }
    };
    let label = name.clone().unwrap_or(index_label);
    for field in unknown {
        let (what, fix) = unknown_field(&field);
        report.warning(file, &label, &field, what, fix);
    }

    let stats = flag(&fields, "stats", file, &label, report);
    let intake_key = intake_key(&fields, file, &label, report);
    let debug = flag(&fields, "debug", file, &label, report);
    let queue_size = match fields.get("queue_size").map(|v| whole_number(v)) {
        Some(Ok(0)) => {
            let fix = "use a number of messages of at least 1, or remove it for the default";
            report.problem(
                file,
                &label,
                "queue_size",
                "0 is too small".to_string(),
                fix,
            );
            None
        }
        Some(Ok(n)) => Some(n),
        Some(Err(what)) => {
            let fix = "use a whole number of messages, or remove it for the default share";
            report.problem(file, &label, "queue_size", what, fix);
            None
        }
        None => None,
    };
    let mut draft = Draft {
        file,
        label,
        name,
        stats,
        protocol: None,
        port: None,
        intake_key,
        debug,
        queue_size,
        tls: None,
        limits: IntakeLimits::default(),
        destination: default_destination.clone(),
    };
    if stats {
        read_stats_fields(&fields, &mut draft, report);
    } else {
        read_port_fields(&fields, certs_dir, &mut draft, report);
        let at = limits::At {
            file,
            label: &draft.label,
        };
        draft.limits = limits::read(&fields, draft.protocol, &at, report);
    }
    draft.limits.proxy_protocol = read_proxy_protocol(&fields, &draft, report);
    let at = limits::At {
        file,
        label: &draft.label,
    };
    draft.destination = route::read(&fields, default_destination, &at, report);
    Some(draft)
}

/// `proxy_protocol: true` (tcp and tls only): each connection starts with a PROXY protocol
/// header from a load balancer (`input/proxy_protocol.rs`). On udp or the monitoring entry it
/// is a problem, not a warning: the operator expects real sender addresses and would not get
/// them. Without `allowed_sources`, any host that reaches the port can claim any address: a
/// warning says so.
fn read_proxy_protocol(
    fields: &HashMap<&str, &Value>,
    draft: &Draft<'_>,
    report: &mut Report<'_>,
) -> bool {
    let field = "proxy_protocol";
    let (file, label) = (draft.file, draft.label.as_str());
    if !flag(fields, field, file, label, report) {
        return false;
    }
    if draft.stats {
        let what = "the monitoring entry (stats: true) receives no connections".to_string();
        report.problem(file, label, field, what, "remove `proxy_protocol`");
        return false;
    }
    if draft.protocol == Some(Protocol::Udp) {
        let what = "the PROXY protocol is for tcp and tls intakes; this one is udp".to_string();
        let fix = "remove `proxy_protocol`; to keep UDP senders' addresses behind a balancer, use one that does not rewrite them (IPVS, a Kubernetes Service with externalTrafficPolicy: Local; docs/scale-out.md)";
        report.problem(file, label, field, what, fix);
        return false;
    }
    if !fields.contains_key("allowed_sources") {
        let what =
            "any host that can reach this port can claim any sender address in a PROXY header"
                .to_string();
        let fix = "add `allowed_sources` listing your load balancers' addresses (docs/hostile-networks.md)".to_string();
        report.warning(file, label, field, what, fix);
    }
    true
}

pub(crate) fn unknown_field(field: &str) -> (String, String) {
    let lower = field.to_lowercase();
    let best = known_fields()
        .map(|known| (strsim::jaro_winkler(&lower, known), known))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let what = "unknown field, ignored".to_string();
    let fix = match best {
        Some((score, known)) if score >= 0.8 => format!("did you mean `{known}`?"),
        _ => {
            let all: Vec<&str> = known_fields().collect();
            format!("remove it; known fields are {}", all.join(", "))
        }
    };
    (what, fix)
}

/// Every field an entry may have.
fn known_fields() -> impl Iterator<Item = &'static str> {
    FIELDS
        .iter()
        .chain(limits::FIELDS.iter())
        .chain(route::FIELDS.iter())
        .copied()
}

fn flag(
    fields: &HashMap<&str, &Value>,
    field: &str,
    file: &Path,
    label: &str,
    report: &mut Report<'_>,
) -> bool {
    match fields.get(field).map(|v| boolean(v)) {
        Some(Ok(value)) => value.unwrap_or(false),
        Some(Err(what)) => {
            report.problem(file, label, field, what, "use true or false");
            false
        }
        None => false,
    }
}

fn intake_key(
    fields: &HashMap<&str, &Value>,
    file: &Path,
    label: &str,
    report: &mut Report<'_>,
) -> Option<String> {
    let key = match fields.get("intake_key").map(|v| text(v, false)) {
        None => {
            let fix = "add `intake_key: ...` with the key from the Intakes page of Sekoia.io";
            report.problem(file, label, "intake_key", "is missing".to_string(), fix);
            return None;
        }
        Some(Err(what)) => {
            report.problem(
                file,
                label,
                "intake_key",
                what,
                "write the key in quotes: intake_key: \"...\"",
            );
            return None;
        }
        Some(Ok(key)) => key,
    };
    let mut ok = true;
    if let Some(bad) = key
        .chars()
        .find(|c| matches!(c, '"' | '\\' | ']') || c.is_control())
    {
        let what = format!(
            "{} contains {bad:?}, which would break the structured data of every event",
            describe(&Value::String(key.clone()))
        );
        report.problem(file, label, "intake_key", what, KEY_FIX);
        ok = false;
    }
    let alnum_head = key.chars().take_while(char::is_ascii_alphanumeric).count();
    if alnum_head < 16 {
        let what = format!(
            "{} does not start with 16 letters or digits (A-Z, a-z, 0-9)",
            describe(&Value::String(key.clone()))
        );
        report.problem(file, label, "intake_key", what, KEY_FIX);
        ok = false;
    }
    ok.then_some(key)
}

fn read_stats_fields(
    fields: &HashMap<&str, &Value>,
    draft: &mut Draft<'_>,
    report: &mut Report<'_>,
) {
    let (file, label) = (draft.file, draft.label.clone());
    if fields.contains_key("port") {
        let what = "the monitoring entry (stats: true) does not listen on a port".to_string();
        let fix = "remove `port`, or remove `stats: true` if this is a regular intake";
        report.problem(file, &label, "port", what, fix);
    }
    let ignored = ["protocol", "debug"].iter().chain(TLS_FIELDS.iter());
    for field in ignored.chain(limits::FIELDS.iter()) {
        if fields.contains_key(field) {
            let what = "is ignored for the monitoring entry (stats: true)".to_string();
            report.warning(file, &label, field, what, "remove it".to_string());
        }
    }
}

fn read_port_fields(
    fields: &HashMap<&str, &Value>,
    certs_dir: &Path,
    draft: &mut Draft<'_>,
    report: &mut Report<'_>,
) {
    let (file, label) = (draft.file, draft.label.clone());
    draft.protocol = match fields.get("protocol").map(|v| text(v, false)) {
        None => {
            let fix =
                "add `protocol: tcp`, `udp` or `tls` (or `stats: true` for the monitoring entry)";
            report.problem(file, &label, "protocol", "is missing".to_string(), fix);
            None
        }
        Some(Ok(p)) => match Protocol::parse(&p) {
            Some(protocol) => Some(protocol),
            None => {
                let what = format!("{} is not a known protocol", describe(&Value::String(p)));
                report.problem(file, &label, "protocol", what, "use tcp, udp or tls");
                None
            }
        },
        Some(Err(what)) => {
            report.problem(file, &label, "protocol", what, "use tcp, udp or tls");
            None
        }
    };
    draft.port = match fields.get("port").map(|v| whole_number(v)) {
        None => {
            let fix = "add `port: N` with the port the senders use (1 to 65535)";
            report.problem(file, &label, "port", "is missing".to_string(), fix);
            None
        }
        Some(Ok(n)) => match u16::try_from(n) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                let what = format!("{n} is out of range");
                report.problem(file, &label, "port", what, "use a port between 1 and 65535");
                None
            }
        },
        Some(Err(what)) => {
            report.problem(
                file,
                &label,
                "port",
                what,
                "use a port number between 1 and 65535",
            );
            None
        }
    };
    if draft.protocol != Some(Protocol::Tls) {
        if let Some(protocol) = draft.protocol {
            for field in TLS_FIELDS.iter().filter(|f| fields.contains_key(**f)) {
                let what = format!("is ignored: the protocol is {protocol}, not tls");
                report.warning(
                    file,
                    &label,
                    field,
                    what,
                    "remove it, or set `protocol: tls`".to_string(),
                );
            }
        }
        return;
    }
    let mut locate = |kind: TlsFileKind| -> PathBuf {
        let name = match fields.get(kind.field).map(|v| text(v, false)) {
            Some(Ok(name)) if !name.trim().is_empty() => Some(name),
            Some(Ok(_)) => None,
            Some(Err(what)) => {
                report.problem(
                    file,
                    &label,
                    kind.field,
                    what,
                    "write the file name as text",
                );
                return certs_dir.join(kind.default);
            }
            None => None,
        };
        let (path, problem) = tls_files::locate(certs_dir, kind, name.as_deref());
        if let Some(what) = problem {
            let fix = format!(
                "put the {} in CERTS_DIR ({}) or name the file with `{}`",
                kind.what,
                certs_dir.display(),
                kind.field
            );
            report.problem(file, &label, kind.field, what, &fix);
        }
        path
    };
    let key = locate(tls_files::KEY);
    let cert = locate(tls_files::CERT);
    let ca = locate(tls_files::CA);
    // Client verification, handshake limits, key-file permissions: tls_client.rs.
    let handshake = tls_client::read(fields, file, &label, &key, report);
    draft.tls = Some(TlsFiles {
        key,
        cert,
        ca,
        handshake,
    });
}
