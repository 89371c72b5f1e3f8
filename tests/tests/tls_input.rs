//! TLS intakes against real clients: `openssl s_client` (the Debian `openssl` command) and
//! rustls. Client certificates (`tls_client_auth` against `tls_ca_name`), old protocol
//! versions refused with the protocol_version alert, a client that connects early and speaks
//! late, and the words of the refusal lines. Every delivered event is asserted byte for byte
//! at the TLS sink; a refused one is asserted absent once a later good event has arrived.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sekoia_tests::{
    forwarder::binary, free_tcp_port, mask_timestamp, wait_until, Forwarder, ForwarderBuilder,
    TestCerts, TlsSink,
};

const KEY: &str = "TlsInputKey0123456789";
const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    sink: TlsSink,
    fwd: Forwarder,
    port: u16,
    certs: TestCerts,
}

/// A forwarder with one tls intake whose entry ends with `extra` (YAML lines, indented).
fn setup(extra: &str) -> Setup {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let yaml = format!(
        "intakes:\n- name: Secure In\n  protocol: tls\n  port: {port}\n  intake_key: {KEY}\n{extra}"
    );
    let fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .certs_dir(&certs.certs_dir())
        .start();
    Setup {
        sink,
        fwd,
        port,
        certs,
    }
}

fn line(msg: &str) -> String {
    format!("<13>Jan  5 01:02:03 host1 app: {msg}\n")
}

fn delivered(msg: &str) -> String {
    format!("<13>1 TS host1 app - LOG [SEKOIA@53288 intake_key=\"{KEY}\"] {msg}\n")
}

fn masked(lines: &[Vec<u8>]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(&mask_timestamp(l).1).into_owned())
        .collect();
    out.sort();
    out
}

/// `openssl s_client` sending `msg` as one line, with `args` added; ends at stdin's end.
fn s_client(s: &Setup, msg: &str, args: &[&str]) -> Output {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{}", s.port))
        .arg("-servername")
        .arg("localhost")
        .arg("-CAfile")
        .arg(&s.certs.ca_pem)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command (Debian package openssl)");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(line(msg).as_bytes());
    drop(stdin);
    child.wait_with_output().expect("openssl s_client")
}

