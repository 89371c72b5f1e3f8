//! The container image as the reference image's users run it: built from the Dockerfile
//! (base images made locally by tests/deploy/base-images.sh: no registry is reachable),
//! started by docker-compose from a reference-style compose file with the reference's mounts
//! (`/intakes.yaml`, `/var/spool/rsyslog`, `/certs`, `/extended_conf`) and environment, fed
//! TCP, UDP and TLS events through the mapped ports, delivering to a TLS sink on the host's
//! bridge address. Then a stop with a backlog and the destination down, a start, and every
//! queued event arrives. Needs root, docker and docker-compose (.ci/run installs them and
//! starts dockerd); skipped, loudly, only when no Docker daemon answers.

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sekoia_tests::events::sequence_counts;
use sekoia_tests::{free_port_both, free_tcp_port, mask_timestamp, wait_until, TestCerts, TlsSink};

const IMAGE: &str = "sekoia-forwarder:test";
const KEY_TCP: &str = "CONTAINERKEYTCP0000001";
const KEY_UDP: &str = "CONTAINERKEYUDP0000001";
const KEY_TLS: &str = "CONTAINERKEYTLS0000001";
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn container_forwards_tcp_udp_tls_and_keeps_a_backlog_across_a_stop() {
    let Some(root) = docker_ready("container test") else {
        return;
    };
    let shipped = shipped_compose(&root);
    let gateway = bridge_gateway();
    let certs = TestCerts::new(&[&gateway.to_string(), "localhost"]);
    let sink = TlsSink::start_at(&certs, gateway, 0);
    let sink_port = sink.port;
    let site = Site::new(&certs, &shipped, gateway, sink_port);
    site.compose(&["up", "-d"]);

    wait_for_health(&site);
    let logs = site.logs();
    for (name, proto, port, key) in [
        ("Firewalls", "tcp", 20516, KEY_TCP),
        ("Proxies", "udp", 20517, KEY_UDP),
        ("Servers TLS", "tls", 20518, KEY_TLS),
    ] {
        let block =
            format!("Intake name: {name}\nProtocol: {proto}\nPort: {port}\nIntake key: {key}\n");
        assert!(logs.contains(&block), "banner lacks {block:?}:\n{logs}");
    }
    let status = site.exec(&["cat", "/proc/1/status"]);
    assert!(
        status.contains("\nUid:\t10514\t10514\t10514\t10514\n"),
        "{status}"
    );

    // TCP, UDP and TLS events through the mapped ports, byte exact at the sink.
    let mut want = Vec::new();
    let mut tcp = TcpStream::connect(("127.0.0.1", site.tcp)).expect("connect tcp");
    for i in 0..100 {
        writeln!(tcp, "<13>Jan  5 01:02:03 tcphost app[{i}]: tcp event {i}").expect("tcp");
        want.push(expect(
            KEY_TCP,
            13,
            "tcphost",
            "app",
            &i.to_string(),
            &format!("tcp event {i}"),
        ));
    }
    drop(tcp);
    let udp = UdpSocket::bind(("127.0.0.1", 0)).expect("udp socket");
    for i in 0..20 {
        // One at a time: the next leaves once this one arrived (no burst for docker-proxy).
        let before = sink.count();
        let line = format!("<14>Jan  5 01:02:03 udphost app[{i}]: udp event {i}");
        udp.send_to(line.as_bytes(), ("127.0.0.1", site.udp))
            .expect("udp");
        want.push(expect(
            KEY_UDP,
            14,
            "udphost",
            "app",
            &i.to_string(),
            &format!("udp event {i}"),
        ));
        assert!(
            wait_until(WAIT, || sink.count() > before),
            "udp event {i} did not arrive\n{}",
            site.logs()
        );
    }
    send_tls(&certs, site.tls, 100);
    for i in 0..100 {
        want.push(expect(
            KEY_TLS,
            86,
            "tlshost",
            "sshd",
            &i.to_string(),
            &format!("tls event {i}"),
        ));
    }
    let got = masked(&sink.wait_for(want.len(), WAIT));
    want.sort();
    assert_eq!(got, want, "logs:\n{}", site.logs());

    // A backlog with the destination down, a stop, a start: nothing lost.
    drop(sink);
    let backlog = 2_000;
    let mut tcp = TcpStream::connect(("127.0.0.1", site.tcp)).expect("connect tcp");
    for i in 0..backlog {
        writeln!(tcp, "<13>Jan  5 01:02:03 tcphost app: seq={i} queued").expect("tcp");
    }
    drop(tcp);
    let received = || site.received("Firewalls");
    assert!(
        wait_until(WAIT, || received() >= 100 + backlog),
        "backlog not received"
    );
    let stopping = Instant::now();
    site.compose(&["stop"]);
    let took = stopping.elapsed();
    let exit = site.inspect("{{.State.ExitCode}}");
    let logs = site.logs();
    assert_eq!(
        exit.trim(),
        "0",
        "killed at the end of the grace period? logs:\n{logs}"
    );
    assert!(
        took < shipped.grace,
        "stop took {took:?}, grace {:?}",
        shipped.grace
    );
    assert!(logs.contains("saved undelivered events to disk"), "{logs}");
    eprintln!("container stop with {backlog} queued events, destination down: {took:?}");

    let sink = TlsSink::start_at(&certs, gateway, sink_port);
    site.compose(&["start"]);
    let lines = sink.wait_for(backlog as usize, WAIT);
    let counts = sequence_counts(&lines);
    let missing: Vec<u64> = (0..backlog).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{} lost, e.g. {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        site.logs()
    );
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
}

