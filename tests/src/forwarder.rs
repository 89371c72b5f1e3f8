//! Starts the real `sekoia-forwarder` binary in a private sandbox (config file, spool, shared
//! memory and certificates in temporary folders), finds its worker processes, kills them, and
//! stops it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::wait_until;

/// The binary under test: `SEKOIA_FORWARDER_BIN`, else `target/<profile>/sekoia-forwarder`
/// next to this test executable (`cargo build` builds it before `cargo test` runs).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SEKOIA_FORWARDER_BIN") {
        return PathBuf::from(p);
    }
    built_binary("sekoia-forwarder")
}

/// `sekoia-ctl` from the same build.
pub fn ctl_binary() -> PathBuf {
    built_binary("sekoia-ctl")
}

fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        bin.display()
    );
    bin
}

pub struct ForwarderBuilder {
    yaml: String,
    env: Vec<(String, String)>,
    args: Vec<String>,
    sink_port: u16,
    ca_file: Option<PathBuf>,
    certs_dir: Option<PathBuf>,
    sandbox_mode: Option<u32>,
    spool: Option<PathBuf>,
}

impl ForwarderBuilder {
    pub fn new(intakes_yaml: &str, sink_port: u16) -> Self {
        Self {
            yaml: intakes_yaml.to_string(),
            env: Vec::new(),
            args: Vec::new(),
            sink_port,
            ca_file: None,
            certs_dir: None,
            sandbox_mode: None,
            spool: None,
        }
    }

