//! The benchmark driver: runs every scenario against sekoia-forwarder and against rsyslog
//! configured as the reference image, with the same generator and the same TLS sink, and
//! also measures the generator's and the sink's own ceilings. Prints a table, writes
//! `results.csv` and `run.json` (machine, versions) in `--out`.
//!
//! It fails loudly: a missing peer (rsyslogd, lmnsd_gtls, our binary) stops it before
//! anything runs; a process that dies, a generator error, or a TCP run whose sink did not get
//! exactly the events sent (each once) marks that run FAILED, without a rate, and the driver
//! exits 1 after the other runs (naming every failed part). UDP loss is a measurement.

mod peers;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bench::procstat;
use clap::Parser;
use peers::{Kind, Peer, Sink};
use report::Row;

#[derive(Parser, Debug)]
#[command(about = "sekoia-forwarder vs rsyslog (reference image) benchmark")]
struct Args {
    /// Our binary (release build).
    #[arg(long, default_value = "target/release/sekoia-forwarder")]
    forwarder: PathBuf,
    /// Temporary files (configs, logs, certificates); removed at the end unless --keep.
    #[arg(long, default_value = "bench/work")]
    work: PathBuf,
    /// Where results.csv and run.json go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Multiply every duration and event count by this (0.3 for a smoke run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Keep the work directory (logs of every process).
    #[arg(long)]
    keep: bool,
    /// Clients of the many-connections scenario.
    #[arg(long, default_value_t = 4000)]
    many: usize,
    /// Keep rsyslog's imtcp MaxSessions at the reference's default (200) in the
    /// many-connections scenario too (it then drops the clients past 200, and that run fails).
    #[arg(long)]
    reference_sessions: bool,
    /// Only our forwarder: no rsyslog rows and no ceilings (to compare builds of ours with
    /// `--forwarder`).
    #[arg(long)]
    ours_only: bool,
}

pub struct Ctx {
    bin_dir: PathBuf,
    forwarder: PathBuf,
    work: PathBuf,
    certs: bench::certs::CertFiles,
    next_dir: std::cell::Cell<u32>,
}

impl Ctx {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    pub fn fresh_dir(&self, label: &str) -> Result<PathBuf> {
        let n = self.next_dir.get() + 1;
        self.next_dir.set(n);
        let d = self.work.join(format!("{n:03}-{label}"));
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Load {
    Tcp { lf: bool },
    Udp,
}

/// One load, run against each target.
#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    what: String,
    load: Load,
    size: usize,
    connections: usize,
    spread: bool,
    /// Seconds of sending (with `events` None).
    duration: f64,
    events: Option<u64>,
    /// Events/s offered (0: as fast as accepted).
    rate: u64,
}

impl Scenario {
    fn loadgen_args(&self, port: u16, scale: f64) -> Vec<String> {
        let mut a = vec![
            "--target".into(),
            format!("127.0.0.1:{port}"),
            "--size".into(),
            self.size.to_string(),
            "--connections".into(),
            self.connections.to_string(),
        ];
        match self.load {
            Load::Tcp { lf } => {
                a.extend(["--proto".into(), "tcp".into(), "--framing".into()]);
                a.push(if lf { "lf" } else { "octet" }.into());
            }
            Load::Udp => a.extend(["--proto".into(), "udp".into()]),
        }
        match self.events {
            Some(n) => a.extend([
                "--events".into(),
                ((n as f64 * scale) as u64).max(1).to_string(),
            ]),
            None => a.extend(["--duration".into(), format!("{:.2}", self.duration * scale)]),
        }
        if self.rate > 0 {
            a.extend(["--rate".into(), self.rate.to_string()]);
        }
        if self.spread {
            a.push("--spread".into());
        }
        a
    }

    fn framing(&self) -> &'static str {
        match self.load {
            Load::Tcp { lf: false } => "octet",
            Load::Tcp { lf: true } => "lf",
            Load::Udp => "udp",
        }
    }
}

