//! Interoperability with real, independent senders, as users' relays and devices use them:
//! rsyslog relaying over TCP (LF and octet-counted), UDP and TLS (GnuTLS and OpenSSL drivers),
//! syslog-ng over TCP and TLS (`network()` and `syslog()`), `openssl s_client` and `loggen`.
//! Every line is asserted byte for byte at the TLS sink; the TLS version each sender
//! negotiated is read from the forwarder's own log and printed (the sender matrix in
//! docs/compatibility.md is made from these runs).

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sekoia_tests::rsyslog::Rsyslog;
use sekoia_tests::syslog_ng::{self, SyslogNg};
use sekoia_tests::{
    free_port_both, free_tcp_port, mask_timestamp, Forwarder, ForwarderBuilder, TestCerts, TlsSink,
};

const KEY_TCP: &str = "InteropTcpKey0123456789";
const KEY_UDP: &str = "InteropUdpKey0123456789";
const KEY_TLS: &str = "InteropTlsKey0123456789";
const WAIT: Duration = Duration::from_secs(20);
const EVENTS: usize = 50;

/// The forwarder under test with one intake per transport, and the sink behind it.
struct Setup {
    sink: TlsSink,
    fwd: Forwarder,
    tcp: u16,
    udp: u16,
    tls: u16,
    certs: TestCerts,
}

fn setup() -> Setup {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let (tcp, udp, tls) = (free_tcp_port(), free_port_both(), free_tcp_port());
    let yaml = format!(
        "---\nintakes:\n- name: Relay TCP\n  protocol: tcp\n  port: {tcp}\n  intake_key: {KEY_TCP}\n\
         - name: Relay UDP\n  protocol: udp\n  port: {udp}\n  intake_key: {KEY_UDP}\n\
         - name: Relay TLS\n  protocol: tls\n  port: {tls}\n  intake_key: {KEY_TLS}\n"
    );
    let fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .certs_dir(&certs.certs_dir())
        .env("RUST_LOG", "info,sekoia_shared::input::tls=debug")
        .start();
    Setup {
        sink,
        fwd,
        tcp,
        udp,
        tls,
        certs,
    }
}

/// RFC 3164 lines as a device sends them to its relay, numbered by `seq=`.
fn device_lines(case: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("<13>Nov 30 10:00:00 dev-1 app[42]: interop {case} seq={i}"))
        .collect()
}

/// What the forwarder sends for [`device_lines`], timestamp masked, sorted.
fn expected(key: &str, case: &str, n: usize) -> Vec<String> {
    let mut want: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "<13>1 TS dev-1 app 42 LOG [SEKOIA@53288 intake_key=\"{key}\"] interop {case} seq={i}\n"
            )
        })
        .collect();
    want.sort();
    want
}

fn masked(lines: &[Vec<u8>]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(&mask_timestamp(l).1).into_owned())
        .collect();
    out.sort();
    out
}

/// Sends `lines` LF-terminated on one TCP connection to `port` (a relay's input).
fn send_tcp(port: u16, lines: &[String]) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to the relay");
    for l in lines {
        c.write_all(format!("{l}\n").as_bytes()).expect("send");
    }
}

