//! The workers' user (`--user` / `RUN_AS_USER`): started as root, the supervisor keeps root
//! and binds the ports, its workers run as the named user with no supplementary group, and
//! events still arrive exactly. A user that does not exist is a configuration error.
//! These tests need root (the CI runs as root); without it they check instead that a switch
//! is refused with a clear problem.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::unistd::{geteuid, User};
use sekoia_tests::events::sequence_counts;
use sekoia_tests::forwarder::{binary, find_files};
use sekoia_tests::{free_tcp_port, mask_timestamp, ForwarderBuilder, TestCerts, TlsSink};

const KEY: &str = "RunAsIntakeKey0123456789";
const EVENTS: u64 = 2_000;
const WAIT: Duration = Duration::from_secs(30);

/// The `Uid:`, `Gid:` and `Groups:` lines of `/proc/<pid>/status`, values only.
fn credentials(pid: i32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let ids = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .map(|v| v.parse().expect("numeric id"))
            .collect()
    };
    (ids("Uid:"), ids("Gid:"), ids("Groups:"))
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `check` with `args`, on a one-intake configuration whose folders are in a temporary
/// folder of mode `mode`: (exit code, stderr).
fn check(mode: u32, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    chmod(dir.path(), mode);
    let cfg = dir.path().join("intakes.yaml");
    let yaml = format!(
        "intakes:\n- name: One\n  protocol: tcp\n  port: {}\n  intake_key: {KEY}\n",
        free_tcp_port()
    );
    std::fs::write(&cfg, yaml).expect("write config");
    std::fs::create_dir_all(dir.path().join("extended_conf")).expect("extended_conf");
    let out = Command::new(binary())
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .arg("--shm-dir")
        .arg(dir.path().join("shm"))
        .arg("--extended-conf")
        .arg(dir.path().join("extended_conf"))
        .args(args)
        .output()
        .expect("run check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_user_is_a_configuration_error() {
    let (code, err) = check(0o755, &["--user", "no-such-user-sekoia"]);
    assert_eq!(
        code, 3,
        "an unknown user is a configuration problem:\n{err}"
    );
    assert!(err.contains("RUN_AS_USER"), "{err}");
    assert!(
        err.contains("there is no user named \"no-such-user-sekoia\""),
        "{err}"
    );
}

#[test]
fn spool_the_user_cannot_reach_is_a_configuration_error() {
    // The spool folder is inside a folder of ours that only we may search.
    let (code, err) = check(0o700, &["--user", "nobody"]);
    assert_eq!(code, 3, "{err}");
    if geteuid().is_root() {
        assert!(
            err.contains("user nobody cannot reach the spool folder"),
            "{err}"
        );
        assert!(err.contains("search permission"), "{err}");
    } else {
        assert!(err.contains("only root can switch"), "{err}");
    }
}

#[test]
fn workers_run_as_the_named_user_and_deliver_exactly() {
    let nobody = User::from_name("nobody")
        .expect("user database")
        .expect("a user named nobody");
    if !geteuid().is_root() {
        // Only root can switch users: the same setting is then refused, clearly.
        let (code, err) = check(0o755, &["--user", "nobody"]);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("only root can switch"), "{err}");
        return;
    }
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    // The uplink (running as nobody) reads the CA file.
    chmod(certs.dir.path(), 0o755);
    chmod(&certs.ca_pem, 0o644);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let yaml =
        format!("intakes:\n- name: RunAs\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n");
    let mut fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .sandbox_mode(0o755)
        .arg("--user")
        .arg("nobody")
        .start();

    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    let (sup_uid, _, _) = credentials(fwd.pid() as i32);
    assert_eq!(sup_uid, vec![0; 4], "the supervisor keeps root");
    let workers: Vec<i32> = ["ingest-worker", "uplink-worker"]
        .iter()
        .flat_map(|w| fwd.worker_pids(w))
        .collect();
    assert_eq!(workers.len(), 2, "one ingest and one uplink worker");
    for pid in &workers {
        let (u, g, groups) = credentials(*pid);
        assert_eq!(
            u,
            vec![uid; 4],
            "worker {pid} runs as nobody (real, effective, saved, fs)"
        );
        assert_eq!(g, vec![gid; 4], "worker {pid} has nobody's group");
        assert!(
            groups.is_empty(),
            "worker {pid} keeps supplementary groups {groups:?}"
        );
    }

    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut payload = Vec::new();
    for seq in 0..EVENTS {
        payload.extend_from_slice(format!("<14>host app: seq={seq:08} end\n").as_bytes());
    }
    client.write_all(&payload).expect("send");
    drop(client);
    let lines = sink.wait_for(EVENTS as usize, WAIT);
    let counts = sequence_counts(&lines);
    assert_eq!(counts.len() as u64, EVENTS, "every event arrived");
    assert!(counts.values().all(|&n| n == 1), "no event twice");
    let (_, first) = mask_timestamp(&lines[0]);
    assert!(
        String::from_utf8_lossy(&first).starts_with(&format!(
            "<14>1 TS host app - LOG [SEKOIA@53288 intake_key=\"{KEY}\"] seq="
        )),
        "{}",
        String::from_utf8_lossy(&first)
    );

    // Every private file is the workers' user's, and private.
    let rings = find_files(fwd.shm.path(), "ring");
    assert_eq!(rings.len(), 1, "one ring");
    for path in rings.iter().chain([&fwd.spool]) {
        let meta = std::fs::metadata(path).expect("stat");
        assert_eq!(meta.uid(), uid, "{} belongs to nobody", path.display());
    }
    assert_eq!(
        std::fs::metadata(&rings[0]).expect("stat").mode() & 0o777,
        0o600
    );

    // An orderly stop saves as the user and a restart reopens the user's files.
    assert!(fwd.terminate(WAIT).success(), "{}", fwd.stderr());
    fwd.spawn();
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect again");
    client
        .write_all(format!("<14>host app: seq={EVENTS:08} end\n").as_bytes())
        .expect("send");
    drop(client);
    let lines = sink.wait_for(EVENTS as usize + 1, WAIT);
    assert_eq!(
        sequence_counts(&lines).len() as u64,
        EVENTS + 1,
        "{}",
        fwd.stderr()
    );
}
