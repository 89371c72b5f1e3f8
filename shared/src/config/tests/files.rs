//! Files: main, tls key/certificate/CA, extended directory, settings that name files.

use super::*;

#[test]
fn tls_intake_finds_default_files_and_refuses_missing_ones() {
    let f = Fixture::new();
    let text = format!("intakes:\n{}", entry("Secure", "tls", "6514", K1));
    let p = f.problems(&text);
    assert_eq!(p.len(), 2, "key and certificate: {p:#?}");
    assert!(
        p[0].contains("field \"tls_key_name\": the default private key file"),
        "{}",
        p[0]
    );
    assert!(p[1].contains("field \"tls_cert_name\""), "{}", p[1]);
    f.write("certs/server.key", "k");
    f.write("certs/server.crt", "c");
    let cfg = f.ok(&text);
    let tls = cfg.intakes[0].tls.clone().expect("tls files");
    assert_eq!(tls.key, f.path("certs/server.key"));
    assert_eq!(tls.cert, f.path("certs/server.crt"));
    assert_eq!(tls.ca, f.path("certs/server.crt"));
}

#[test]
fn tls_names_work_with_or_without_suffix_and_a_named_ca_must_exist() {
    let f = Fixture::new();
    f.write("certs/edge.key", "k");
    f.write("certs/edge.crt", "c");
    let base = entry("Secure", "tls", "6514", K1);
    f.ok(&format!(
        "intakes:\n{base}  tls_key_name: edge\n  tls_cert_name: edge.crt\n"
    ));
    let p = f.problems(&format!(
        "intakes:\n{base}  tls_key_name: edge\n  tls_cert_name: edge\n  tls_ca_name: myca\n  tls_client_auth: required\n"
    ));
    assert!(
        only(&p).contains("field \"tls_ca_name\": the CA certificate file"),
        "{p:#?}"
    );
}

#[test]
fn client_auth_needs_a_named_ca_and_a_ca_alone_is_a_warning() {
    let f = Fixture::new();
    f.write("certs/server.key", "k");
    f.write("certs/server.crt", "c");
    f.write("certs/clients.crt", "c");
    let base = entry("Secure", "tls", "6514", K1);
    let p = f.problems(&format!("intakes:\n{base}  tls_client_auth: required\n"));
    let p = only(&p);
    assert!(
        p.contains("intake \"Secure\": field \"tls_client_auth\""),
        "{p}"
    );
    assert!(
        p.contains("`tls_ca_name` is not set; add `tls_ca_name: NAME`"),
        "{p}"
    );
    let cfg = f.ok(&format!("intakes:\n{base}  tls_ca_name: clients\n"));
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    let w = cfg.warnings[0].to_string();
    assert!(
        w.contains("field \"tls_ca_name\": verifies no client"),
        "{w}"
    );
    let cfg = f.ok(&format!(
        "intakes:\n{base}  tls_ca_name: clients\n  tls_client_auth: Optional\n  tls_max_handshakes: 64\n  tls_handshake_timeout: 3\n"
    ));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let tls = cfg.intakes[0].tls.clone().expect("tls");
    assert_eq!(tls.ca, f.path("certs/clients.crt"));
    let expected = TlsHandshake {
        client_auth: ClientAuth::Optional,
        max_in_progress: 64,
        timeout_secs: 3,
    };
    assert_eq!(tls.handshake, expected);
    assert_eq!(
        f.ok(&format!("intakes:\n{base}")).intakes[0]
            .tls
            .clone()
            .expect("tls")
            .handshake,
        TlsHandshake::default()
    );
}

#[test]
fn bad_handshake_settings_are_problems_with_a_fix() {
    let f = Fixture::new();
    f.write("certs/server.key", "k");
    f.write("certs/server.crt", "c");
    let base = entry("Secure", "tls", "6514", K1);
    let p = f.problems(&format!(
        "intakes:\n{base}  tls_client_auth: maybe\n  tls_max_handshakes: 0\n  tls_handshake_timeout: 4000\n"
    ));
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p[0].contains("\"maybe\" is not a known value; use none, optional or required"));
    assert!(
        p[1].contains("field \"tls_max_handshakes\": 0 is out of range"),
        "{}",
        p[1]
    );
    assert!(p[2].contains("field \"tls_handshake_timeout\": 4000 is out of range; use a whole number from 1 to 3600"), "{}", p[2]);
}

#[test]
fn a_key_file_others_can_read_is_a_warning_naming_the_file_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let key = f.write("certs/server.key", "k");
    f.write("certs/server.crt", "c");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let cfg = f.ok(&format!("intakes:\n{}", entry("Secure", "tls", "6514", K1)));
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    let w = cfg.warnings[0].to_string();
    assert!(w.contains("field \"tls_key_name\""), "{w}");
    assert!(w.contains(&format!("chmod 600 {}", key.display())), "{w}");
}

