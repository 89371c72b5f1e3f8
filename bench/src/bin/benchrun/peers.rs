//! The processes a scenario starts: the sink, the forwarder under test (ours or rsyslog
//! configured as the reference image), and the load generator. Each is stopped by its pid
//! (and, for ours, the pids of its workers), never by name.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::procstat;

use crate::Ctx;

pub use sekoia_tests::rsyslog::RSYSLOGD;
use sekoia_tests::rsyslog::{reference_conf, ReferenceConf};
/// Where Debian's rsyslog-gnutls puts the TLS netstream driver.
pub const GTLS_DRIVERS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so",
    "/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so",
    "/usr/lib/rsyslog/lmnsd_gtls.so",
];
pub const INTAKE_KEY: &str = "BENCHINTAKEKEY0000000001";

/// Polls `check` every 20 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port free for TCP and UDP on 127.0.0.1 a moment ago, below the kernel's ephemeral range
/// and used by no socket at all (not even a connection's local end): a port the kernel hands
/// out with `bind(0)` can be the source port of an outgoing connection a moment later (the
/// uplink's, the generator's), and then the forwarder cannot listen on it.
pub fn free_port() -> Result<u16> {
    let (low, high) = (20_000u32, ephemeral_start().clamp(21_000, 60_000));
    let mut x = u32::from(std::process::id() as u16) ^ (procstat_nanos() as u32);
    for _ in 0..1000 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let port = (low + (x >> 8) % (high - low)) as u16;
        if !port_in_use(port)
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1")
}

fn procstat_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// First port of the kernel's ephemeral range (`ip_local_port_range`), 32768 by default.
fn ephemeral_start() -> u32 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Whether any TCP or UDP socket (any state) has `port` as its local port.
fn port_in_use(port: u16) -> bool {
    let want = format!(":{port:04X}");
    [
        "/proc/net/tcp",
        "/proc/net/tcp6",
        "/proc/net/udp",
        "/proc/net/udp6",
    ]
    .iter()
    .any(|file| {
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&want))
            })
    })
}

/// Whether something listens on 127.0.0.1:`port` (TCP LISTEN, or a bound UDP socket),
/// read from /proc/net so that probing does not send anything.
pub fn listening(port: u16, udp: bool) -> bool {
    let (files, state) = if udp {
        (["/proc/net/udp", "/proc/net/udp6"], "07")
    } else {
        (["/proc/net/tcp", "/proc/net/tcp6"], "0A")
    };
    let want = format!(":{port:04X}");
    files.iter().any(|file| {
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&want) && f[3] == state
            })
    })
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id() as i32, libc::SIGTERM);
    let stopped = wait_until(grace, || matches!(child.try_wait(), Ok(Some(_))));
    if !stopped {
        let _ = child.kill();
    }
    let _ = child.wait();
}

pub fn signal(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill(2) on one explicit pid we started.
        unsafe { libc::kill(pid, sig) };
    }
}

/// The benchmark sink, started and waiting for `expect N`.
pub struct Sink {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub port: u16,
}

impl Sink {
    /// `plain`: plain TCP (generator ceiling), else TLS with the bench certificates.
    pub fn start(ctx: &Ctx, plain: bool, lf: bool) -> Result<Self> {
        Self::start_on(ctx, plain, lf, 0, None)
    }

