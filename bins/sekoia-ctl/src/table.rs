//! `sekoia-ctl status` as aligned text: a header line, the intakes, the uplink, and a last
//! line that says plainly whether anything is being lost or is stuck.

use std::fmt::Write;

use sekoia_shared::control::status::{IntakeStatus, StatusReport, UplinkStatus, WorkerState};
use sekoia_shared::queue::intake::QueueSnapshot;

pub fn render(s: &StatusReport) -> String {
    let mut out = String::new();
    let f = &s.forwarder;
    let _ = writeln!(
        out,
        "sekoia-forwarder {}  pid {}  up {}  → {}{}",
        f.version,
        f.pid,
        duration(f.uptime_s),
        f.destination,
        if f.stopping { "  (stopping)" } else { "" }
    );
    let d = &s.disk;
    let bound = if d.limit_bytes < d.configured_bytes {
        format!(
            "{} (the spool's file system; DISK_SPACE is {})",
            bytes(d.limit_bytes),
            bytes(d.configured_bytes)
        )
    } else {
        bytes(d.limit_bytes)
    };
    let _ = writeln!(out, "disk journal: {} of {bound}\n", bytes(d.used_bytes));
    out.push_str(&intake_table(&s.intakes));
    out.push('\n');
    for u in uplinks(s) {
        out.push_str(&uplink_table(u, &s.intakes));
        out.push('\n');
    }
    out.push_str(&verdict(s));
    out
}

/// MEMORY and DISK: the backlog of the ring and of the journal, in events and bytes;
/// OLDEST: how long the oldest of them has waited.
const INTAKE_HEADER: [&str; 15] = [
    "INTAKE", "PROTO", "PORT", "STATE", "CONN", "IN/S", "RECEIVED", "SENT", "MEMORY", "DISK",
    "OLDEST", "DROPPED", "TRUNC", "ERRORS", "RESTARTS",
];

fn intake_table(intakes: &[IntakeStatus]) -> String {
    let rows = intakes.iter().map(|i| {
        let c = i.input.unwrap_or_default();
        let errors = c.read_errors + c.tls_handshake_failures + c.partial_discarded;
        let q = i.queue.unwrap_or_default();
        vec![
            i.name.clone(),
            i.protocol.clone(),
            i.port.to_string(),
            state(i.worker.state).to_string(),
            c.connections_open.to_string(),
            format!("{:.0}", i.received_per_s),
            c.received.to_string(),
            i.events_sent.to_string(),
            format!("{} ev {}", q.ring_events, bytes(q.ring_bytes)),
            format!("{} ev {}", q.journal_events, bytes(i.journal_bytes)),
            oldest(&q),
            c.dropped_full.to_string(),
            c.truncated.to_string(),
            errors.to_string(),
            i.worker.restarts.to_string(),
        ]
    });
    align(&INTAKE_HEADER, rows.collect())
}

/// One table per destination: its pool (BACKLOG: the events its intakes have queued, in
/// memory and on disk), then each connection.
const UPLINK_HEADER: [&str; 9] = [
    "UPLINK",
    "STATE",
    "CONN",
    "OUT/S",
    "SENT",
    "RESENT",
    "BACKLOG",
    "RESTARTS",
    "LAST ERROR",
];

/// Every destination's uplink (the single `uplink` of an older forwarder otherwise).
fn uplinks(s: &StatusReport) -> Vec<&UplinkStatus> {
    if s.uplinks.is_empty() {
        vec![&s.uplink]
    } else {
        s.uplinks.iter().collect()
    }
}

