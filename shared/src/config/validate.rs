//! Turning raw entries into [`Intake`]s and the [`StatsIntake`], collecting every problem.
//!
//! Per entry: fields known or warned about (with the closest known name suggested), required
//! fields present, each value of the right kind and range. Across entries: one monitoring
//! entry at most, no port used twice in the same port space (tcp and tls share TCP), no two
//! names giving the same metric name. The default `queue_size` is
//! `round(MEMORY_MESSAGES / number of entries)`, the monitoring entry included, rounded half
//! to even like Python's `round` in the reference, and at least 1.

use std::collections::HashMap;

use crate::config::entry::{read_entry, Draft, Report};
use crate::config::intakes::RawEntry;
use crate::config::problem::Problem;
use crate::config::{metric_name, Intake, Settings, StatsIntake};

/// Result of validating every entry. With problems, `intakes` holds the entries that passed
/// their own checks (a configuration that must not run, but whose machine checks can).
#[derive(Debug, Default)]
pub(crate) struct Built {
    pub intakes: Vec<Intake>,
    pub stats: Option<StatsIntake>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

pub(crate) fn build(entries: &[RawEntry], settings: &Settings) -> Built {
    let mut built = Built::default();
    let mut report = Report { built: &mut built };
    let mut drafts: Vec<Draft<'_>> = Vec::with_capacity(entries.len());
    // Whether each draft passed its own checks: only those become intakes, so that a
    // configuration with problems still yields the intakes `check` can go on testing.
    let mut clean: Vec<bool> = Vec::with_capacity(entries.len());
    for entry in entries {
        let before = report.built.problems.len();
        if let Some(draft) = read_entry(
            entry,
            &settings.certs_dir,
            &settings.destination,
            &mut report,
        ) {
            clean.push(report.built.problems.len() == before);
            drafts.push(draft);
        }
    }
    check_across(&drafts, &mut report);
    let default_queue = default_queue_size(settings.memory_messages, entries.len());
    for (draft, _) in drafts.into_iter().zip(clean).filter(|(_, clean)| *clean) {
        let queue_size = draft.queue_size.unwrap_or(default_queue);
        let (Some(name), Some(intake_key)) = (draft.name, draft.intake_key) else {
            continue; // unreachable: a missing field is a problem
        };
        if draft.stats {
            built.stats = Some(StatsIntake {
                name,
                intake_key,
                queue_size,
                position: built.intakes.len(),
                destination: draft.destination,
            });
        } else if let (Some(protocol), Some(port)) = (draft.protocol, draft.port) {
            let Ok(id) = u16::try_from(built.intakes.len()) else {
                continue; // unreachable: counted in check_across
            };
            built.intakes.push(Intake {
                id,
                metric_name: metric_name(&name),
                name,
                protocol,
                port,
                intake_key,
                debug: draft.debug,
                queue_size,
                tls: draft.tls,
                limits: draft.limits,
                destination: draft.destination,
                source: draft.file.to_path_buf(),
            });
        }
    }
    built
}

/// `round(memory / entries)` with Python's half-to-even rounding, at least 1.
pub(crate) fn default_queue_size(memory_messages: u64, entries: usize) -> u64 {
    let n = (entries as u64).max(1);
    let (q, r) = (memory_messages / n, memory_messages % n);
    let rounded = match (2 * r).cmp(&n) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q % 2),
        std::cmp::Ordering::Less => q,
    };
    rounded.max(1)
}

fn check_across(drafts: &[Draft<'_>], report: &mut Report<'_>) {
    let mut stats_seen: Option<&Draft<'_>> = None;
    let mut ports: HashMap<(bool, u16), &Draft<'_>> = HashMap::new();
    let mut metrics: HashMap<String, &Draft<'_>> = HashMap::new();
    let mut port_intakes = 0usize;
    for d in drafts {
        let elsewhere = |other: &Draft<'_>| {
            let name = other.name.as_deref().unwrap_or(&other.label);
            format!("\"{name}\" in {}", other.file.display())
        };
        if d.stats {
            if let Some(first) = stats_seen {
                let what = format!(
                    "a second monitoring entry; the first is {}",
                    elsewhere(first)
                );
                let fix = "keep only one entry with `stats: true`";
                report.problem(d.file, &d.label, "stats", what, fix);
            } else {
                stats_seen = Some(d);
            }
        } else {
            port_intakes += 1;
            if port_intakes == usize::from(u16::MAX) + 1 {
                let what = "more than 65535 intakes".to_string();
                report.problem(
                    d.file,
                    &d.label,
                    "port",
                    what,
                    "split them over several forwarders",
                );
            }
        }
        if let (Some(protocol), Some(port)) = (d.protocol, d.port) {
            if let Some(first) = ports.get(&(protocol.is_stream(), port)) {
                let space = if protocol.is_stream() {
                    "TCP (tcp and tls)"
                } else {
                    "UDP"
                };
                let what = format!(
                    "{space} port {port} is already used by {}",
                    elsewhere(first)
                );
                report.problem(
                    d.file,
                    &d.label,
                    "port",
                    what,
                    "give each intake its own port",
                );
            } else {
                ports.insert((protocol.is_stream(), port), d);
            }
        }
        if let Some(name) = &d.name {
            let metric = metric_name(name);
            if let Some(first) = metrics.get(&metric) {
                let what = format!(
                    "gives the same metric name `{metric}` as {} (spaces become '_', case is ignored)",
                    elsewhere(first)
                );
                report.problem(
                    d.file,
                    &d.label,
                    "name",
                    what,
                    "give each intake a distinct name",
                );
            } else {
                metrics.insert(metric, d);
            }
        }
    }
}
