//! A spool on a real, small file system that fills up (issue 14): the test mounts a tmpfs of
//! a few MiB as SPOOL_DIR, with DISK_SPACE far larger than it. The forwarder must hold the
//! TCP sender back, keep delivering, make room as it delivers, and lose nothing the sender
//! wrote, without a worker restart and without flooding its log.
//!
//! Mounting needs root (CI runs as root). Without it these tests fail with a message that
//! says so: they never pass without having run.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sekoia_tests::events::{duplicates, sequence_counts, tail};
use sekoia_tests::{free_tcp_port, wait_until, Forwarder, ForwarderBuilder, TestCerts, TlsSink};

const KEY: &str = "FullDiskIntakeKey01234";

/// A tmpfs mounted for the test's life; unmounted on drop, even when the test panics.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the full_disk tests mount a tmpfs and need root (CI runs them as root); run them as root"
        );
        let dir = tempfile::tempdir().expect("mount point");
        let path = dir.path().to_path_buf();
        let opts = format!("size={size},mode=0700");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(&path));
        Tmpfs { _dir: dir, path }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Tmpfs {
    /// Stacks a read-only bind mount of the file system over itself: from now on, creating,
    /// deleting and opening files for writing there fails with EROFS, as after a remount
    /// read-only. (A true `mount -o remount,ro` is refused with EBUSY while the forwarder
    /// holds files open for writing; those keep working here.)
    fn make_read_only(&self) {
        run(Command::new("mount")
            .args(["--bind", "-o", "ro"])
            .arg(&self.path)
            .arg(&self.path));
        let probe = std::fs::File::create(self.path.join("probe"));
        assert!(probe.is_err(), "the spool is read-only now");
    }

    /// Takes the read-only layer away: the file system is writable again (lazily: files
    /// the forwarder opened for reading through the layer stay open).
    fn make_writable(&self) {
        run(Command::new("umount").arg("-l").arg(&self.path));
    }

    /// Writes a file that takes every free byte left (someone else filling the disk).
    fn fill(&self) -> u64 {
        let mut f = std::fs::File::create(self.path.join("filler")).expect("filler");
        let chunk = vec![0xa5u8; 64 << 10];
        let mut bytes = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => bytes += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the spool: {e}"),
            }
        }
        bytes
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the forwarder may still hold files there if the test failed half-way. Twice:
        // a read-only layer may be stacked on the tmpfs.
        for _ in 0..2 {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a mount command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP sender writing `seq=0..total` (300-byte events) on one connection, counting the
/// events whose bytes the kernel accepted. It blocks while the forwarder holds it back.
struct Sender {
    written: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    fn start(port: u16, total: u64) -> Sender {
        Self::start_at(port, 0, total)
    }

    /// Writes `seq=first..total`.
    fn start_at(port: u16, first: u64, total: u64) -> Sender {
        let written = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (w, d) = (written.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let mut buf = Vec::new();
            let mut i = first;
            while i < total {
                buf.clear();
                let end = (i + 50).min(total);
                for n in i..end {
                    event(&mut buf, n);
                }
                c.write_all(&buf).expect("send");
                w.store(end, Ordering::SeqCst);
                i = end;
            }
            c.shutdown(std::net::Shutdown::Write).expect("shutdown");
            d.store(true, Ordering::SeqCst);
        });
        Sender {
            written,
            done,
            thread: Some(thread),
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take().filter(|_| self.done()) {
            let _ = t.join();
        }
    }
}

/// One 300-byte event line (LF included).
fn event(buf: &mut Vec<u8>, n: u64) {
    let head = format!("<13>Oct 11 22:14:15 host app: seq={n} ");
    buf.extend_from_slice(head.as_bytes());
    buf.extend(std::iter::repeat_n(b'x', 299 - head.len()));
    buf.push(b'\n');
}

fn yaml(port: u16) -> String {
    format!("intakes:\n- name: FullDisk\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n")
}

fn start_forwarder(spool: &Path, port: u16, sink_port: u16, certs: &TestCerts) -> Forwarder {
    ForwarderBuilder::new(&yaml(port), sink_port)
        .ca_file(&certs.ca_pem)
        .spool_dir(spool)
        .env("DISK_SPACE", "32g")
        .env("MEMORY_MESSAGES", "3000")
        .start()
}

/// Waits until every event of `0..n` arrived; returns the counts.
fn wait_all(sink: &TlsSink, n: u64, limit: Duration) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    wait_until(limit, || {
        counts = sequence_counts(&sink.lines());
        counts.len() as u64 >= n
    });
    counts
}

