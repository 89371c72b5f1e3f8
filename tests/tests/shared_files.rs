//! Files under SHM_DIR and SPOOL_DIR come from outside the process: the real forwarder
//! refuses folders others could write, never writes through a planted link, and starts past
//! a ring file it cannot use (moved aside and named in the log), losing nothing else.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sekoia_tests::forwarder::{binary, find_files};
use sekoia_tests::{free_tcp_port, wait_until, Forwarder, ForwarderBuilder, TestCerts, TlsSink};

const KEY: &str = "SharedFilesKey0123456";

fn yaml(port: u16) -> String {
    format!("intakes:\n- name: Files\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n")
}

/// Sends one line and waits until the sink has it.
fn send_and_expect(port: u16, sink: &TlsSink, text: &str) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    writeln!(c, "<13>Oct 11 22:14:15 host app: {text}").expect("send");
    drop(c);
    let arrived = wait_until(Duration::from_secs(20), || {
        sink.lines()
            .iter()
            .any(|l| String::from_utf8_lossy(l).contains(text))
    });
    assert!(arrived, "{text} did not arrive");
}

/// A forwarder with one TCP intake, sending to a fresh TLS sink.
fn start() -> (TestCerts, TlsSink, u16, Forwarder) {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let fwd = ForwarderBuilder::new(&yaml(port), sink.port)
        .ca_file(&certs.ca_pem)
        .start();
    (certs, sink, port, fwd)
}

fn the_ring(shm: &Path) -> PathBuf {
    let rings = find_files(shm, "ring");
    assert_eq!(rings.len(), 1, "{rings:?}");
    rings[0].clone()
}

#[test]
fn a_corrupt_ring_file_is_moved_aside_and_the_forwarder_starts() {
    let (_certs, sink, port, mut fwd) = start();
    send_and_expect(port, &sink, "before");
    assert!(fwd.terminate(Duration::from_secs(30)).success());

    let ring = the_ring(fwd.shm.path());
    let mut bytes = std::fs::read(&ring).unwrap();
    bytes[..8].copy_from_slice(b"GARBAGE!");
    std::fs::write(&ring, &bytes).unwrap();

    fwd.spawn();
    let log = fwd.stderr();
    assert!(log.contains("moved aside"), "{log}");
    assert!(log.contains(&ring.display().to_string()), "{log}");
    let aside: Vec<_> = std::fs::read_dir(ring.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".ring.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(&std::fs::read(aside[0].path()).unwrap()[..8], b"GARBAGE!");
    send_and_expect(port, &sink, "after");
}

#[test]
fn a_symlink_planted_as_a_ring_is_never_written_through() {
    let (_certs, sink, port, mut fwd) = start();
    assert!(fwd.terminate(Duration::from_secs(30)).success());

    let ring = the_ring(fwd.shm.path());
    let victim = fwd.dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::remove_file(&ring).unwrap();
    std::os::unix::fs::symlink(&victim, &ring).unwrap();

    fwd.spawn();
    send_and_expect(port, &sink, "through a fresh ring");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!std::fs::symlink_metadata(&ring)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fwd.stderr().contains("moved aside"));
}

#[test]
fn a_shm_dir_others_can_write_is_refused_naming_it_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let shm = tmp.path().join("shm");
    std::fs::create_dir(&shm).unwrap();
    std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = tmp.path().join("intakes.yaml");
    std::fs::write(&config, yaml(free_tcp_port())).unwrap();
    let mut child = Command::new(binary())
        .env_clear()
        .env("RESOLVE_HOSTNAMES", "false")
        .args(["--region", "OTHER", "--endpoint", "127.0.0.1:9"])
        .arg("--config")
        .arg(&config)
        .arg("--spool-dir")
        .arg(tmp.path().join("spool"))
        .arg("--shm-dir")
        .arg(&shm)
        .arg("--extended-conf")
        .arg(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited && !out.status.success(), "{stderr}");
    assert!(stderr.contains(&shm.display().to_string()), "{stderr}");
    assert!(stderr.contains("chmod go-w"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&shm).unwrap().count(),
        0,
        "nothing created in it"
    );
}