fn scenarios(many: usize) -> Vec<Scenario> {
    let tcp = |name, size, lf: bool| Scenario {
        name,
        what: format!(
            "TCP {size} B, {}, 4 connections, as fast as accepted",
            if lf { "LF" } else { "octet-counted" }
        ),
        load: Load::Tcp { lf },
        size,
        connections: 4,
        spread: false,
        duration: 6.0,
        events: None,
        rate: 0,
    };
    let udp = |name, rate: u64| Scenario {
        name,
        what: format!("UDP 300 B at {} events/s, 1 socket", rate),
        load: Load::Udp,
        size: 300,
        connections: 1,
        spread: false,
        duration: 5.0,
        events: None,
        rate,
    };
    vec![
        tcp("tcp-300-octet", 300, false),
        tcp("tcp-300-lf", 300, true),
        tcp("tcp-1200-octet", 1200, false),
        tcp("tcp-1200-lf", 1200, true),
        Scenario {
            name: "tcp-300-10k",
            what: "TCP 300 B, octet-counted, 4 connections at 10,000 events/s (latency below saturation)".into(),
            rate: 10_000,
            duration: 5.0,
            ..tcp("", 300, false)
        },
        udp("udp-300-20k", 20_000),
        udp("udp-300-100k", 100_000),
        Scenario {
            name: "tcp-many-conns",
            what: format!(
                "TCP 300 B, octet-counted, {many} clients from distinct 127.0.x.y, 50 events each"
            ),
            connections: many,
            spread: true,
            events: Some(50 * many as u64),
            ..tcp("", 300, false)
        },
    ]
}

/// The generator's and sink's own ceilings: same generator into a plain null reader, and
/// the generator speaking TLS straight into the sink (the role of the forwarders' uplink).
fn ceilings() -> Vec<(Scenario, &'static str, bool)> {
    let base = |name, size, what: &str| Scenario {
        name,
        what: what.to_string(),
        load: Load::Tcp { lf: false },
        size,
        connections: 4,
        spread: false,
        duration: 4.0,
        events: None,
        rate: 0,
    };
    vec![
        (
            base(
                "ceiling-300",
                300,
                "loadgen -> plain TCP reader (generator ceiling)",
            ),
            "loadgen->reader",
            true,
        ),
        (
            base(
                "ceiling-1200",
                1200,
                "loadgen -> plain TCP reader (generator ceiling)",
            ),
            "loadgen->reader",
            true,
        ),
        (
            Scenario {
                connections: 2,
                ..base(
                    "ceiling-300",
                    300,
                    "loadgen over TLS -> benchsink (sink ceiling)",
                )
            },
            "loadgen-tls->sink",
            false,
        ),
        (
            Scenario {
                connections: 2,
                ..base(
                    "ceiling-1200",
                    1200,
                    "loadgen over TLS -> benchsink (sink ceiling)",
                )
            },
            "loadgen-tls->sink",
            false,
        ),
    ]
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(0) => {}
        Ok(failed) => {
            eprintln!("\nbenchrun: FAILED: {failed} run(s) failed (see FAILED rows above)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("benchrun: FAILED: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Stops the run before anything starts when a peer is missing.
fn preflight(args: &Args, bin_dir: &Path) -> Result<()> {
    if !args.forwarder.is_file() {
        bail!(
            "our forwarder {} is missing: cargo build --release -p sekoia-forwarder",
            args.forwarder.display()
        );
    }
    for b in ["loadgen", "benchsink"] {
        if !bin_dir.join(b).is_file() {
            bail!(
                "{} is missing next to benchrun: cargo build --release -p bench",
                b
            );
        }
    }
    if !Path::new(peers::RSYSLOGD).is_file() {
        bail!(
            "rsyslogd is missing ({}): apt-get install rsyslog rsyslog-gnutls",
            peers::RSYSLOGD
        );
    }
    if !peers::GTLS_DRIVERS.iter().any(|p| Path::new(p).is_file()) {
        bail!("rsyslog's TLS driver lmnsd_gtls.so is missing: apt-get install rsyslog-gnutls");
    }
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    if (nofile.rlim_cur as usize) < args.many + 200 {
        bail!(
            "open-file limit {} is below the {} clients of the many-connections scenario: ulimit -n {}",
            nofile.rlim_cur,
            args.many,
            args.many * 2 + 1000
        );
    }
    Ok(())
}

fn run(args: &Args) -> Result<usize> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("benchrun's folder")?
        .to_path_buf();
    preflight(args, &bin_dir)?;
    let work = args.work.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;
    let certs = bench::certs::CertFiles::create(&work.join("certs"))?;
    let ctx = Ctx {
        bin_dir,
        forwarder: args.forwarder.canonicalize()?,
        work: work.clone(),
        certs,
        next_dir: Default::default(),
    };
    let machine = report::machine(&ctx.forwarder)?;
    eprintln!("{}", serde_json::to_string_pretty(&machine)?);
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));

    let mut rows: Vec<Row> = Vec::new();
    for (sc, label, plain) in ceilings() {
        if args.ours_only || (!wanted(sc.name) && !wanted("ceiling")) {
            continue;
        }
        eprintln!("== {} [{label}]: {}", sc.name, sc.what);
        let row = run_ceiling(&ctx, &sc, label, plain, args.scale)
            .unwrap_or_else(|e| Row::failed(sc.name, label, &sc, format!("{e:#}")));
        report::print_row(&row);
        rows.push(row);
    }
    for sc in scenarios(args.many) {
        if !wanted(sc.name) {
            continue;
        }
        eprintln!("== {}: {}", sc.name, sc.what);
        let kinds: &[Kind] = if args.ours_only {
            &[Kind::Ours]
        } else {
            &[Kind::Ours, Kind::Rsyslog]
        };
        for &kind in kinds {
            let row = run_peer(&ctx, &sc, kind, args)
                .unwrap_or_else(|e| Row::failed(sc.name, kind.label(), &sc, format!("{e:#}")));
            report::print_row(&row);
            rows.push(row);
        }
    }
    for relp in relp_scenarios() {
        if !wanted(relp.name) {
            continue;
        }
        eprintln!("== {}: {}", relp.name, relp.what);
        for output in [Output::Tls, Output::Relp] {
            let label = output.label();
            let row = run_output(&ctx, &relp, output, args.scale)
                .unwrap_or_else(|e| Row::failed(relp.name, label, &relp, format!("{e:#}")));
            report::print_row(&row);
            rows.push(row);
        }
    }
    let backlog = backlog_scenario();
    if wanted(backlog.name) {
        eprintln!("== {}: {}", backlog.name, backlog.what);
        let row = run_backlog(&ctx, &backlog, args.scale).unwrap_or_else(|e| {
            Row::failed(backlog.name, Kind::Ours.label(), &backlog, format!("{e:#}"))
        });
        report::print_row(&row);
        rows.push(row);
    }
    std::fs::create_dir_all(&args.out)?;
    report::write_csv(&args.out.join("results.csv"), &rows)?;
    std::fs::write(
        args.out.join("run.json"),
        serde_json::to_string_pretty(&machine)? + "\n",
    )?;
    println!("{}", report::table(&rows));
    if !args.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(rows.iter().filter(|r| r.failure.is_some()).count())
}

