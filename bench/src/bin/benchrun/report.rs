//! One result row per (scenario, target), the checks that decide whether a run counts, and
//! the outputs: a console table with our/rsyslog ratios, `results.csv`, the machine record.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::Scenario;

#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub target: String,
    pub what: String,
    pub framing: &'static str,
    pub size: usize,
    pub connections: usize,
    pub rate_offered: u64,
    pub sent: u64,
    pub delivered: u64,
    pub loss_pct: Option<f64>,
    /// Events/s from the first send to the last arrival; None for a run that lost events.
    pub events_per_s: Option<f64>,
    /// Events/s the generator sent at.
    pub send_rate: Option<f64>,
    pub cpu_us_per_event: Option<f64>,
    /// Σ VmHWM over the peer's processes (shared pages counted in each).
    pub peak_rss_mib: Option<f64>,
    /// Peak of Σ Pss over the peer's processes, sampled every 50 ms (shared pages once).
    pub peak_pss_mib: Option<f64>,
    /// Peak allocation of our rings in /dev/shm (ours only), sampled with the PSS.
    pub peak_shm_mib: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub failure: Option<String>,
    pub note: String,
}

impl Row {
    fn base(scenario: &str, target: &str, sc: &Scenario) -> Self {
        Self {
            scenario: scenario.to_string(),
            target: target.to_string(),
            what: sc.what.clone(),
            framing: sc.framing(),
            size: sc.size,
            connections: sc.connections,
            rate_offered: sc.rate,
            sent: 0,
            delivered: 0,
            loss_pct: None,
            events_per_s: None,
            send_rate: None,
            cpu_us_per_event: None,
            peak_rss_mib: None,
            peak_pss_mib: None,
            peak_shm_mib: None,
            p50_ms: None,
            p99_ms: None,
            failure: None,
            note: String::new(),
        }
    }

    pub fn failed(scenario: &str, target: &str, sc: &Scenario, why: String) -> Self {
        Self {
            failure: Some(why),
            ..Self::base(scenario, target, sc)
        }
    }

    /// Checks the sink's count against the generator's and computes the figures. `strict`
    /// (TCP): anything but exactly the events sent, each once, is an error. Otherwise (UDP)
    /// missing events are loss; duplicates or garbage are still errors.
    pub fn measured(
        scenario: &str,
        target: &str,
        sc: &Scenario,
        gen: &serde_json::Value,
        got: &serde_json::Value,
        usage: Option<Usage>,
        strict: bool,
    ) -> Result<Self> {
        let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
        let sent = n(gen, "sent");
        let unique = n(got, "unique");
        if sent == 0 {
            bail!("the generator sent nothing");
        }
        let garbage = ["duplicates", "malformed", "out_of_range", "framing_errors"]
            .iter()
            .filter(|k| n(got, k) > 0)
            .map(|k| format!("{k}={}", n(got, k)))
            .collect::<Vec<_>>();
        if !garbage.is_empty() {
            let examples = match got["duplicate_examples"].as_array() {
                Some(seqs) if !seqs.is_empty() => format!(
                    "; first duplicated sequence numbers: {}",
                    seqs.iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                _ => String::new(),
            };
            bail!(
                "sink saw {} (sent {sent}, unique {unique}){examples}",
                garbage.join(" ")
            );
        }
        if strict && unique != sent {
            bail!(
                "delivered {unique} of {sent} events sent ({} missing; sink stopped: {})",
                sent.saturating_sub(unique),
                got["reason"].as_str().unwrap_or("?")
            );
        }
        let mut row = Self::base(scenario, target, sc);
        row.sent = sent;
        row.delivered = unique;
        let lost = sent.saturating_sub(unique);
        row.loss_pct = Some(lost as f64 * 100.0 / sent as f64);
        let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e9;
        let gen_secs = secs(n(gen, "start_ns"), n(gen, "end_ns"));
        if gen_secs > 0.0 {
            row.send_rate = Some(sent as f64 / gen_secs);
        }
        let e2e = secs(n(gen, "start_ns"), n(got, "last_ns"));
        if lost == 0 && e2e > 0.0 {
            row.events_per_s = Some(unique as f64 / e2e);
        }
        if let Some(u) = usage {
            if unique > 0 {
                row.cpu_us_per_event = Some(u.cpu_us as f64 / unique as f64);
            }
            row.peak_rss_mib = Some(mib(u.rss));
            row.peak_pss_mib = Some(mib(u.pss));
            row.peak_shm_mib = u.shm.map(mib);
        }
        let late = n(got, "after_stop_bytes");
        if late > 0 {
            row.note = format!("sink ignored {late} bytes re-sent after it stopped counting");
        }
        if n(got, "latency_count") > 0 {
            row.p50_ms = Some(n(got, "p50_us") as f64 / 1000.0);
            row.p99_ms = Some(n(got, "p99_us") as f64 / 1000.0);
        }
        Ok(row)
    }
}

/// What a peer used during one run.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// CPU µs of the whole tree over the run.
    pub cpu_us: u64,
    /// Σ VmHWM, bytes.
    pub rss: u64,
    /// Peak Σ Pss, bytes.
    pub pss: u64,
    /// Peak allocation of the rings' directory, bytes (ours only).
    pub shm: Option<u64>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

pub fn print_row(r: &Row) {
    match &r.failure {
        Some(why) => eprintln!("   {:<20} FAILED: {why}", r.target),
        None => eprintln!(
            "   {:<20} {:>10} ev/s  {:>7} µs/ev  RSS {:>7} PSS {:>7} shm {:>5} MiB  p50 {:>8} ms  p99 {:>8} ms  loss {:>6} %  (sent {} at {} ev/s){}",
            r.target,
            opt(r.events_per_s, 0),
            opt(r.cpu_us_per_event, 2),
            opt(r.peak_rss_mib, 1),
            opt(r.peak_pss_mib, 1),
            opt(r.peak_shm_mib, 1),
            opt(r.p50_ms, 2),
            opt(r.p99_ms, 2),
            opt(r.loss_pct, 2),
            r.sent,
            opt(r.send_rate, 0),
            if r.note.is_empty() { String::new() } else { format!("  [{}]", r.note) }
        ),
    }
}

pub fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    let mut s = String::from(
        "scenario,target,framing,size,connections,rate_offered,sent,delivered,loss_pct,events_per_s,send_rate,cpu_us_per_event,peak_rss_mib,peak_pss_mib,peak_shm_mib,p50_ms,p99_ms,status,note,description\n",
    );
    for r in rows {
        let status = match &r.failure {
            None => "ok".to_string(),
            Some(why) => format!("FAILED: {}", why.lines().next().unwrap_or("")),
        };
        let quote = |t: &str| format!("\"{}\"", t.replace('"', "'"));
        writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.scenario,
            r.target,
            r.framing,
            r.size,
            r.connections,
            r.rate_offered,
            r.sent,
            r.delivered,
            r.loss_pct.map(|v| format!("{v:.3}")).unwrap_or_default(),
            r.events_per_s
                .map(|v| format!("{v:.0}"))
                .unwrap_or_default(),
            r.send_rate.map(|v| format!("{v:.0}")).unwrap_or_default(),
            r.cpu_us_per_event
                .map(|v| format!("{v:.3}"))
                .unwrap_or_default(),
            r.peak_rss_mib
                .map(|v| format!("{v:.1}"))
                .unwrap_or_default(),
            r.peak_pss_mib
                .map(|v| format!("{v:.1}"))
                .unwrap_or_default(),
            r.peak_shm_mib
                .map(|v| format!("{v:.1}"))
                .unwrap_or_default(),
            r.p50_ms.map(|v| format!("{v:.3}")).unwrap_or_default(),
            r.p99_ms.map(|v| format!("{v:.3}")).unwrap_or_default(),
            quote(&status),
            quote(&r.note),
            quote(&r.what),
        )?;
    }
    std::fs::write(path, s)?;
    Ok(())
}