/// The TLS versions of the sessions the forwarder established so far, from its debug log.
fn tls_versions(fwd: &Forwarder) -> Vec<String> {
    let log = format!("{}{}", fwd.stdout(), fwd.stderr());
    log.lines()
        .filter(|l| l.contains("TLS session established"))
        .filter_map(|l| l.split("version=").nth(1))
        .filter_map(|v| v.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Waits for every line of `case` and asserts them exactly, without framing errors.
fn assert_delivered(s: &Setup, key: &str, case: &str, n: usize, relay_log: &str) {
    let got = masked(&s.sink.wait_for(n, WAIT));
    let want = expected(key, case, n);
    if got != want {
        let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).take(3).collect();
        let unexpected: Vec<&String> = got.iter().filter(|g| !want.contains(g)).take(3).collect();
        panic!(
            "{case}: {} lines of {n}; missing e.g. {missing:?}; unexpected e.g. {unexpected:?}\n\
             sender log:\n{relay_log}\nforwarder:\n{}",
            got.len(),
            s.fwd.stderr()
        );
    }
    assert!(s.sink.framing_errors().is_empty());
}

/// Asserts the forwarder negotiated one TLS 1.2-or-later session and prints its version.
fn report_tls(s: &Setup, sender: &str) -> String {
    let versions = tls_versions(&s.fwd);
    assert!(
        !versions.is_empty() && versions.iter().all(|v| v == "TLSv1_2" || v == "TLSv1_3"),
        "{sender}: negotiated {versions:?}"
    );
    println!("{sender}: negotiated {versions:?}");
    versions[0].clone()
}

// ---------------------------------------------------------------------------------------
// rsyslog relays

/// rsyslog relaying what it receives on `relay` with one omfwd `action`.
fn rsyslog_relay(s: &Setup, relay: u16, action: &str) -> Rsyslog {
    let dir = tempfile::tempdir().expect("rsyslog dir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work");
    let conf = format!(
        r#"global(workDirectory="{work}" net.enableDNS="off" defaultNetstreamDriverCAFile="{ca}")
module(load="imtcp")
input(type="imtcp" port="{relay}" ruleset="relay")
ruleset(name="relay") {{
  action(type="omfwd" target="127.0.0.1" {action})
}}
"#,
        work = work.display(),
        ca = s.certs.ca_pem.display(),
    );
    Rsyslog::start_conf(dir, &conf, relay)
}

fn rsyslog_case(case: &str, key: &str, action: impl FnOnce(&Setup) -> String) -> Setup {
    let s = setup();
    let relay = free_tcp_port();
    let r = rsyslog_relay(&s, relay, &action(&s));
    send_tcp(relay, &device_lines(case, EVENTS));
    assert_delivered(&s, key, case, EVENTS, &r.log());
    s
}

#[test]
fn rsyslog_relays_over_tcp_with_lf_framing() {
    rsyslog_case("rsyslog-tcp-lf", KEY_TCP, |s| {
        format!(
            r#"port="{}" protocol="tcp" TCP_Framing="traditional""#,
            s.tcp
        )
    });
}

#[test]
fn rsyslog_relays_over_tcp_with_octet_counting() {
    rsyslog_case("rsyslog-tcp-octet", KEY_TCP, |s| {
        format!(
            r#"port="{}" protocol="tcp" TCP_Framing="octet-counted""#,
            s.tcp
        )
    });
}

#[test]
fn rsyslog_relays_over_udp() {
    rsyslog_case("rsyslog-udp", KEY_UDP, |s| {
        format!(r#"port="{}" protocol="udp""#, s.udp)
    });
}

fn rsyslog_tls_action(s: &Setup, driver: &str) -> String {
    format!(
        r#"port="{}" protocol="tcp" TCP_Framing="octet-counted" StreamDriver="{driver}" StreamDriverMode="1" StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost""#,
        s.tls
    )
}

#[test]
fn rsyslog_relays_over_tls_with_gnutls() {
    let s = rsyslog_case("rsyslog-gtls", KEY_TLS, |s| rsyslog_tls_action(s, "gtls"));
    report_tls(&s, "rsyslog gtls");
}

#[test]
fn rsyslog_relays_over_tls_with_openssl() {
    let s = rsyslog_case("rsyslog-ossl", KEY_TLS, |s| rsyslog_tls_action(s, "ossl"));
    report_tls(&s, "rsyslog ossl");
}

/// An RFC 5424 message relayed by rsyslog keeps its original host name (not the relay's),
/// app-name and procid; rsyslog's default forward format drops its MSGID and SD.
#[test]
fn rsyslog_relay_keeps_the_original_host_of_an_rfc5424_message() {
    let s = setup();
    let relay = free_tcp_port();
    let action = format!(r#"port="{}" protocol="tcp""#, s.tcp);
    let r = rsyslog_relay(&s, relay, &action);
    let line = "<14>1 2026-11-30T10:00:00.123Z fw-origin.example.com filterlog 4242 ID7 [ex@32473 a=\"b\"] blocked 10.0.0.1";
    send_tcp(relay, &[line.to_string()]);
    let got = masked(&s.sink.wait_for(1, WAIT));
    assert_eq!(
        got,
        vec![format!(
            "<14>1 TS fw-origin.example.com filterlog 4242 LOG [SEKOIA@53288 intake_key=\"{KEY_TCP}\"] blocked 10.0.0.1\n"
        )],
        "relay log:\n{}",
        r.log()
    );
}

// ---------------------------------------------------------------------------------------
// syslog-ng

/// syslog-ng relaying what it receives on `relay` to `destination`.
fn syslog_ng_relay(relay: u16, destination: &str) -> SyslogNg {
    let body = format!(
        r#"options {{ keep-hostname(yes); chain-hostnames(no); use-dns(no); stats-freq(0); time-reopen(60); }};
source s_in {{ network(ip("127.0.0.1") port({relay}) transport("tcp")); }};
destination d_out {{ {destination} }};
log {{ source(s_in); destination(d_out); }};
"#
    );
    SyslogNg::start(&body, relay)
}

fn syslog_ng_tls(s: &Setup, driver: &str) -> String {
    format!(
        r#"{driver}("localhost" port({}) transport("tls") tls(ca-file("{}") peer-verify(required-trusted)));"#,
        s.tls,
        s.certs.ca_pem.display()
    )
}

fn syslog_ng_case(case: &str, key: &str, destination: impl FnOnce(&Setup) -> String) -> Setup {
    println!("{}", syslog_ng::version());
    let s = setup();
    let relay = free_tcp_port();
    let ng = syslog_ng_relay(relay, &destination(&s));
    send_tcp(relay, &device_lines(case, EVENTS));
    assert_delivered(&s, key, case, EVENTS, &ng.log());
    s
}

#[test]
fn syslog_ng_network_tcp() {
    syslog_ng_case("syslog-ng-tcp", KEY_TCP, |s| {
        format!(r#"network("127.0.0.1" port({}) transport("tcp"));"#, s.tcp)
    });
}

#[test]
fn syslog_ng_network_tls() {
    let s = syslog_ng_case("syslog-ng-network-tls", KEY_TLS, |s| {
        syslog_ng_tls(s, "network")
    });
    report_tls(&s, "syslog-ng network() tls");
}

#[test]
fn syslog_ng_syslog_protocol_tls() {
    let s = syslog_ng_case("syslog-ng-syslog-tls", KEY_TLS, |s| {
        syslog_ng_tls(s, "syslog")
    });
    report_tls(&s, "syslog-ng syslog() tls");
}

/// Established TCP connections whose remote port is `port`, from /proc/net/tcp{,6}.
fn established_to(port: u16) -> usize {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|file| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[2].ends_with(&want) && f[3] == "01"
                })
                .count()
        })
        .sum()
}