fn warning_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains(" WARN ")).count()
}

/// What the supervisor logs when a worker ends (a restart follows).
fn worker_exits(log: &str) -> usize {
    log.matches("worker exited").count()
}

/// One scenario: an 8 MiB tmpfs spool, certificates, ports, and the forwarder with its
/// destination down (the sink starts with [`Setup::destination_up`]).
struct Setup {
    fs: Tmpfs,
    certs: TestCerts,
    port: u16,
    sink_port: u16,
    fwd: Forwarder,
}

impl Setup {
    fn start() -> Self {
        let fs = Tmpfs::mount("8m");
        let certs = TestCerts::new(&["127.0.0.1"]);
        let (port, sink_port) = (free_tcp_port(), free_tcp_port());
        let fwd = start_forwarder(fs.path(), port, sink_port, &certs);
        Self {
            fs,
            certs,
            port,
            sink_port,
            fwd,
        }
    }

    /// Waits until the log holds `needle`; fails saying `what` did not happen.
    fn wait_log(&self, needle: &str, limit: Duration, what: &str) {
        let seen = wait_until(limit, || self.fwd.stderr().contains(needle));
        assert!(seen, "{what}:\n{}", tail(&self.fwd.stderr()));
    }

    /// Waits until the full disk holds the sender back (the journal says so).
    fn wait_held_back(&self) {
        let minute = Duration::from_secs(60);
        self.wait_log(
            "journal cannot take events",
            minute,
            "the sender was never held back",
        );
    }

    /// Waits until the intake's journal segments hold more than `bytes`.
    fn wait_journal(&self, bytes: u64, limit: Duration) {
        let took = wait_until(limit, || journal_bytes(self.fs.path(), self.port) > bytes);
        assert!(
            took,
            "the journal never took {bytes} bytes:\n{}",
            tail(&self.fwd.stderr())
        );
    }

    fn destination_up(&self) -> TlsSink {
        TlsSink::start_on(&self.certs, self.sink_port)
    }
}

/// The end every scenario must reach: the sender finished, each of its `total` events
/// arrived, and no worker restarted. Returns the counts and the log.
fn assert_all_delivered(
    fwd: &Forwarder,
    sink: &TlsSink,
    sender: &Sender,
    total: u64,
) -> (BTreeMap<u64, u32>, String) {
    let finished = wait_until(Duration::from_secs(120), || sender.done());
    let counts = wait_all(sink, total, Duration::from_secs(120));
    let log = fwd.stderr();
    if std::env::var_os("FULL_DISK_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(
        finished,
        "the sender never resumed: {} of {total} written\n{}",
        sender.written(),
        tail(&log)
    );
    let missing: Vec<u64> = (0..total)
        .filter(|n| !counts.contains_key(n))
        .take(20)
        .collect();
    assert!(
        missing.is_empty(),
        "missing events: {missing:?}\n{}",
        tail(&log)
    );
    assert_eq!(worker_exits(&log), 0, "a worker restarted:\n{}", tail(&log));
    (counts, log)
}

/// A repeating condition is summarised, not logged at every occurrence.
fn assert_few_warnings(log: &str) {
    let n = warning_lines(log);
    assert!(n < 60, "{n} warning lines:\n{}", tail(log));
}