fn run_ceiling(ctx: &Ctx, sc: &Scenario, label: &str, plain: bool, scale: f64) -> Result<Row> {
    let sink = Sink::start(ctx, plain, false)?;
    let mut args = sc.loadgen_args(sink.port, scale);
    if !plain {
        args.extend(["--tls-ca".into(), ctx.certs.ca.display().to_string()]);
    }
    let gen = peers::run_loadgen(ctx, &args, Duration::from_secs(120))?;
    let got = sink.finish(gen["sent"].as_u64().unwrap_or(0))?;
    Row::measured(sc.name, label, sc, &gen, &got, None, true)
}

fn run_peer(ctx: &Ctx, sc: &Scenario, kind: Kind, args: &Args) -> Result<Row> {
    let scale = args.scale;
    let udp = sc.load == Load::Udp;
    let sink = Sink::start(ctx, false, false)?;
    // The reference's imtcp accepts 200 sessions (MaxSessions default); the many-connections
    // scenario raises it for rsyslog, or every client past 200 would be dropped.
    let sessions = if sc.spread && !args.reference_sessions {
        args.many + 100
    } else {
        0
    };
    let mut peer = Peer::start(ctx, kind, udp, sink.port, sessions)?;
    let pids = peer.pids.clone();
    let sampler = procstat::MemorySampler::start(pids.clone(), peer.shm.clone());
    let cpu0 = procstat::cpu_us(&pids);
    let gen = peers::run_loadgen(
        ctx,
        &sc.loadgen_args(peer.port, scale),
        Duration::from_secs(180),
    );
    let gen = match gen {
        Ok(g) => g,
        Err(e) => {
            let alive = peer.check_alive().err();
            bail!(
                "{e:#}{}",
                alive.map(|a| format!("\nalso: {a:#}")).unwrap_or_default()
            );
        }
    };
    let got = sink.finish(gen["sent"].as_u64().unwrap_or(0))?;
    peer.check_alive()?;
    let cpu = procstat::cpu_us(&pids).saturating_sub(cpu0);
    let rss = procstat::peak_rss(&pids);
    let peaks = sampler.finish();
    let usage = report::Usage {
        cpu_us: cpu,
        rss,
        pss: peaks.pss,
        shm: peer.shm.is_some().then_some(peaks.shm),
    };
    peer.stop();
    let mut row = Row::measured(sc.name, kind.label(), sc, &gen, &got, Some(usage), !udp)?;
    if kind == Kind::Rsyslog && sessions > 0 {
        let raised = format!("imtcp MaxSessions raised to {sessions} (reference: 200)");
        row.note = if row.note.is_empty() {
            raised
        } else {
            format!("{raised}; {}", row.note)
        };
    }
    Ok(row)
}