#[test]
fn debian_package_installs_upgrades_and_purges_in_a_container() {
    let Some(root) = docker_ready("package test") else {
        return;
    };
    let work = tempfile::tempdir().expect("work dir");
    let w = work.path();
    // The package ships the image's binaries: release, built on Debian bookworm.
    let release = w.join("target/release");
    std::fs::create_dir_all(&release).expect("target dir");
    let out = run(Command::new("docker").args(["create", IMAGE]));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    for bin in ["sekoia-forwarder", "sekoia-ctl"] {
        run(Command::new("docker")
            .arg("cp")
            .arg(format!("{id}:/usr/bin/{bin}"))
            .arg(release.join(bin)));
    }
    run(Command::new("docker").args(["rm", &id]));
    for (version, deb) in [(Some("0.0.9"), "old.deb"), (None, "new.deb")] {
        let mut cmd = Command::new("cargo");
        cmd.args([
            "deb",
            "-p",
            "sekoia-forwarder",
            "--no-build",
            "--no-strip",
            "-o",
        ])
        .arg(w.join(deb))
        .env("CARGO_TARGET_DIR", w.join("target"))
        .current_dir(&root);
        if let Some(v) = version {
            cmd.args(["--deb-version", v]);
        }
        run(&mut cmd);
    }

    // The unit as packaged, verified against the host's systemd units.
    let tree = w.join("tree");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(w.join("new.deb"))
        .arg(&tree));
    let units = tree.join("usr/lib/systemd/system");
    let units = if units.is_dir() {
        units
    } else {
        tree.join("lib/systemd/system")
    };
    let unit = units.join("sekoia-forwarder.service");
    run(Command::new("cp")
        .arg("-rn")
        .arg("/lib/systemd/system/.")
        .arg(&units));
    let verify = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", tree.display()))
        .arg(&unit));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(said.trim().is_empty(), "systemd-analyze verify:\n{said}");

    let script = root.join("tests/deploy/package-in-container.sh");
    let out = Command::new("docker")
        // A host's /dev/shm (half its RAM), not Docker's 64 MiB default: the shipped
        // configuration's rings need about 64 MiB, which `check` verifies.
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            "--shm-size",
            "256m",
            "-v",
        ])
        .arg(format!("{}:/pkg:ro", w.display()))
        .arg("-v")
        .arg(format!("{}:/test.sh:ro", script.display()))
        .args(["debian:bookworm-slim", "bash", "/test.sh"])
        .output()
        .expect("docker run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("package test: ok"),
        "{text}"
    );
}