#[test]
fn a_full_spool_holds_the_sender_back_and_everything_it_wrote_is_delivered() {
    let total: u64 = 60_000;
    let mut s = Setup::start();
    assert!(
        s.fwd
            .stderr()
            .contains("DISK_SPACE is more than the spool's file system can hold"),
        "the budget in force is said at start:\n{}",
        tail(&s.fwd.stderr())
    );

    // Destination down: 18 MB offered to an 8 MiB spool. The sender must be held back.
    let sender = Sender::start(s.port, total);
    s.wait_held_back();
    // Held back for a while: one summary line after 10 s, not a line per attempt.
    let half = Duration::from_secs(30);
    s.wait_log(
        "journal still cannot take events",
        half,
        "no summary of the hold-back",
    );
    assert!(
        !sender.done(),
        "the sender could not have written everything"
    );
    let before = sender.written();

    // Destination back: everything the sender wrote is delivered, and it resumes.
    let back = Instant::now();
    let sink = s.destination_up();
    let (counts, log) = assert_all_delivered(&s.fwd, &sink, &sender, total);
    eprintln!(
        "held back at {before} of {total} written; delivered {} distinct ({} duplicates) in {:?} after the destination came back; {} warning lines",
        counts.len(),
        duplicates(&counts),
        back.elapsed(),
        warning_lines(&log)
    );
    assert_few_warnings(&log);
    let status = s.fwd.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", tail(&s.fwd.stderr()));
}