/// Our two outputs, for the RELP scenario.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Tls,
    Relp,
}

impl Output {
    fn label(self) -> &'static str {
        match self {
            Output::Tls => "sekoia-forwarder TLS output",
            Output::Relp => "sekoia-forwarder RELP output",
        }
    }
}

/// Our two outputs under the same load: as fast as accepted, and at 10,000 events/s (below
/// both ceilings, so that the CPU per event compares the outputs and not a journal spill).
fn relp_scenarios() -> Vec<Scenario> {
    let outputs = "the TLS output straight to the sink vs the RELP output to rsyslog imrelp \
                   (TLS, OpenSSL), which relays to the sink over plain TCP";
    let base = Scenario {
        name: "relp-300-octet",
        what: format!(
            "ours only: TCP 300 B, octet-counted, 4 connections, as fast as accepted; {outputs}"
        ),
        load: Load::Tcp { lf: false },
        size: 300,
        connections: 4,
        spread: false,
        duration: 6.0,
        events: None,
        rate: 0,
    };
    vec![
        base.clone(),
        Scenario {
            name: "relp-300-10k",
            what: format!(
                "ours only: TCP 300 B, octet-counted, 4 connections at 10,000 events/s; {outputs}"
            ),
            rate: 10_000,
            ..base
        },
    ]
}

/// One run of the RELP scenario with `output`. CPU and memory are our process tree's only
/// (the relay's CPU per event is in the note).
fn run_output(ctx: &Ctx, sc: &Scenario, output: Output, scale: f64) -> Result<Row> {
    let sink = Sink::start(ctx, output == Output::Relp, false)?;
    let relay = match output {
        Output::Tls => None,
        Output::Relp => Some(peers::RelpRelay::start(ctx, sink.port)?),
    };
    let mut peer = match &relay {
        None => Peer::start(ctx, Kind::Ours, false, sink.port, 0)?,
        Some(relay) => Peer::start_relp(ctx, relay.port)?,
    };
    let pids = peer.pids.clone();
    let relay_pids: Vec<i32> = relay.iter().map(|r| r.pid).collect();
    let sampler = procstat::MemorySampler::start(pids.clone(), peer.shm.clone());
    let (cpu0, relay_cpu0) = (procstat::cpu_us(&pids), procstat::cpu_us(&relay_pids));
    let gen = peers::run_loadgen(
        ctx,
        &sc.loadgen_args(peer.port, scale),
        Duration::from_secs(180),
    )?;
    let got = sink.finish(gen["sent"].as_u64().unwrap_or(0))?;
    peer.check_alive()?;
    let cpu = procstat::cpu_us(&pids).saturating_sub(cpu0);
    let relay_cpu = procstat::cpu_us(&relay_pids).saturating_sub(relay_cpu0);
    let usage = report::Usage {
        cpu_us: cpu,
        rss: procstat::peak_rss(&pids),
        pss: sampler.finish().pss,
        shm: None,
    };
    peer.stop();
    let mut row = Row::measured(sc.name, output.label(), sc, &gen, &got, Some(usage), true)?;
    if output == Output::Relp {
        row.note = format!(
            "receiver: rsyslog imrelp relaying to the sink ({:.2} µs/event of its own CPU)",
            relay_cpu as f64 / row.delivered.max(1) as f64
        );
    }
    Ok(row)
}

