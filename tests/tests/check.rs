//! `sekoia-forwarder check` tells the whole truth in one pass: settings and intake files
//! together, ports already taken, a `SHM_DIR` too small for the rings (also refused by
//! `run`), nothing created on disk; `check --connect` reaches a real TLS listener step by
//! step and names the step that fails. Exit codes: 0 OK, 1 `--connect` failed, 3 rejected.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sekoia_tests::forwarder::{binary, ctl_binary};
use sekoia_tests::{
    free_port_both, free_tcp_port, is_listening, wait_until, ForwarderBuilder, TestCerts, TlsSink,
};

const KEY: &str = "CheckIntakeKey0123456789";

/// A configuration folder: `intakes.yaml`, spool and shm paths that do not exist yet.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(yaml: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("intakes.yaml"), yaml).expect("write intakes.yaml");
        std::fs::create_dir(dir.path().join("extended_conf")).expect("mkdir");
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary with this setup's paths, `args` first (`check`, flags...).
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg("--config")
            .arg(self.path("intakes.yaml"))
            .arg("--extended-conf")
            .arg(self.path("extended_conf"))
            .arg("--control-socket")
            .arg(self.path("control.sock"));
        for (flag, dir) in [
            ("--spool-dir", "spool"),
            ("--shm-dir", "shm"),
            ("--certs-dir", "certs"),
        ] {
            if !args.contains(&flag) {
                cmd.arg(flag).arg(self.path(dir));
            }
        }
        for var in ["REGION", "ENDPOINT", "SEKOIA_CA_FILE", "MEMORY_MESSAGES"] {
            cmd.env_remove(var);
        }
        cmd
    }

    fn check(&self, args: &[&str]) -> Outcome {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        Outcome::of(self.command(&binary(), &all).output().expect("run check"))
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn of(out: Output) -> Outcome {
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn text(&self) -> String {
        format!("exit {}\n{}{}", self.code, self.stdout, self.stderr)
    }
}

fn tcp_intake(name: &str, port: u32) -> String {
    format!("- name: {name}\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n")
}

#[test]
fn check_lists_a_bad_region_the_intake_file_and_certificates_together() {
    let (tls_port, garbled_port) = (free_tcp_port(), free_tcp_port());
    let yaml = format!(
        "intakes:\n- name: Broken\n  protocol: tcp\n  port: 70000\n  intake_key: {KEY}\n  protcol: tcp\n\
         - name: Secure\n  protocol: tls\n  port: {tls_port}\n  intake_key: {KEY}\n  tls_cert_name: missing.crt\n\
         - name: Garbled\n  protocol: tls\n  port: {garbled_port}\n  intake_key: {KEY}\n  tls_key_name: garbled\n  tls_cert_name: garbled\n"
    );
    let setup = Setup::new(&yaml);
    // Files that exist but hold no PEM: only the check of their content can find it, and it
    // runs although other entries and REGION are wrong.
    std::fs::create_dir(setup.path("certs")).expect("mkdir certs");
    std::fs::write(setup.path("certs/garbled.crt"), "not a certificate\n").expect("write");
    std::fs::write(setup.path("certs/garbled.key"), "not a key\n").expect("write");
    let key = setup.path("certs/garbled.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let out = setup.check(&["--region", "MARS1"]);
    assert_eq!(
        out.code,
        3,
        "a rejected configuration exits 3:\n{}",
        out.text()
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    let has = |needles: &[&str]| lines.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    for needles in [
        &["setting --region / REGION", "MARS1", "FRA1"][..],
        &[
            "intakes.yaml",
            "intake \"Broken\"",
            "field \"port\"",
            "70000",
        ],
        &[
            "intake \"Broken\"",
            "field \"protcol\"",
            "warning",
            "`protocol`",
        ],
        &[
            "intake \"Secure\"",
            "field \"tls_cert_name\"",
            "missing.crt",
        ],
        &["intake \"Secure\"", "field \"tls_key_name\"", "server.key"],
        &["intake \"Garbled\"", "the TLS key pair cannot be used"],
    ] {
        assert!(has(needles), "no line with {needles:?}:\n{}", out.text());
    }
    assert!(
        out.stderr.contains("6 configuration problems"),
        "{}",
        out.text()
    );
}

#[test]
fn check_reports_tcp_and_udp_ports_held_by_another_socket() {
    let (tcp_port, udp_port) = (free_tcp_port(), free_port_both());
    let tcp_holder = TcpListener::bind(("127.0.0.1", tcp_port)).expect("hold the tcp port");
    let udp_holder = UdpSocket::bind(("127.0.0.1", udp_port)).expect("hold the udp port");
    let yaml = format!(
        "intakes:\n{}- name: Datagrams\n  protocol: udp\n  port: {udp_port}\n  intake_key: {KEY}\n",
        tcp_intake("Streams", tcp_port.into())
    );
    let setup = Setup::new(&yaml);
    let out = setup.check(&[]);
    assert_eq!(out.code, 3, "{}", out.text());
    let tcp = format!("TCP port {tcp_port} is already in use on this host");
    let udp = format!("UDP port {udp_port} is already in use on this host");
    for (what, intake, fix) in [
        (&tcp, "Streams", format!("ss -ltnp 'sport = :{tcp_port}'")),
        (&udp, "Datagrams", format!("ss -lunp 'sport = :{udp_port}'")),
    ] {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(what.as_str()))
            .unwrap_or_else(|| panic!("no line with {what:?}:\n{}", out.text()));
        assert!(
            line.contains(&format!("intake \"{intake}\"")) && line.contains(&fix),
            "{line}"
        );
    }
    // Released, the same configuration passes: check holds no port itself.
    drop((tcp_holder, udp_holder));
    let out = setup.check(&[]);
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(!is_listening(tcp_port));
}

#[test]
fn check_reports_the_ports_of_a_forwarder_already_running_with_this_configuration() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let yaml = format!("intakes:\n{}", tcp_intake("Running", port.into()));
    let mut running = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .start();
    let mut cmd = Command::new(binary());
    cmd.arg("check")
        .arg("--config")
        .arg(&running.config)
        .arg("--spool-dir")
        .arg(&running.spool)
        .arg("--shm-dir")
        .arg(running.shm.path())
        .arg("--extended-conf")
        .arg(running.dir.path().join("extended_conf"))
        .args(["--region", "OTHER", "--endpoint", "127.0.0.1:10514"]);
    let out = Outcome::of(cmd.output().expect("run check"));
    running.terminate(Duration::from_secs(30));
    assert_eq!(out.code, 3, "{}", out.text());
    assert!(
        out.stderr.contains(&format!(
            "TCP port {port} is already in use on this host: another program holds it, or a sekoia-forwarder with this configuration is already running"
        )),
        "{}",
        out.text()
    );
    // Its own rings, already in SHM_DIR, are not counted twice against the room.
    assert!(!out.stderr.contains("SHM_DIR"), "{}", out.text());
}

#[test]
fn check_creates_nothing_under_spool_dir_or_shm_dir() {
    let yaml = format!("intakes:\n{}", tcp_intake("Quiet", free_tcp_port().into()));
    let setup = Setup::new(&yaml);
    // Missing folders stay missing.
    let out = setup.check(&[]);
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(!setup.path("spool").exists(), "check created SPOOL_DIR");
    assert!(!setup.path("shm").exists(), "check created SHM_DIR");
    // Existing folders stay empty.
    std::fs::create_dir(setup.path("spool")).expect("mkdir spool");
    std::fs::create_dir(setup.path("shm")).expect("mkdir shm");
    let out = setup.check(&[]);
    assert_eq!(out.code, 0, "{}", out.text());
    for dir in ["spool", "shm"] {
        let entries: Vec<_> = std::fs::read_dir(setup.path(dir))
            .expect("read dir")
            .collect();
        assert!(entries.is_empty(), "check created {entries:?} in {dir}");
    }
}

/// `check --connect` to `host:port` with the test CA, for a one-intake configuration.
fn check_connect(certs: &TestCerts, host: &str, port: u16) -> Outcome {
    let setup = Setup::new(&format!(
        "intakes:\n{}",
        tcp_intake("In", free_tcp_port().into())
    ));
    let endpoint = format!("{host}:{port}");
    let ca = certs.ca_pem.to_str().expect("utf-8 path");
    setup.check(&[
        "--connect",
        "--region",
        "OTHER",
        "--endpoint",
        &endpoint,
        "--ca-file",
        ca,
    ])
}

#[test]
fn check_connect_reaches_a_tls_listener_and_reports_each_step() {
    let certs = TestCerts::new(&["localhost", "127.0.0.1"]);
    let sink = TlsSink::start(&certs);
    let out = check_connect(&certs, "localhost", sink.port);
    assert_eq!(out.code, 0, "{}", out.text());
    let o = &out.stdout;
    let resolved = o.lines().find(|l| l.starts_with("resolve localhost: "));
    assert!(
        resolved.is_some_and(|l| l.contains(" ms): ") && l.contains("127.0.0.1")),
        "{}",
        out.text()
    );
    assert!(
        o.contains(&format!("connect 127.0.0.1:{} (", sink.port))
            || o.contains(&format!("connect [::1]:{} (", sink.port)),
        "{}",
        out.text()
    );
    assert!(
        o.contains("TLS 1.3 handshake, certificate verified for localhost ("),
        "{}",
        out.text()
    );
    assert!(o.contains(" ms)"), "each step is timed:\n{}", out.text());
    assert!(o.contains("connect OK"), "{}", out.text());
    assert!(wait_until(Duration::from_secs(5), || sink.connections() >= 1));
    assert_eq!(sink.count(), 0, "--connect sends no event");
}

#[test]
fn check_connect_to_a_closed_port_fails_at_the_connect_step() {
    let closed = free_tcp_port();
    let setup = Setup::new(&format!(
        "intakes:\n{}",
        tcp_intake("In", free_tcp_port().into())
    ));
    let endpoint = format!("127.0.0.1:{closed}");
    let out = setup.check(&["--connect", "--region", "OTHER", "--endpoint", &endpoint]);
    assert_eq!(out.code, 1, "{}", out.text());
    assert!(
        out.stderr.contains(&format!(
            "connect to 127.0.0.1:{closed} failed at step connect"
        )),
        "{}",
        out.text()
    );
    assert!(out.stderr.contains("refused"), "{}", out.text());
}

#[test]
fn check_connect_to_a_certificate_for_another_name_fails_at_the_tls_step() {
    let certs = TestCerts::new(&["other.example"]);
    let sink = TlsSink::start(&certs);
    let out = check_connect(&certs, "127.0.0.1", sink.port);
    assert_eq!(out.code, 1, "{}", out.text());
    assert!(
        out.stdout
            .contains(&format!("connect 127.0.0.1:{} (", sink.port)),
        "the TCP step passed:\n{}",
        out.text()
    );
    assert!(
        out.stderr.contains("failed at step TLS")
            && out
                .stderr
                .contains("certificate not valid for name \"127.0.0.1\""),
        "{}",
        out.text()
    );
}

#[test]
fn sekoia_ctl_check_passes_the_exit_status_on() {
    let setup = Setup::new(&format!("intakes:\n{}", tcp_intake("In", 70000)));
    let out = Outcome::of(
        setup
            .command(&ctl_binary(), &["check"])
            .output()
            .expect("run sekoia-ctl check"),
    );
    assert_eq!(out.code, 3, "{}", out.text());
    assert!(out.stderr.contains("70000"), "{}", out.text());
}

/// A tmpfs mounted for the test's life (needs root, as CI runs); unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a small tmpfs as SHM_DIR and needs root (CI runs it as root)"
        );
        let dir = tempfile::tempdir().expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_shm_dir_too_small_for_the_rings_is_refused_by_check_and_at_start() {
    let fs = Tmpfs::mount("8m");
    let shm = fs.dir.path().join("sekoia");
    let port = free_tcp_port();
    let setup = Setup::new(&format!("intakes:\n{}", tcp_intake("In", port.into())));
    let shm_arg = shm.to_str().expect("utf-8 path");
    // 100000 messages: one 64 MiB ring (plus its header page), in an 8 MiB file system.
    let args = ["--shm-dir", shm_arg, "--memory-messages", "100000"];
    let out = setup.check(&args);
    assert_eq!(out.code, 3, "{}", out.text());
    let problem = out
        .stderr
        .lines()
        .find(|l| l.starts_with("setting --shm-dir / SHM_DIR"))
        .unwrap_or_else(|| panic!("no SHM_DIR problem:\n{}", out.text()));
    for needle in [
        "need 64.3 MiB",
        "8.0 MiB in all",
        "--shm-size=",
        "MEMORY_MESSAGES",
    ] {
        assert!(problem.contains(needle), "{needle:?} missing in {problem}");
    }

    // The start says the same and exits before binding or creating a ring.
    let mut run = setup
        .command(&binary(), &args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the forwarder");
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(run.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = run.kill();
    }
    let out = Outcome::of(run.wait_with_output().expect("wait"));
    assert!(exited, "the forwarder started anyway:\n{}", out.text());
    assert_eq!(out.code, 3, "{}", out.text());
    assert!(out.stderr.contains("need 64.3 MiB"), "{}", out.text());
    assert!(!is_listening(port));
    assert!(!shm.exists(), "refused before SHM_DIR was touched");

    // A configuration that fits passes.
    let small = ["--shm-dir", shm_arg, "--memory-messages", "1000"];
    let out = setup.check(&small);
    assert_eq!(out.code, 0, "{}", out.text());
}

#[test]
fn check_lists_every_destination_with_its_intakes_and_two_spellings_as_one() {
    let (a, b, c) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let yaml = format!(
        "intakes:\n{}{}  endpoint: INTAKE.sekoia.io\n{}  region: usa1\n- name: Monitoring\n  stats: true\n  intake_key: {KEY}\n  region: USA1\n",
        tcp_intake("Firewalls", a.into()),
        tcp_intake("Proxies", b.into()),
        tcp_intake("Servers", c.into()),
    );
    let setup = Setup::new(&yaml);
    let out = setup.check(&["--region", "FRA1"]);
    assert_eq!(out.code, 0, "{}", out.text());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.contains(&"  intake.sekoia.io:10514 over syslog/TLS: Firewalls, Proxies"),
        "{}",
        out.text()
    );
    assert!(
        lines.contains(&"  intake.usa1.sekoia.io:10514 over syslog/TLS: Servers, Monitoring"),
        "{}",
        out.text()
    );

    let bad = Setup::new(&format!(
        "intakes:\n{}  region: MARS1\n",
        tcp_intake("Servers", c.into())
    ));
    let out = bad.check(&[]);
    assert_eq!(out.code, 3, "{}", out.text());
    assert!(
        out.stderr.contains("Servers") && out.stderr.contains("region"),
        "{}",
        out.text()
    );
}