/// Bytes of segment files in the intake's journal.
fn journal_bytes(spool: &Path, port: u16) -> u64 {
    let dir = spool.join(format!("journal-tcp-{port}"));
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_disk_filled_by_someone_else_keeps_delivering_and_makes_room_as_it_delivers() {
    let total: u64 = 30_000;
    let mut s = Setup::start();
    let sender = Sender::start(s.port, total);
    s.wait_journal(2 << 20, Duration::from_secs(60));
    // Someone else takes every free byte, and keeps it until the end of the test: only
    // what the forwarder delivers and deletes makes room, and its checkpoint must be
    // written without a new block.
    let filler = s.fs.fill();
    s.wait_held_back();
    let sink = s.destination_up();
    let (counts, log) = assert_all_delivered(&s.fwd, &sink, &sender, total);
    eprintln!(
        "filler {filler} bytes; delivered {} distinct ({} duplicates); {} warning lines",
        counts.len(),
        duplicates(&counts),
        warning_lines(&log)
    );
    assert!(s.fs.path().join("filler").exists());
    assert_few_warnings(&log);
    assert!(s.fwd.terminate(Duration::from_secs(30)).success());
}

#[test]
fn a_spool_that_turns_read_only_then_writable_again_loses_nothing() {
    let total: u64 = 20_000;
    let mut s = Setup::start();
    let sender = Sender::start(s.port, total);
    s.wait_journal(1 << 20, Duration::from_secs(60));
    s.fs.make_read_only();
    let minute = Duration::from_secs(60);
    let what = "the forwarder never met the read-only spool";
    s.wait_log("Read-only file system", minute, what);
    // Reading and sending go on from a read-only spool.
    let sink = s.destination_up();
    assert!(
        wait_until(minute, || sink.count() >= 6_000),
        "delivery stopped while the spool was read-only: {} delivered\n{}",
        sink.count(),
        tail(&s.fwd.stderr())
    );
    s.fs.make_writable();
    let (counts, log) = assert_all_delivered(&s.fwd, &sink, &sender, total);
    eprintln!(
        "read-only spool: delivered {} distinct ({} duplicates); {} warning lines",
        counts.len(),
        duplicates(&counts),
        warning_lines(&log)
    );
    assert_few_warnings(&log);
    assert!(s.fwd.terminate(Duration::from_secs(30)).success());
}

#[test]
fn a_stop_with_a_full_disk_leaves_the_memory_tier_for_the_next_start_and_says_so() {
    let total: u64 = 2_000; // fits in the memory tier (MEMORY_MESSAGES=3000)
    let fs = Tmpfs::mount("8m");
    let certs = TestCerts::new(&["127.0.0.1"]);
    let (port, sink_port) = (free_tcp_port(), free_tcp_port());
    let mut fwd = start_forwarder(fs.path(), port, sink_port, &certs);
    fs.fill();
    let sender = Sender::start(port, total);
    assert!(wait_until(Duration::from_secs(30), || sender.done()));
    assert!(
        wait_until(Duration::from_secs(30), || fwd.ring_payloads().len() as u64
            >= total),
        "the events reached the memory tier"
    );
    let status = fwd.terminate(Duration::from_secs(60));
    let log = fwd.stderr();
    assert!(status.success(), "{status:?}\n{}", tail(&log));
    assert!(
        log.contains("its events stay in shared memory, where the next start sends them first"),
        "the stop says where the events are:\n{}",
        tail(&log)
    );
    assert!(
        !log.contains("saved undelivered events to disk"),
        "nothing could be saved, and the log must not say otherwise:\n{}",
        tail(&log)
    );
    if std::env::var_os("FULL_DISK_LOG").is_some() {
        eprintln!("{log}");
    }
    std::fs::remove_file(fs.path().join("filler")).expect("free the disk");
    fwd.spawn();
    let sink = TlsSink::start_on(&certs, sink_port);
    let counts = wait_all(&sink, total, Duration::from_secs(60));
    assert_eq!(
        counts.len() as u64,
        total,
        "events lost\n{}",
        tail(&fwd.stderr())
    );
    assert!(fwd.terminate(Duration::from_secs(30)).success());
}

/// `sekoia-forwarder check` with SPOOL_DIR on `spool` and DISK_SPACE `disk_space`.
fn check(spool: &Path, disk_space: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("sandbox");
    let cfg = dir.path().join("intakes.yaml");
    std::fs::write(&cfg, yaml(free_tcp_port())).expect("intakes.yaml");
    std::fs::create_dir_all(dir.path().join("extended_conf")).expect("extended_conf");
    let out = Command::new(sekoia_tests::forwarder::binary())
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .arg("--spool-dir")
        .arg(spool)
        .arg("--certs-dir")
        .arg(dir.path().join("certs"))
        .arg("--shm-dir")
        .arg(dir.path().join("shm"))
        .arg("--extended-conf")
        .arg(dir.path().join("extended_conf"))
        .env("DISK_SPACE", disk_space)
        .env_remove("REGION")
        .env_remove("ENDPOINT")
        .output()
        .expect("run check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_warns_when_disk_space_exceeds_what_the_spool_can_hold() {
    let fs = Tmpfs::mount("8m");
    let (code, err) = check(fs.path(), "32g");
    assert_eq!(code, 0, "a warning, not an error: {err}");
    assert!(
        err.contains(
            "warning: DISK_SPACE (34359738368 bytes) is more than the file system of SPOOL_DIR"
        ),
        "{err}"
    );
    let (code, err) = check(fs.path(), "2m");
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning: DISK_SPACE"), "{err}");
}

#[test]
fn a_delivered_active_segment_is_deleted_to_make_room_on_a_full_disk() {
    let mut s = Setup::start();
    // 3,000 events in memory, about 1,500 (less than one segment) in the journal.
    let first = Sender::start(s.port, 4_500);
    assert!(wait_until(Duration::from_secs(30), || first.done()));
    s.wait_journal(1_400 * 300, Duration::from_secs(30));
    // Someone else takes every free byte: the active segment cannot grow, and it is the
    // only segment there is.
    s.fs.fill();
    let total = 12_000;
    let second = Sender::start_at(s.port, 4_500, total);
    s.wait_held_back();
    let sink = s.destination_up();
    let (_, log) = assert_all_delivered(&s.fwd, &sink, &second, total);
    assert!(
        log.contains("deleted the delivered active segment to make room"),
        "{}",
        tail(&log)
    );
    assert!(s.fwd.terminate(Duration::from_secs(30)).success());
}