/// Events of the disk-backlog scenario (× scale).
const BACKLOG_EVENTS: u64 = 1_000_000;
/// The backlog scenario's `queue_size`: the ring takes 1,000 events, the rest spills.
const BACKLOG_QUEUE: u64 = 1_000;

fn backlog_scenario() -> Scenario {
    Scenario {
        name: "backlog-drain",
        what: format!(
            "ours only: {BACKLOG_EVENTS} TCP 300 B events (octet, 4 connections) sent with the sink down \
             and queue_size {BACKLOG_QUEUE} (nearly all spill to the journal), then the sink starts: \
             drain rate, CPU per event and peak PSS until every event arrived once"
        ),
        load: Load::Tcp { lf: false },
        size: 300,
        connections: 4,
        spread: false,
        duration: 0.0,
        events: Some(BACKLOG_EVENTS),
        rate: 0,
    }
}

/// Fill with the sink down, then start it and time the drain. Ours only: rsyslog's disk
/// queue is a different mechanism (disk-assisted only once its in-memory queue is full, and
/// the reference's queues are LinkedList with queue files at shutdown), so the same load
/// would not measure the same thing.
fn run_backlog(ctx: &Ctx, sc: &Scenario, scale: f64) -> Result<Row> {
    let sink_port = peers::free_port()?;
    let queue = format!("  queue_size: {BACKLOG_QUEUE}\n");
    let mut peer = Peer::start_with(ctx, Kind::Ours, false, sink_port, 0, &queue)?;
    let pids = peer.pids.clone();
    let sampler = procstat::MemorySampler::start(pids.clone(), peer.shm.clone());
    let fill_cpu0 = procstat::cpu_us(&pids);
    let gen = peers::run_loadgen(
        ctx,
        &sc.loadgen_args(peer.port, scale),
        Duration::from_secs(300),
    )?;
    let sent = gen["sent"].as_u64().unwrap_or(0);
    // Let the ingest worker finish what the sockets still hold: the journal then has it all.
    let journal = peer.dir.join("spool");
    let mut last = 0;
    peers::wait_until(Duration::from_secs(30), || {
        let now = procstat::allocated_bytes(&journal);
        let settled = now == last && now > 0;
        last = now;
        std::thread::sleep(Duration::from_millis(200));
        settled
    });
    let journal_bytes = procstat::allocated_bytes(&journal);
    peer.check_alive()?;
    let cpu0 = procstat::cpu_us(&pids);
    let fill_cpu = cpu0.saturating_sub(fill_cpu0);
    // The uplink reconnects with back-off (at most 30 s between attempts): wait that long.
    let sink = Sink::start_on(ctx, false, false, sink_port, Some(40_000))?;
    let got = sink.finish(sent)?;
    peer.check_alive()?;
    let cpu = procstat::cpu_us(&pids).saturating_sub(cpu0);
    let rss = procstat::peak_rss(&pids);
    let peaks = sampler.finish();
    peer.stop();
    let usage = report::Usage {
        cpu_us: cpu,
        rss,
        pss: peaks.pss,
        shm: Some(peaks.shm),
    };
    let mut row = Row::measured(
        sc.name,
        Kind::Ours.label(),
        sc,
        &gen,
        &got,
        Some(usage),
        true,
    )?;
    // The drain: first to last arrival at the sink (the uplink's reconnect back-off before
    // the first arrival is not the drain's speed).
    let n = |k: &str| got[k].as_u64().unwrap_or(0);
    let drain_s = n("last_ns").saturating_sub(n("first_ns")) as f64 / 1e9;
    row.events_per_s = (drain_s > 0.0).then(|| row.delivered as f64 / drain_s);
    // Latency here is the time spent queued with the sink down: not comparable.
    row.p50_ms = None;
    row.p99_ms = None;
    row.note = format!(
        "{}drain from the journal ({:.0} MiB on disk after the fill; fill CPU {:.2} µs/event); ours only: rsyslog's disk queue works differently",
        if row.note.is_empty() {
            String::new()
        } else {
            format!("{}; ", row.note)
        },
        journal_bytes as f64 / (1024.0 * 1024.0),
        fill_cpu as f64 / sent.max(1) as f64,
    );
    Ok(row)
}