fn with_cert<'a>(cert: &'a Path, key: &'a Path) -> [&'a str; 4] {
    let as_str = |p: &'a Path| p.to_str().expect("utf-8 path");
    ["-cert", as_str(cert), "-key", as_str(key)]
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until the forwarder logged a refusal containing `words`.
fn refusal_logged(s: &Setup, words: &str) -> bool {
    wait_until(WAIT, || {
        let log = s.fwd.stderr();
        log.lines()
            .any(|l| l.contains("TLS connection refused") && l.contains(words))
    })
}

#[test]
fn required_client_auth_serves_the_ca_s_clients_and_refuses_the_others() {
    let s = setup("  tls_ca_name: ca.crt\n  tls_client_auth: required\n");
    let (cert, key) = s.certs.client_identity("client-a");
    let stranger = TestCerts::new(&["localhost"]);
    let (other_cert, other_key) = stranger.client_identity("client-x");

    let out = s_client(&s, "no certificate", &[]);
    assert!(
        refusal_logged(&s, "the client sent no certificate"),
        "{}\n{}",
        output_text(&out),
        s.fwd.stderr()
    );
    let out = s_client(&s, "other CA", &with_cert(&other_cert, &other_key));
    assert!(
        refusal_logged(&s, "the client's certificate was refused"),
        "{}\n{}",
        output_text(&out),
        s.fwd.stderr()
    );
    let out = s_client(&s, "from the CA", &with_cert(&cert, &key));
    let got = masked(&s.sink.wait_for(1, WAIT));
    assert_eq!(got, [delivered("from the CA")], "{}", output_text(&out));
    let log = s.fwd.stderr();
    assert!(
        log.contains("intake=\"Secure In\""),
        "the refusal names the intake:\n{log}"
    );
    assert!(log.contains("peer=127.0.0.1:"), "and the peer:\n{log}");
    // The refused clients' events never arrive: only the good one is there.
    assert_eq!(masked(&s.sink.lines()), [delivered("from the CA")]);
}

#[test]
fn optional_client_auth_serves_clients_without_a_certificate_but_not_a_foreign_one() {
    let s = setup("  tls_ca_name: ca.crt\n  tls_client_auth: optional\n");
    let (cert, key) = s.certs.client_identity("client-a");
    let stranger = TestCerts::new(&["localhost"]);
    let (other_cert, other_key) = stranger.client_identity("client-x");

    let out = s_client(&s, "other CA", &with_cert(&other_cert, &other_key));
    assert!(
        refusal_logged(&s, "the client's certificate was refused"),
        "{}",
        output_text(&out)
    );
    s_client(&s, "anonymous", &[]);
    s_client(&s, "from the CA", &with_cert(&cert, &key));
    let got = masked(&s.sink.wait_for(2, WAIT));
    assert_eq!(got, [delivered("anonymous"), delivered("from the CA")]);
}

#[test]
fn default_intake_asks_no_certificate_even_with_a_ca_named() {
    let s = setup("  tls_ca_name: ca.crt\n");
    s_client(&s, "anonymous", &[]);
    let got = masked(&s.sink.wait_for(1, WAIT));
    assert_eq!(got, [delivered("anonymous")]);
    let log = s.fwd.stderr();
    assert!(
        log.contains("field \"tls_ca_name\": verifies no client"),
        "the start warns that the CA verifies no client:\n{log}"
    );
}

#[test]
fn tls10_and_tls11_clients_get_the_protocol_version_alert_and_a_plain_log_line() {
    // One forwarder per version: a second refusal of the same kind within 10 s is only
    // counted in the next summary line (rate-limited), so each gets its own first line.
    for (flag, name) in [("-tls1", "TLS 1.0"), ("-tls1_1", "TLS 1.1")] {
        let s = setup("");
        let out = s_client(&s, "old", &[flag, "-cipher", "DEFAULT:@SECLEVEL=0"]);
        let text = output_text(&out);
        assert!(!out.status.success(), "{flag} must be refused:\n{text}");
        assert!(
            text.contains("alert protocol version") && text.contains("alert number 70"),
            "{flag}: the client is told why (alert 70):\n{text}"
        );
        let words = format!("the client offered {name}; this intake requires TLS 1.2 or later");
        assert!(refusal_logged(&s, &words), "{}", s.fwd.stderr());
        for modern in ["-tls1_2", "-tls1_3"] {
            let out = s_client(&s, modern, &[modern]);
            assert!(out.status.success(), "{modern}: {}", output_text(&out));
        }
        let got = masked(&s.sink.wait_for(2, WAIT));
        assert_eq!(got, [delivered("-tls1_2"), delivered("-tls1_3")]);
    }
}

#[test]
fn a_cipher_suite_mismatch_is_refused_with_both_sides_named() {
    let s = setup("");
    let out = s_client(&s, "cbc", &["-tls1_2", "-cipher", "AES128-SHA"]);
    let text = output_text(&out);
    assert!(!out.status.success(), "must be refused:\n{text}");
    assert!(text.contains("alert handshake failure"), "{text}");
    // OpenSSL offers no ECDHE group with RSA-only suites: rustls stops at the groups.
    let words = "the client offered no key exchange group (ECDHE) this intake accepts \
                 (it offered the cipher suites 0x002f, 0x00ff); this intake accepts the cipher \
                 suites TLS13_";
    assert!(refusal_logged(&s, words), "{}", s.fwd.stderr());
}

#[test]
fn a_client_that_connects_early_and_speaks_after_the_handshake_timeout_is_served() {
    let s = setup("  tls_handshake_timeout: 1\n");
    let tcp = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    // Silent for more than twice the handshake timeout: the connection must stay open.
    tcp.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    let closed = wait_until(
        Duration::from_millis(2_500),
        || !matches!(tcp.peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
    );
    assert!(
        !closed,
        "the forwarder closed a connection that had not spoken yet"
    );
    tcp.set_nonblocking(false).unwrap();
    let conn =
        rustls::ClientConnection::new(s.certs.client_config(), "localhost".try_into().unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(line("spoke late").as_bytes()).unwrap();
    tls.flush().unwrap();
    let got = masked(&s.sink.wait_for(1, Duration::from_secs(2)));
    assert_eq!(got, [delivered("spoke late")], "{}", s.fwd.stderr());
}

#[test]
fn check_warns_about_a_readable_key_and_refuses_client_auth_without_a_ca() {
    use std::os::unix::fs::PermissionsExt;
    let certs = TestCerts::new(&["localhost"]);
    let loose = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(&certs.server_key, loose).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("intakes.yaml");
    let check = |extra: &str| {
        let yaml = format!(
            "intakes:\n- name: Secure In\n  protocol: tls\n  port: 6514\n  intake_key: {KEY}\n{extra}"
        );
        std::fs::write(&cfg, yaml).unwrap();
        let out = Command::new(binary())
            .arg("check")
            .arg("--config")
            .arg(&cfg)
            .arg("--certs-dir")
            .arg(certs.certs_dir())
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            .arg("--extended-conf")
            .arg(dir.path())
            .env_remove("REGION")
            .env_remove("ENDPOINT")
            .output()
            .unwrap();
        (out.status.code(), output_text(&out))
    };
    let (code, text) = check("");
    assert_eq!(code, Some(0), "{text}");
    let fix = format!("chmod 600 {}", certs.server_key.display());
    assert!(
        text.contains("can be read or changed by its group or others"),
        "{text}"
    );
    assert!(text.contains(&fix), "{text}");
    let (code, text) = check("  tls_client_auth: required\n");
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains(
            "intake \"Secure In\": field \"tls_client_auth\": verifying clients needs a CA"
        ),
        "{text}"
    );
}