    /// Mode of the sandbox folder (default 0700, tempfile's): 0755 lets a workers' user
    /// (`--user`) reach the spool folder inside it.
    pub fn sandbox_mode(mut self, mode: u32) -> Self {
        self.sandbox_mode = Some(mode);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn ca_file(mut self, p: &Path) -> Self {
        self.ca_file = Some(p.to_path_buf());
        self
    }

    pub fn certs_dir(mut self, p: &Path) -> Self {
        self.certs_dir = Some(p.to_path_buf());
        self
    }

    /// Uses `p` (which must exist: a file system the test mounted) as SPOOL_DIR instead of a
    /// directory in the sandbox.
    pub fn spool_dir(mut self, p: &Path) -> Self {
        self.spool = Some(p.to_path_buf());
        self
    }

    /// Starts it and waits until every worker said it serves.
    pub fn start(self) -> Forwarder {
        let dir = tempfile::tempdir().expect("sandbox");
        if let Some(mode) = self.sandbox_mode {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let shm = tempfile::Builder::new()
            .prefix("sekoia-test-")
            .tempdir_in(if Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("shm dir");
        let config = dir.path().join("intakes.yaml");
        fs::write(&config, &self.yaml).expect("write intakes.yaml");
        let spool = self
            .spool
            .clone()
            .unwrap_or_else(|| dir.path().join("spool"));
        fs::create_dir_all(&spool).expect("spool");
        fs::create_dir_all(dir.path().join("extended_conf")).expect("extended_conf");
        let mut f = Forwarder {
            child: None,
            config,
            spool,
            shm,
            dir,
            builder: self,
        };
        f.spawn();
        f
    }
}

pub struct Forwarder {
    child: Option<Child>,
    pub config: PathBuf,
    pub spool: PathBuf,
    pub shm: tempfile::TempDir,
    pub dir: tempfile::TempDir,
    builder: ForwarderBuilder,
}

impl Forwarder {
    fn command(&self) -> Command {
        let mut cmd = Command::new(binary());
        let b = &self.builder;
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TZ", "UTC")
            .env("RUST_LOG", "info")
            .env("RESOLVE_HOSTNAMES", "false")
            .arg("--config")
            .arg(&self.config)
            .arg("--spool-dir")
            .arg(&self.spool)
            .arg("--shm-dir")
            .arg(self.shm.path())
            .arg("--region")
            .arg("OTHER")
            .arg("--endpoint")
            .arg(format!("127.0.0.1:{}", b.sink_port))
            .arg("--control-socket")
            .arg(self.control_socket())
            .arg("--stats-file")
            .arg(self.dir.path().join("stats.log"))
            .arg("--extended-conf")
            .arg(self.dir.path().join("extended_conf"));
        if let Some(ca) = &b.ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        if let Some(c) = &b.certs_dir {
            cmd.arg("--certs-dir").arg(c);
        }
        for (k, v) in &b.env {
            cmd.env(k, v);
        }
        cmd.args(&b.args);
        cmd
    }

    /// Trust another CA at the next `spawn`.
    pub fn set_ca_file(&mut self, p: &Path) {
        self.builder.ca_file = Some(p.to_path_buf());
    }

    fn log_path(&self, which: &str) -> PathBuf {
        self.dir.path().join(which)
    }

    /// Starts the supervisor (again, after `kill9_all` or `terminate`).
    pub fn spawn(&mut self) {
        let stdout = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path("stdout.log"))
            .expect("stdout log");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path("stderr.log"))
            .expect("stderr log");
        let serving_before = self.stderr().matches("ingest worker serving").count();
        let intakes = self.builder.yaml.matches("port:").count();
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start sekoia-forwarder");
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(20), || {
            self.stderr().matches("ingest worker serving").count() >= serving_before + intakes
                || self.exited()
        });
        assert!(
            ready && !self.exited(),
            "forwarder did not come up\nstderr:\n{}",
            self.stderr()
        );
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(self.log_path("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.log_path("stderr.log")).unwrap_or_default()
    }

    /// Where the supervisor serves `sekoia-ctl` (in a folder it creates).
    pub fn control_socket(&self) -> PathBuf {
        self.dir.path().join("run").join("control.sock")
    }

    /// Runs `sekoia-ctl` against this forwarder; returns (success, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let (code, out, err) = self.ctl_code(args);
        (code == Some(0), out, err)
    }

    /// Runs `sekoia-ctl` against this forwarder; returns (exit code, stdout, stderr).
    pub fn ctl_code(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = Command::new(ctl_binary())
            .arg("--control-socket")
            .arg(self.control_socket())
            .args(args)
            .output()
            .expect("run sekoia-ctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Sends SIGHUP to the supervisor (a reload).
    pub fn sighup(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// Worker pids whose command line contains `needle` (e.g. `ingest-worker`,
    /// `--intake tcp-20516`).
    pub fn worker_pids(&self, needle: &str) -> Vec<i32> {
        children_of(self.pid() as i32)
            .into_iter()
            .filter(|pid| cmdline(*pid).contains(needle))
            .collect()
    }

    /// `kill -9` of the ingest worker of the intake on `queue` (`tcp-20516`); returns its pid.
    pub fn kill9_ingest(&self, queue: &str) -> i32 {
        let pids = self.worker_pids(&format!("ingest-worker --intake {queue}"));
        assert_eq!(
            pids.len(),
            1,
            "one ingest worker for intake {queue}: {pids:?}"
        );
        self.kill9_child(pids[0]);
        pids[0]
    }

    pub fn kill9_uplink(&self) -> i32 {
        let pids = self.worker_pids("uplink-worker");
        assert_eq!(pids.len(), 1, "one uplink worker: {pids:?}");
        self.kill9_child(pids[0]);
        pids[0]
    }

    /// SIGKILL to `pid` if it is a child of our supervisor (its start time is read first, so
    /// the check cannot pass for a process that took the pid afterwards).
    pub fn kill9_child(&self, pid: i32) {
        let worker = StartedProcess::of(pid);
        if children_of(self.pid() as i32).contains(&pid) {
            kill9_worker(worker);
        }
    }

    /// The payloads published in this instance's rings, read straight from the ring files
    /// (only valid while no ring has wrapped: asserted). This is what the ingest workers had
    /// handed over, whatever happened to them afterwards, except records in pages the
    /// producer has given back to the system since (hole punching, `docs/ring.md`): those
    /// were committed, so delivered, and read as zeros. The walk takes only records whose
    /// header decodes and whose CRC-32C verifies, and after anything else steps 8 bytes on
    /// until the next such record (a punched region ends mid-record).
    pub fn ring_payloads(&self) -> Vec<Vec<u8>> {
        use sekoia_shared::queue::record::{decode_header, verify, RecordKind, RECORD_HEADER_LEN};
        const OFF_CAPACITY: usize = 16;
        const OFF_HEAD: usize = 128;
        const HEADER_LEN: usize = 4096;
        let mut payloads = Vec::new();
        for path in find_files(self.shm.path(), "ring") {
            let bytes = fs::read(&path).expect("read ring file");
            let word =
                |off: usize| u64::from_le_bytes(bytes[off..off + 8].try_into().expect("u64"));
            let (capacity, head) = (word(OFF_CAPACITY), word(OFF_HEAD));
            assert!(
                head <= capacity,
                "{} wrapped: cannot list its content",
                path.display()
            );
            let data = &bytes[HEADER_LEN..HEADER_LEN + head as usize];
            let mut pos = 0;
            while pos + RECORD_HEADER_LEN <= data.len() {
                let raw: &[u8; RECORD_HEADER_LEN] = data[pos..pos + RECORD_HEADER_LEN]
                    .try_into()
                    .expect("header");
                let start = pos + RECORD_HEADER_LEN;
                let record = decode_header(raw).ok().filter(|h| {
                    pos as u64 + h.record_len() <= data.len() as u64
                        && match h.kind {
                            RecordKind::Data => verify(raw, &data[start..start + h.len as usize]),
                            RecordKind::Pad => verify(raw, &[]),
                        }
                });
                match record {
                    Some(h) => {
                        if h.kind == RecordKind::Data {
                            payloads.push(data[start..start + h.len as usize].to_vec());
                        }
                        pos += h.record_len() as usize;
                    }
                    None => pos += 8,
                }
            }
        }
        payloads
    }

    /// `kill -9` of the supervisor and every worker at once (a crash of everything, the host
    /// staying up: the shared memory remains).
    pub fn kill9_all(&mut self) {
        let mut child = self.child.take().expect("running");
        let workers = our_workers(child.id() as i32);
        let _ = child.kill();
        for w in &workers {
            kill9_worker(*w);
        }
        let _ = child.wait();
        wait_until(Duration::from_secs(10), || {
            workers.iter().all(|w| !w.is_alive())
        });
    }

    /// Removes the shared memory, as a reboot or a new container would.
    pub fn wipe_shared_memory(&self) {
        for e in fs::read_dir(self.shm.path()).expect("shm dir").flatten() {
            let _ = fs::remove_dir_all(e.path());
        }
    }

    /// SIGTERM to the supervisor; waits for its exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let mut status = None;
        wait_until(limit, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                panic!("forwarder did not stop within {limit:?}\n{}", self.stderr());
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let workers = our_workers(child.id() as i32);
            let _ = child.kill();
            let _ = child.wait();
            for w in workers {
                kill9_worker(w);
            }
        }
    }
}

/// Files under `dir` (recursively) whose extension is `ext`.
pub fn find_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find_files(&p, ext));
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
    out
}

/// A worker of a supervisor we started, as found in /proc: its pid and its start time (field
/// 22 of `/proc/<pid>/stat`). A worker that died is reaped by someone else (its supervisor, or
/// init once the supervisor is gone) and its pid may be given to an unrelated process: the
/// start time tells them apart, so the tests never signal a process they did not start.
#[derive(Clone, Copy, Debug)]
struct StartedProcess {
    pid: i32,
    started: Option<u64>,
}

impl StartedProcess {
    fn of(pid: i32) -> Self {
        Self {
            pid,
            started: stat_fields(pid).and_then(|f| f.get(19)?.parse().ok()),
        }
    }

    /// Still the same process, and not a zombie.
    fn is_alive(&self) -> bool {
        let now = stat_fields(self.pid);
        let same = now
            .as_ref()
            .and_then(|f| f.get(19)?.parse::<u64>().ok())
            .is_some_and(|t| Some(t) == self.started);
        same && now.is_some_and(|f| f.first().map(String::as_str) != Some("Z"))
    }
}

/// The live workers of supervisor `pid`.
fn our_workers(pid: i32) -> Vec<StartedProcess> {
    children_of(pid)
        .into_iter()
        .map(StartedProcess::of)
        .collect()
}

/// SIGKILL to `p`, only if it is still the process that was found.
fn kill9_worker(p: StartedProcess) {
    if p.is_alive() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The fields of `/proc/<pid>/stat` after the command name: [0] state, [1] ppid, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// Pids whose parent is `parent` (from /proc/<pid>/stat).
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Some(fields) = stat_fields(pid) else {
            continue;
        };
        if fields.first().map(String::as_str) == Some("Z") {
            continue;
        }
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
                + " "
        })
        .unwrap_or_default()
}
