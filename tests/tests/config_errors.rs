//! Bad configuration: every problem listed (file, intake, field, fix), non-zero exit, and
//! nothing bound. `check` validates without starting anything.

use std::process::Command;

use sekoia_tests::{forwarder::binary, free_tcp_port, is_listening};

fn run(args: &[&str], yaml: &str) -> (i32, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("intakes.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    std::fs::create_dir_all(dir.path().join("extended_conf")).unwrap();
    let mut cmd = Command::new(binary());
    cmd.args(args).arg("--config").arg(&cfg);
    if !args.contains(&"--spool-dir") {
        cmd.arg("--spool-dir").arg(dir.path().join("spool"));
    }
    if !args.contains(&"--certs-dir") {
        cmd.arg("--certs-dir").arg(dir.path().join("certs"));
    }
    let out = cmd
        .arg("--shm-dir")
        .arg(dir.path().join("shm"))
        .arg("--extended-conf")
        .arg(dir.path().join("extended_conf"))
        .env_remove("REGION")
        .env_remove("ENDPOINT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    )
}

#[test]
fn invalid_config_lists_every_problem_and_binds_nothing() {
    // The valid intake's port is held by us: a forwarder that bound ports before finishing
    // validation would fail on it ("cannot listen", exit 1) instead of listing the problems.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let good_port = holder.local_addr().unwrap().port();
    let yaml = format!(
        "intakes:\n- name: Good\n  protocol: tcp\n  port: {good_port}\n  intake_key: GoodKey0123456789\n\
         - name: BadPort\n  protocol: tcp\n  port: 70000\n  intake_key: GoodKey0123456789\n\
         - name: BadProto\n  protocol: sctp\n  port: 20517\n  intake_key: GoodKey0123456789\n\
         - name: BadKey\n  protocol: udp\n  port: 20518\n  intake_key: 'bad\"key'\n\
         - name: NoKey\n  protocol: udp\n  port: 20519\n"
    );
    let (code, _out, err, _dir) = run(&[], &yaml);
    assert_eq!(code, 3, "configuration problems exit with status 3:\n{err}");
    assert!(!err.contains("cannot listen"), "{err}");
    for needle in [
        "BadPort",
        "70000",
        "BadProto",
        "sctp",
        "BadKey",
        "NoKey",
        "intake_key",
        "intakes.yaml",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    drop(holder);
    assert!(!is_listening(good_port));
}

#[test]
fn run_lists_a_bad_region_and_the_intake_file_problems_together() {
    let yaml = "intakes:\n- name: BadPort\n  protocol: tcp\n  port: 70000\n  intake_key: GoodKey0123456789\n";
    let (code, _out, err, _dir) = run(&["--region", "MARS1"], yaml);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("2 configuration problems"), "{err}");
    assert!(err.contains("MARS1") && err.contains("70000"), "{err}");
}

#[test]
fn usage_errors_exit_2_as_clap_does() {
    let (code, _out, err, _dir) = run(&["check", "--no-such-flag"], "intakes: []\n");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn check_accepts_a_valid_config_and_rejects_an_unknown_region() {
    let port = free_tcp_port();
    let yaml = format!("intakes:\n- name: Good\n  protocol: tcp\n  port: {port}\n  intake_key: GoodKey0123456789\n");
    let (code, out, err, _dir) = run(&["check"], &yaml);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _out, err, _dir) = run(&["check", "--region", "MARS1"], &yaml);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("MARS1"), "{err}");
}

#[test]
fn misspelt_field_is_a_warning_with_a_suggestion() {
    let port = free_tcp_port();
    let yaml = format!("intakes:\n- name: Good\n  protocol: tcp\n  port: {port}\n  intake_key: GoodKey0123456789\n  degub: true\n");
    let (code, _out, err, _dir) = run(&["check"], &yaml);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("degub") && err.contains("debug"), "{err}");
}

#[test]
fn check_changes_nothing_on_disk_not_even_a_missing_spool() {
    let port = free_tcp_port();
    let yaml = format!("intakes:\n- name: Good\n  protocol: tcp\n  port: {port}\n  intake_key: GoodKey0123456789\n");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("not-yet").join("spool");
    let (code, _out, err, _d) = run(&["check", "--spool-dir", spool.to_str().unwrap()], &yaml);
    assert_eq!(code, 0, "{err}");
    assert!(
        !dir.path().join("not-yet").exists(),
        "check created the spool's folder"
    );
}

#[test]
fn unwritable_spool_directory_is_a_listed_problem() {
    let port = free_tcp_port();
    let yaml = format!("intakes:\n- name: Good\n  protocol: tcp\n  port: {port}\n  intake_key: GoodKey0123456789\n");
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let spool = blocker.join("spool");
    let (code, _out, err, _d) = run(&["check", "--spool-dir", spool.to_str().unwrap()], &yaml);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("SPOOL_DIR") && err.contains(spool.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn tls_intake_with_an_unusable_key_is_a_listed_problem() {
    let port = free_tcp_port();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(
        certs.join("server.crt"),
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(certs.join("server.key"), b"not a key at all\n").unwrap();
    let yaml = format!("intakes:\n- name: Secure\n  protocol: tls\n  port: {port}\n  intake_key: GoodKey0123456789\n");
    let (code, _out, err, _d) = run(&["check", "--certs-dir", certs.to_str().unwrap()], &yaml);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("Secure") && err.contains("server."),
        "names the intake and the file:\n{err}"
    );
}