#[test]
fn tls_fields_on_a_tcp_intake_are_warnings() {
    let f = Fixture::new();
    let cfg = f.ok(&format!(
        "intakes:\n{}  tls_key_name: x\n",
        entry("A", "tcp", "1", K1)
    ));
    assert_eq!(cfg.warnings.len(), 1);
    assert!(cfg.warnings[0]
        .to_string()
        .contains("is ignored: the protocol is tcp"));
}

#[test]
fn empty_list_missing_file_and_syntax_error_are_problems() {
    let f = Fixture::new();
    assert!(only(&f.problems("intakes: []\n")).contains("no intake is defined"));
    assert!(only(&f.problems("intakes:\n- name: [a\n")).contains("at line 2"));
    let mut s = f.settings();
    s.config_path = f.path("missing.yaml");
    let err = load(s).map(|_| ()).expect_err("refused");
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].what.starts_with("cannot be read"));
}

#[test]
fn extended_files_continue_ids_in_name_order_and_conf_files_are_named() {
    let f = Fixture::new();
    f.write(
        "intakes.yaml",
        &format!("intakes:\n{}", entry("Main", "tcp", "1", K1)),
    );
    f.write(
        "ext/b.yaml",
        &format!("intakes:\n{}", entry("B", "tcp", "3", K3)),
    );
    f.write(
        "ext/a.yaml",
        &format!("intakes:\n{}", entry("A", "udp", "2", K2)),
    );
    f.write("ext/legacy.conf", "module(load=\"imtcp\")\n");
    let mut s = f.settings();
    s.extended_conf_dir = Some(f.path("ext"));
    let cfg = load(s).map_err(|e| e.to_string()).expect("loads");
    let order: Vec<(u16, &str)> = cfg
        .intakes
        .iter()
        .map(|i| (i.id, i.name.as_str()))
        .collect();
    assert_eq!(order, vec![(0, "Main"), (1, "A"), (2, "B")]);
    assert_eq!(cfg.intakes[1].source, f.path("ext/a.yaml"));
    assert_eq!(cfg.intakes[0].queue_size, 33_333);
    assert_eq!(cfg.warnings.len(), 1);
    let w = cfg.warnings[0].to_string();
    assert!(
        w.contains("legacy.conf: rsyslog syntax is not executed by sekoia-forwarder"),
        "{w}"
    );
}

#[test]
fn same_metric_name_across_files_is_refused() {
    let f = Fixture::new();
    f.write(
        "intakes.yaml",
        &format!("intakes:\n{}", entry("Fire Wall", "tcp", "1", K1)),
    );
    f.write(
        "ext/x.yaml",
        &format!("intakes:\n{}", entry("fire_wall", "tcp", "2", K2)),
    );
    let mut s = f.settings();
    s.extended_conf_dir = Some(f.path("ext"));
    let err = load(s).map(|_| ()).expect_err("refused");
    assert!(
        err.to_string().contains("same metric name `fire_wall`"),
        "{err}"
    );
}

#[test]
fn missing_ca_file_and_extended_dir_settings_are_problems() {
    let f = Fixture::new();
    f.write(
        "intakes.yaml",
        &format!("intakes:\n{}", entry("A", "tcp", "1", K1)),
    );
    let mut s = f.settings();
    s.ca_file = Some(f.path("nope.pem"));
    s.extended_conf_dir = Some(f.path("nodir"));
    let err = load(s).map(|_| ()).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("setting --ca-file / SEKOIA_CA_FILE"),
        "{text}"
    );
    assert!(
        text.contains("setting --extended-conf / EXTENDED_CONF_DIR"),
        "{text}"
    );
}

#[test]
fn no_panic_on_odd_documents() {
    let f = Fixture::new();
    for text in [
        "intakes:\n- ~\n",
        "intakes:\n- [1, 2]\n",
        "intakes:\n- {1: 2}\n",
        "intakes:\n- name: !!binary aGk=\n",
        "\t",
        "intakes:\n- name: A\n  port: 1e9\n",
    ] {
        let _ = f.load(text);
    }
}

#[test]
fn examine_keeps_the_intakes_that_passed_their_own_checks() {
    let f = Fixture::new();
    let main = format!(
        "intakes:\n{}{}",
        entry("Good", "tcp", "20516", K1),
        entry("Bad", "tcp", "70000", K2)
    );
    f.write("intakes.yaml", &main);
    let examined = examine_files(f.settings());
    assert_eq!(examined.problems.len(), 1, "{:?}", examined.problems);
    let names: Vec<&str> = examined
        .config
        .intakes
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    // `check` goes on testing the good intake's port and certificates.
    assert_eq!(names, ["Good"]);
    assert!(examined.into_result().is_err());
}