fn uplink_table(u: &UplinkStatus, intakes: &[IntakeStatus]) -> String {
    let c = u.counters.clone().unwrap_or_default();
    let backlog: u64 = intakes
        .iter()
        .filter(|i| u.destination.is_empty() || i.destination == u.destination)
        .filter_map(|i| i.queue.map(|q| q.ring_events + q.journal_events))
        .sum();
    let mut name = match u.destination.as_str() {
        "" => "pool".to_string(),
        d => format!("→ {d}"),
    };
    if c.relp_sessions > 0 {
        // RELP: events sent and not answered yet, and answered since the worker started.
        let _ = write!(
            name,
            " (RELP: {} unanswered, {} answered)",
            c.relp_window_in_use, c.relp_acknowledged
        );
    }
    let pool = vec![
        name,
        state(u.worker.state).to_string(),
        c.connections_up.to_string(),
        format!("{:.0}", u.sent_per_s),
        c.events_sent.to_string(),
        c.resent_events.to_string(),
        backlog.to_string(),
        u.worker.restarts.to_string(),
        c.last_error.clone().unwrap_or_else(|| "-".to_string()),
    ];
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rows = c.connections.iter().map(|conn| {
        let since = match conn.since_ms {
            0 => String::new(),
            ms => format!(" {}", duration(now_ms.saturating_sub(ms) / 1000)),
        };
        let state = if conn.up { "up" } else { "down" };
        vec![
            format!("conn {}", conn.id),
            format!("{state}{since}"),
            u64::from(conn.up).to_string(),
            format!(
                "{:.0}",
                u.connections_sent_per_s.get(conn.id).unwrap_or(&0.0)
            ),
            conn.events_sent.to_string(),
            conn.resent_events.to_string(),
            "-".to_string(),
            "-".to_string(),
            conn.last_error.clone().unwrap_or_else(|| "-".to_string()),
        ]
    });
    align(&UPLINK_HEADER, std::iter::once(pool).chain(rows).collect())
}

/// The one line that answers "is anything lost or stuck?".
fn verdict(s: &StatusReport) -> String {
    let dropped: u64 = s
        .intakes
        .iter()
        .filter_map(|i| i.input.map(|c| c.dropped_full))
        .sum();
    let down = s
        .intakes
        .iter()
        .map(|i| i.worker.state)
        .chain(uplinks(s).into_iter().map(|u| u.worker.state))
        .any(|st| !matches!(st, WorkerState::Running | WorkerState::Starting));
    let unconnected: Vec<&str> = uplinks(s)
        .into_iter()
        .filter(|u| u.counters.as_ref().is_none_or(|c| c.connections_up == 0))
        .map(|u| u.destination.as_str())
        .collect();
    let mut problems = Vec::new();
    if dropped > 0 {
        problems.push(format!("{dropped} events dropped (queue full)"));
    }
    if down {
        problems.push("a worker is not running".to_string());
    }
    match unconnected.as_slice() {
        [] => {}
        [""] => problems.push("no uplink connection: events are queued, not sent".to_string()),
        to => problems.push(format!(
            "no uplink connection to {}: its events are queued, not sent",
            to.join(", ")
        )),
    }
    if problems.is_empty() {
        "OK: nothing dropped, every worker running, uplink connected\n".to_string()
    } else {
        format!("ATTENTION: {}\n", problems.join("; "))
    }
}

/// Age of the oldest queued event: `-` when nothing is queued, `?` when it is not known
/// (queued by a previous worker).
fn oldest(q: &QueueSnapshot) -> String {
    match q.oldest_age_ms {
        Some(ms) if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => duration(ms / 1000),
        None if q.ring_events + q.journal_events == 0 => "-".to_string(),
        None => "?".to_string(),
    }
}

fn state(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Starting => "starting",
        WorkerState::Running => "running",
        WorkerState::Silent => "silent",
        WorkerState::Restarting => "restarting",
        WorkerState::Stopped => "stopped",
    }
}

/// Left-aligns the first column and the last text column, right-aligns the numbers.
fn align(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric = |col: usize| col > 0 && !matches!(header[col], "PROTO" | "STATE" | "LAST ERROR");
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (col, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            if col > 0 {
                l.push_str("  ");
            }
            if numeric(col) {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.push_str(&" ".repeat(pad));
            }
        }
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_numbers_are_right_aligned() {
        let text = align(
            &["INTAKE", "PORT"],
            vec![
                vec!["a".into(), "514".into()],
                vec!["long name".into(), "6514".into()],
            ],
        );
        assert_eq!(text, "INTAKE     PORT\na           514\nlong name  6514\n");
    }

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(32 * 1024 * 1024 * 1024), "32.0 GiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(7_380), "2h03m");
    }
}