    /// As [`Sink::start`], on a given port (0: the kernel chooses), giving up after `idle_ms`
    /// without a new event (default 5 s).
    pub fn start_on(
        ctx: &Ctx,
        plain: bool,
        lf: bool,
        port: u16,
        idle_ms: Option<u64>,
    ) -> Result<Self> {
        let mut cmd = Command::new(ctx.bin("benchsink"));
        cmd.arg("--port").arg(port.to_string());
        if let Some(ms) = idle_ms {
            cmd.arg("--idle-ms").arg(ms.to_string());
        }
        if plain {
            cmd.arg("--plain");
        } else {
            cmd.arg("--cert")
                .arg(&ctx.certs.cert)
                .arg("--key")
                .arg(&ctx.certs.key);
        }
        if lf {
            cmd.arg("--lf");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start benchsink")?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("sink stdout")?);
        let mut first = String::new();
        stdout.read_line(&mut first)?;
        let port = serde_json::from_str::<serde_json::Value>(&first)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .with_context(|| format!("benchsink did not say its port: {first:?}"))?;
        Ok(Self {
            child,
            stdin,
            stdout,
            port: port as u16,
        })
    }

    /// Tells the sink how many events to wait for and returns its summary.
    pub fn finish(mut self, expected: u64) -> Result<serde_json::Value> {
        if let Some(mut stdin) = self.stdin.take() {
            writeln!(stdin, "expect {expected}").context("tell the sink")?;
            stdin.flush()?;
            // Keep stdin open until it answers: closing it would mean "stop now".
            let mut line = String::new();
            self.stdout.read_line(&mut line)?;
            drop(stdin);
            let _ = self.child.wait();
            return serde_json::from_str(&line)
                .with_context(|| format!("benchsink summary unreadable: {line:?}"));
        }
        bail!("sink already finished")
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stdin.take();
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Rsyslog,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ours => "sekoia-forwarder",
            Kind::Rsyslog => "rsyslog",
        }
    }
}

/// A forwarder under test listening on `port`, forwarding to the sink.
pub struct Peer {
    pub kind: Kind,
    child: Child,
    pub dir: PathBuf,
    pub shm: Option<PathBuf>,
    pub port: u16,
    /// The process tree when the load started (a changed tree means a process died).
    pub pids: Vec<i32>,
}

impl Peer {
    pub fn start(
        ctx: &Ctx,
        kind: Kind,
        udp: bool,
        sink_port: u16,
        sessions: usize,
    ) -> Result<Self> {
        Self::start_with(ctx, kind, udp, sink_port, sessions, "")
    }

    /// As [`Peer::start`]; `intake_yaml` is added to our intake's entry (e.g. `queue_size`).
    pub fn start_with(
        ctx: &Ctx,
        kind: Kind,
        udp: bool,
        sink_port: u16,
        sessions: usize,
        intake_yaml: &str,
    ) -> Result<Self> {
        Self::start_full(ctx, kind, udp, sink_port, sessions, intake_yaml, &[])
    }

    /// Ours with the RELP output (`RELP_OUTPUT`), to a RELP server on `relp_port`.
    pub fn start_relp(ctx: &Ctx, relp_port: u16) -> Result<Self> {
        Self::start_full(
            ctx,
            Kind::Ours,
            false,
            relp_port,
            0,
            "",
            &[("RELP_OUTPUT", "1")],
        )
    }

    fn start_full(
        ctx: &Ctx,
        kind: Kind,
        udp: bool,
        sink_port: u16,
        sessions: usize,
        intake_yaml: &str,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let port = free_port()?;
        let dir = ctx.fresh_dir(kind.label())?;
        let (child, shm) = match kind {
            Kind::Ours => start_ours(ctx, &dir, (udp, port, sink_port), intake_yaml, env)?,
            Kind::Rsyslog => (
                start_rsyslog(ctx, &dir, udp, port, sink_port, sessions)?,
                None,
            ),
        };
        let mut peer = Self {
            kind,
            child,
            dir,
            shm,
            port,
            pids: Vec::new(),
        };
        let ready = wait_until(Duration::from_secs(20), || peer.exited() || peer.ready(udp));
        if !ready || peer.exited() {
            bail!(
                "{} did not come up on port {port}; its log:\n{}",
                kind.label(),
                peer.log()
            );
        }
        // Take the process tree once it is whole (ours: supervisor, uplink and ingest worker).
        let whole = match kind {
            Kind::Ours => 3,
            Kind::Rsyslog => 1,
        };
        wait_until(Duration::from_secs(10), || {
            procstat::tree(peer.pid()).len() >= whole
        });
        peer.pids = procstat::tree(peer.pid());
        Ok(peer)
    }