/// The repository, once Docker answers and the image is built; None (after a loud message)
/// when no Docker daemon answers.
fn docker_ready(what: &str) -> Option<std::path::PathBuf> {
    if !docker_answers() {
        let bar = "!".repeat(78);
        eprintln!(
            "\n{bar}\nSKIPPED {what}: no Docker daemon answers (`docker info` failed). \
            .ci/run installs docker.io and starts dockerd; run it as root.\n{bar}\n"
        );
        return None;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_image(&root));
    Some(root)
}

/// Values of the shipped config/docker-compose.yml (validated by docker-compose).
struct Shipped {
    grace: Duration,
    shm_size: String,
}

fn shipped_compose(root: &Path) -> Shipped {
    let file = root.join("config/docker-compose.yml");
    let out = run(Command::new("docker-compose")
        .arg("-f")
        .arg(&file)
        .arg("config"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(name)
                    .map(|v| v.trim().trim_matches('\'').to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in the shipped compose file:\n{text}"))
    };
    let grace = field("stop_grace_period:");
    let secs: u64 = grace
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("stop_grace_period {grace:?} is not whole seconds"));
    Shipped {
        grace: Duration::from_secs(secs),
        shm_size: field("shm_size:"),
    }
}

/// A reference user's folder: compose file, intakes.yaml, certs/, extended_conf/; Docker
/// creates disk_queue/ (owned by root) on first start, as it does for them.
struct Site {
    dir: tempfile::TempDir,
    project: String,
    tcp: u16,
    udp: u16,
    tls: u16,
}

impl Site {
    fn new(certs: &TestCerts, shipped: &Shipped, gateway: Ipv4Addr, sink_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("site dir");
        let (tcp, udp, tls) = (free_tcp_port(), free_port_both(), free_tcp_port());
        let intakes = format!(
            "---\nintakes:\n\
             - name: Firewalls\n  protocol: tcp\n  port: 20516\n  intake_key: {KEY_TCP}\n\
             - name: Proxies\n  protocol: udp\n  port: 20517\n  intake_key: {KEY_UDP}\n\
             - name: Servers TLS\n  protocol: tls\n  port: 20518\n  intake_key: {KEY_TLS}\n"
        );
        std::fs::write(dir.path().join("intakes.yaml"), intakes).expect("intakes");
        let certs_dir = dir.path().join("certs");
        std::fs::create_dir(&certs_dir).expect("certs dir");
        for (from, to) in [
            (&certs.server_key, "server.key"),
            (&certs.server_cert, "server.crt"),
            (&certs.ca_pem, "ca.crt"),
        ] {
            std::fs::copy(from, certs_dir.join(to)).expect("copy cert");
        }
        // As the reference's documentation says: chmod 600, owned by whoever made them.
        for name in ["server.key", "server.crt"] {
            let path = certs_dir.join(name);
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod");
        }
        std::fs::create_dir(dir.path().join("extended_conf")).expect("extended_conf");
        let compose = format!(
            "services:\n  rsyslog:\n    image: {IMAGE}\n    environment:\n\
             \x20     - MEMORY_MESSAGES=20000\n      - DISK_SPACE=1g\n      - REGION=OTHER\n\
             \x20     - ENDPOINT={gateway}:{sink_port}\n      - SEKOIA_CA_FILE=/certs/ca.crt\n\
             \x20   ports:\n      - \"127.0.0.1:{tcp}:20516\"\n      - \"127.0.0.1:{udp}:20517/udp\"\n\
             \x20     - \"127.0.0.1:{tls}:20518\"\n    volumes:\n      - ./intakes.yaml:/intakes.yaml\n\
             \x20     - ./disk_queue:/var/spool/rsyslog\n      - ./certs:/certs\n\
             \x20     - ./extended_conf:/extended_conf\n\
             \x20   stop_grace_period: {}s\n    shm_size: {}\n\
             \x20   healthcheck:\n      interval: 1s\n",
            shipped.grace.as_secs(),
            shipped.shm_size
        );
        std::fs::write(dir.path().join("docker-compose.yml"), compose).expect("compose");
        let project = format!("sekoiact{}", std::process::id());
        Self {
            dir,
            project,
            tcp,
            udp,
            tls,
        }
    }

    fn compose(&self, args: &[&str]) -> Output {
        run(Command::new("docker-compose")
            .arg("-p")
            .arg(&self.project)
            .args(args)
            .current_dir(self.dir.path()))
    }

    fn container(&self) -> String {
        let out = self.compose(&["ps", "-q", "rsyslog"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The container's stdout (banner) and stderr (log), without compose's prefixes.
    fn logs(&self) -> String {
        let out = run(Command::new("docker").arg("logs").arg(self.container()));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn exec(&self, args: &[&str]) -> String {
        let out = run(Command::new("docker")
            .arg("exec")
            .arg(self.container())
            .args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn inspect(&self, format: &str) -> String {
        let out = run(Command::new("docker")
            .args(["inspect", "-f", format])
            .arg(self.container()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Events the intake's worker received, from `sekoia-ctl status --json` in the container.
    fn received(&self, intake: &str) -> u64 {
        let out = Command::new("docker")
            .args(["exec", &self.container(), "sekoia-ctl", "status", "--json"])
            .output()
            .expect("docker exec");
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return 0;
        };
        json["intakes"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == intake))
            .and_then(|i| i["input"]["received"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .arg("-p")
            .arg(&self.project)
            .args(["down", "--timeout", "60"])
            .current_dir(self.dir.path())
            .output();
    }
}

fn wait_for_health(site: &Site) {
    let healthy = wait_until(Duration::from_secs(60), || {
        site.inspect("{{.State.Health.Status}}").trim() == "healthy"
    });
    assert!(
        healthy,
        "not healthy: {}\n{}",
        site.inspect("{{json .State}}"),
        site.logs()
    );
}

fn docker_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Base images from debootstrap (kept once made), then the image (Docker's layer cache
/// keeps the dependency build until a manifest or Cargo.lock changes).
fn build_image(root: &Path) {
    let out = run(&mut Command::new(root.join("tests/deploy/base-images.sh")));
    let rust = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let started = Instant::now();
    run(Command::new("docker")
        .args(["build", "--network", "host", "-q", "-t", IMAGE])
        .arg("--build-arg")
        .arg(format!("RUST_VERSION={rust}"))
        .arg(root));
    eprintln!("image {IMAGE} built in {:?}", started.elapsed());
}

/// The address of Docker's default bridge on the host (docker0's): containers reach the
/// sink there.
fn bridge_gateway() -> Ipv4Addr {
    let out = run(Command::new("docker").args([
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
    ]));
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let name = if name.is_empty() {
        "docker0".to_string()
    } else {
        name
    };
    nix::ifaddrs::getifaddrs()
        .expect("getifaddrs")
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|v4| v4.ip())))
        .unwrap_or_else(|| panic!("no IPv4 address on the bridge {name}"))
}

fn send_tls(certs: &TestCerts, port: u16, n: usize) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect tls");
    let name = "localhost".try_into().expect("server name");
    let conn = rustls::ClientConnection::new(certs.client_config(), name).expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    for i in 0..n {
        writeln!(tls, "<86>Jan  5 01:02:03 tlshost sshd[{i}]: tls event {i}").expect("tls");
    }
    tls.flush().expect("flush");
    tls.conn.send_close_notify();
    let _ = tls.flush();
    // Read to the end before closing: a close with unread bytes (the server's session
    // tickets) is a reset, which docker-proxy passes on before relaying the last events.
    let _ = tls.sock.set_read_timeout(Some(WAIT));
    let _ = std::io::copy(&mut tls, &mut std::io::sink());
}

fn expect(key: &str, pri: u8, host: &str, app: &str, procid: &str, msg: &str) -> String {
    format!("<{pri}>1 TS {host} {app} {procid} LOG [SEKOIA@53288 intake_key=\"{key}\"] {msg}\n")
}

fn masked(lines: &[Vec<u8>]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(&mask_timestamp(l).1).into_owned())
        .collect();
    out.sort();
    out
}

/// Runs a command; panics with its output when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