/// The console table: every row, then our/rsyslog ratios per scenario.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<16} {:<18} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "scenario",
        "target",
        "events/s",
        "CPU µs/ev",
        "RSS MiB",
        "PSS MiB",
        "p50 ms",
        "p99 ms",
        "loss %"
    );
    for r in rows {
        if let Some(why) = &r.failure {
            let _ = writeln!(
                s,
                "{:<16} {:<18} FAILED: {}",
                r.scenario,
                r.target,
                why.lines().next().unwrap_or("")
            );
            continue;
        }
        let _ = writeln!(
            s,
            "{:<16} {:<18} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            r.scenario,
            r.target,
            opt(r.events_per_s, 0),
            opt(r.cpu_us_per_event, 2),
            opt(r.peak_rss_mib, 1),
            opt(r.peak_pss_mib, 1),
            opt(r.p50_ms, 2),
            opt(r.p99_ms, 2),
            opt(r.loss_pct, 2),
        );
    }
    let _ = writeln!(
        s,
        "\nours / rsyslog   {:>10} {:>9} {:>9} {:>9} {:>9}   (events/s: higher is better; others: lower is better)",
        "events/s", "CPU/ev", "RSS", "PSS", "p99"
    );
    let find = |sc: &str, t: &str| {
        rows.iter()
            .find(|r| r.scenario == sc && r.target == t && r.failure.is_none())
    };
    let mut seen = Vec::new();
    for r in rows {
        if seen.contains(&r.scenario) {
            continue;
        }
        seen.push(r.scenario.clone());
        let (Some(o), Some(x)) = (
            find(&r.scenario, "sekoia-forwarder"),
            find(&r.scenario, "rsyslog"),
        ) else {
            continue;
        };
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<16} {:>10} {:>9} {:>9} {:>9} {:>9}{}",
            r.scenario,
            ratio(o.events_per_s, x.events_per_s),
            ratio(o.cpu_us_per_event, x.cpu_us_per_event),
            ratio(o.peak_rss_mib, x.peak_rss_mib),
            ratio(o.peak_pss_mib, x.peak_pss_mib),
            ratio(o.p99_ms, x.p99_ms),
            match (o.loss_pct, x.loss_pct) {
                (Some(a), Some(b)) if a + b > 0.0 => format!("   loss {a:.2} % vs {b:.2} %"),
                _ => String::new(),
            }
        );
    }
    s
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Where and with what the numbers were taken.
pub fn machine(forwarder: &Path) -> Result<serde_json::Value> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    Ok(serde_json::json!({
        "date_utc": first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "loadavg_at_start": read("/proc/loadavg"),
        "mem_total": cpuinfo_free(),
        "rsyslogd": first_line(crate::peers::RSYSLOGD, &["-v"]),
        "sekoia_forwarder": first_line(&forwarder.display().to_string(), &["--version"]),
        "source": first_line("git", &["describe", "--always", "--dirty"]),
    }))
}

fn cpuinfo_free() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
}