/// syslog-ng's TLS destination connects at start and sends its ClientHello only with the
/// first message. A quiet 15 s must not cost that message its minute of `time_reopen`.
#[test]
fn syslog_ng_tls_connected_early_delivers_after_15_s_idle() {
    let s = setup();
    let relay = free_tcp_port();
    let ng = syslog_ng_relay(relay, &syslog_ng_tls(&s, "network"));
    assert!(
        sekoia_tests::wait_until(Duration::from_secs(10), || established_to(s.tls) > 0),
        "syslog-ng did not connect ahead of its first message:\n{}",
        ng.log()
    );
    // The scenario itself: the connection stays quiet for 15 s.
    std::thread::sleep(Duration::from_secs(15));
    let sent = Instant::now();
    send_tcp(relay, &device_lines("syslog-ng-idle", 1));
    let got = masked(&s.sink.wait_for(1, WAIT));
    let took = sent.elapsed();
    assert_eq!(
        got,
        expected(KEY_TLS, "syslog-ng-idle", 1),
        "syslog-ng:\n{}\nforwarder:\n{}",
        ng.log(),
        s.fwd.stderr()
    );
    assert!(
        took < Duration::from_secs(3),
        "first event after an idle start took {took:?}"
    );
    report_tls(&s, "syslog-ng network() tls after 15 s idle");
}