    fn ready(&self, udp: bool) -> bool {
        match self.kind {
            Kind::Ours => self.log().contains("ingest worker serving") && listening(self.port, udp),
            Kind::Rsyslog => listening(self.port, udp),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Fails when the process tree is not the one the load started with (a process died or a
    /// worker was restarted).
    pub fn check_alive(&mut self) -> Result<()> {
        if self.exited() {
            bail!(
                "{} exited during the run; log:\n{}",
                self.kind.label(),
                tail(&self.log())
            );
        }
        let now = procstat::tree(self.pid());
        if now != self.pids {
            bail!(
                "{} processes changed during the run (a worker died?): {:?} -> {:?}; log:\n{}",
                self.kind.label(),
                self.pids,
                now,
                tail(&self.log())
            );
        }
        Ok(())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Only the workers alive now, under our supervisor, each with its start time: once
        // the supervisor is gone a dead worker's pid may belong to another process.
        let workers: Vec<(i32, Option<u64>)> = procstat::tree(self.pid())
            .into_iter()
            .filter(|&p| p != self.pid())
            .map(|p| (p, procstat::start_time(p)))
            .collect();
        stop_child(&mut self.child, Duration::from_secs(10));
        for (w, started) in workers {
            // Workers die with their supervisor (PDEATHSIG); this is for one that did not.
            let same = started.is_some() && procstat::start_time(w) == started;
            if same && procstat::stat(w).is_some_and(|s| s.0 != 'Z') {
                signal(w, libc::SIGKILL);
            }
        }
        if let Some(shm) = self.shm.take() {
            let _ = fs::remove_dir_all(shm);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn log_files(dir: &Path) -> Result<(fs::File, fs::File)> {
    Ok((
        fs::File::create(dir.join("stdout.log"))?,
        fs::File::create(dir.join("stderr.log"))?,
    ))
}

/// `(udp, port, sink_port)`: the intake and where the uplink sends.
fn start_ours(
    ctx: &Ctx,
    dir: &Path,
    (udp, port, sink_port): (bool, u16, u16),
    intake_yaml: &str,
    env: &[(&str, &str)],
) -> Result<(Child, Option<PathBuf>)> {
    let yaml = format!(
        "intakes:\n- name: Bench\n  protocol: {}\n  port: {port}\n  intake_key: {INTAKE_KEY}\n{intake_yaml}",
        if udp { "udp" } else { "tcp" }
    );
    let config = dir.join("intakes.yaml");
    fs::write(&config, yaml)?;
    for d in ["spool", "extended_conf"] {
        fs::create_dir_all(dir.join(d))?;
    }
    let shm_base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        dir.to_path_buf()
    };
    let shm = shm_base.join(format!(
        "sekoia-bench-{}-{}",
        std::process::id(),
        dir.file_name().and_then(|s| s.to_str()).unwrap_or("x")
    ));
    fs::create_dir_all(&shm)?;
    let (out, err) = log_files(dir)?;
    let child = Command::new(&ctx.forwarder)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TZ", "UTC")
        .env("RUST_LOG", "info")
        .arg("--config")
        .arg(&config)
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .arg("--shm-dir")
        .arg(&shm)
        .arg("--region")
        .arg("OTHER")
        .arg("--endpoint")
        .arg(format!("127.0.0.1:{sink_port}"))
        .arg("--ca-file")
        .arg(&ctx.certs.ca)
        .arg("--no-resolve")
        .arg("--control-socket")
        .arg(dir.join("control.sock"))
        .arg("--stats-file")
        .arg(dir.join("stats.log"))
        .arg("--extended-conf")
        .arg(dir.join("extended_conf"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("start {}", ctx.forwarder.display()))?;
    Ok((child, Some(shm)))
}

fn start_rsyslog(
    ctx: &Ctx,
    dir: &Path,
    udp: bool,
    port: u16,
    sink_port: u16,
    sessions: usize,
) -> Result<Child> {
    let work = dir.join("work");
    fs::create_dir_all(&work)?;
    let conf = dir.join("rsyslog.conf");
    fs::write(
        &conf,
        reference_conf(&ReferenceConf {
            work: &work,
            ca: &ctx.certs.ca,
            udp,
            port,
            sink_port,
            intake_key: INTAKE_KEY,
            max_sessions: sessions,
        }),
    )?;
    let (out, err) = log_files(dir)?;
    Command::new(RSYSLOGD)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("start rsyslogd")
}

/// rsyslog's RELP server (`imrelp`, TLS through OpenSSL with the bench certificates) relaying
/// every message as received, octet-counted over plain TCP, to the sink: the receiver of the
/// RELP scenario. Stopped by its pid.
pub struct RelpRelay {
    child: Child,
    pub port: u16,
    pub pid: i32,
}

impl RelpRelay {
    pub fn start(ctx: &Ctx, sink_port: u16) -> Result<Self> {
        let port = free_port()?;
        let dir = ctx.fresh_dir("imrelp")?;
        let work = dir.join("work");
        fs::create_dir_all(&work)?;
        let conf = dir.join("rsyslog.conf");
        fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" maxMessageSize="300k")
module(load="imrelp" tls.tlslib="openssl")
input(type="imrelp" port="{port}" maxDataSize="300k" tls="on" ruleset="relay"
      tls.cacert="{ca}" tls.mycert="{cert}" tls.myprivkey="{key}")
template(name="asReceived" type="string" string="%rawmsg%\n")
ruleset(name="relay") {{
  action(type="omfwd" target="127.0.0.1" port="{sink_port}" protocol="tcp"
         TCP_Framing="octet-counted" template="asReceived")
}}
"#,
                work = work.display(),
                ca = ctx.certs.ca.display(),
                cert = ctx.certs.cert.display(),
                key = ctx.certs.key.display(),
            ),
        )?;
        let (out, err) = log_files(&dir)?;
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("start rsyslogd with imrelp")?;
        let pid = child.id() as i32;
        let mut relay = Self { child, port, pid };
        if !wait_until(Duration::from_secs(15), || listening(port, false)) {
            relay.stop();
            bail!(
                "rsyslog imrelp did not listen on {port} (apt-get install rsyslog-relp); log:\n{}",
                tail(&fs::read_to_string(dir.join("stderr.log")).unwrap_or_default())
            );
        }
        Ok(relay)
    }

    pub fn stop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

impl Drop for RelpRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the load generator to completion (bounded by `limit`) and returns its report. Its
/// output goes to files (a pipe nobody reads while it runs could block it).
pub fn run_loadgen(ctx: &Ctx, args: &[String], limit: Duration) -> Result<serde_json::Value> {
    let dir = ctx.fresh_dir("loadgen")?;
    fs::write(dir.join("args"), args.join(" "))?;
    let (out, err) = log_files(&dir)?;
    let mut child = Command::new(ctx.bin("loadgen"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("start loadgen")?;
    let done = wait_until(limit, || matches!(child.try_wait(), Ok(Some(_))));
    let stderr = || fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    if !done {
        stop_child(&mut child, Duration::from_secs(1));
        bail!(
            "loadgen did not finish within {limit:?}: {}",
            tail(&stderr())
        );
    }
    let status = child.wait()?;
    let stdout = fs::read_to_string(dir.join("stdout.log")).unwrap_or_default();
    if !status.success() {
        bail!(
            "loadgen failed ({status}): {}{}",
            tail(&stderr()),
            stdout.trim()
        );
    }
    serde_json::from_str(stdout.trim())
        .with_context(|| format!("loadgen report unreadable: {stdout:?} {}", stderr()))
}