// ---------------------------------------------------------------------------------------
// openssl s_client and loggen

/// Runs `openssl s_client` with `version_flag`, sends one line, and returns its exit status
/// and output.
fn s_client(s: &Setup, version_flag: &str, line: &str) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", s.tls)])
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(&s.certs.ca_pem)
        .arg(version_flag)
        // Debian's default security level forbids TLS 1.0/1.1 in the client itself.
        .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    if let Some(mut stdin) = child.stdin.take() {
        // A refused client may be gone before it reads: a broken pipe is part of refusal.
        let _ = stdin.write_all(format!("{line}\n").as_bytes());
    }
    let out = child.wait_with_output().expect("s_client output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssl_s_client_tls_1_2_and_1_3_are_accepted_1_0_and_1_1_refused() {
    let s = setup();
    let line = |v: &str| format!("<13>Nov 30 10:00:00 dev-1 app[42]: interop s_client-{v} seq=0");
    for v in ["tls1_2", "tls1_3"] {
        let (ok, out) = s_client(&s, &format!("-{v}"), &line(v));
        assert!(ok, "s_client -{v} failed:\n{out}");
    }
    let got = masked(&s.sink.wait_for(2, WAIT));
    let mut want = [
        expected(KEY_TLS, "s_client-tls1_2", 1),
        expected(KEY_TLS, "s_client-tls1_3", 1),
    ]
    .concat();
    want.sort();
    assert_eq!(got, want, "forwarder:\n{}", s.fwd.stderr());
    let mut versions = tls_versions(&s.fwd);
    versions.sort();
    assert_eq!(versions, ["TLSv1_2", "TLSv1_3"]);
    println!("openssl s_client: negotiated {versions:?}");

    for v in ["tls1", "tls1_1"] {
        let (ok, out) = s_client(&s, &format!("-{v}"), &line(v));
        assert!(!ok, "s_client -{v} was accepted:\n{out}");
        let alert = out.lines().find(|l| l.contains("alert")).unwrap_or("");
        println!("openssl s_client -{v}: refused ({alert})");
    }
    // Nothing from the refused clients, and the intake still serves.
    let (ok, out) = s_client(&s, "-tls1_3", &line("after-refusals"));
    assert!(ok, "{out}");
    let got = masked(&s.sink.wait_for(3, WAIT));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().any(|l| l.contains("s_client-after-refusals")));
}

/// loggen sends the lines of a file as they are (`-R FILE -d`), over TCP and over TLS.
fn loggen_case(case: &str, key: &str, tls: bool) {
    let s = setup();
    let n = 200;
    let file = s.fwd.dir.path().join(format!("{case}.txt"));
    std::fs::write(&file, device_lines(case, n).join("\n") + "\n").expect("write lines");
    let port = if tls { s.tls } else { s.tcp };
    let mut cmd = syslog_ng::loggen();
    // One transport plugin at a time: the TLS one (-U) streams by itself.
    cmd.arg(if tls { "-U" } else { "-S" })
        .args(["-Q", "-d", "-R"])
        .arg(&file);
    let out = cmd
        .args(["127.0.0.1", &port.to_string()])
        .output()
        .expect("loggen runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // loggen exits 0 even when it refuses its arguments: its own summary says what it sent.
    assert!(
        out.status.success() && stderr.contains(&format!("count={n},")),
        "loggen: {stderr}"
    );
    assert_delivered(&s, key, case, n, &stderr);
    if tls {
        report_tls(&s, "loggen -U");
    }
}

#[test]
fn loggen_over_tcp() {
    loggen_case("loggen-tcp", KEY_TCP, false);
}

#[test]
fn loggen_over_tls() {
    loggen_case("loggen-tls", KEY_TLS, true);
}
