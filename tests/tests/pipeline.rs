//! End to end: the real forwarder with tcp, udp and tls intakes, real clients (`logger` and
//! our own), and the TLS sink asserting the exact bytes of every line.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use sekoia_tests::{
    free_port_both, free_tcp_port, mask_timestamp, Forwarder, ForwarderBuilder, TestCerts, TlsSink,
};

const KEY_TCP: &str = "TcpIntakeKey0123456789";
const KEY_UDP: &str = "UdpIntakeKey0123456789";
const KEY_TLS: &str = "TlsIntakeKey0123456789";
const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    sink: TlsSink,
    fwd: Forwarder,
    tcp: u16,
    udp: u16,
    tls: u16,
    certs: TestCerts,
}

fn setup(debug_tcp: bool) -> Setup {
    setup_with(debug_tcp, |b| b)
}

fn setup_with(debug_tcp: bool, more: impl FnOnce(ForwarderBuilder) -> ForwarderBuilder) -> Setup {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let (tcp, udp, tls) = (free_tcp_port(), free_port_both(), free_tcp_port());
    let yaml = format!(
        "---\nintakes:\n- name: Techno TCP\n  protocol: tcp\n  port: {tcp}\n  intake_key: {KEY_TCP}\n  debug: {debug_tcp}\n\
         - name: Techno2\n  protocol: UDP\n  port: {udp}\n  intake_key: {KEY_UDP}\n\
         - name: Techno3\n  protocol: tls\n  port: {tls}\n  intake_key: {KEY_TLS}\n"
    );
    let builder = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .certs_dir(&certs.certs_dir());
    let fwd = more(builder).start();
    Setup {
        sink,
        fwd,
        tcp,
        udp,
        tls,
        certs,
    }
}

fn masked(lines: &[Vec<u8>]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(&mask_timestamp(l).1).into_owned())
        .collect();
    out.sort();
    out
}

fn expect(key: &str, pri: u8, host: &str, app: &str, procid: &str, msg: &str) -> String {
    format!("<{pri}>1 TS {host} {app} {procid} LOG [SEKOIA@53288 intake_key=\"{key}\"] {msg}\n")
}

#[test]
fn tcp_lines_in_both_framings_arrive_byte_exact() {
    let s = setup(false);
    let mut c = TcpStream::connect(("127.0.0.1", s.tcp)).unwrap();
    let five = "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\"] An application event";
    let mut payload = Vec::new();
    payload.extend_from_slice(
        b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8\n",
    );
    payload.extend_from_slice(format!("{} {five}", five.len()).as_bytes());
    payload.extend_from_slice(b"<13>1 2024-05-01T10:00:00Z fw01 filterlog 123 - - hello\tworld\n");
    payload.extend_from_slice(b"2024-05-01 10:00:00 a line that starts with digits\n");
    payload.extend_from_slice(b"\n\n<14>no trailing newline at close");
    c.write_all(&payload).unwrap();
    drop(c);
    let lines = s.sink.wait_for(5, WAIT);
    let got = masked(&lines);
    let mut want = vec![
        expect(
            KEY_TCP,
            34,
            "mymachine",
            "su",
            "-",
            "'su root' failed for lonvick on /dev/pts/8",
        ),
        expect(
            KEY_TCP,
            165,
            "mymachine.example.com",
            "evntslog",
            "-",
            "An application event",
        ),
        expect(KEY_TCP, 13, "fw01", "filterlog", "123", "hello#011world"),
        // TAG runs to the first ':' and keeps it: app-name "10", MSG "00:00 ...".
        expect(
            KEY_TCP,
            13,
            "2024-05-01",
            "10",
            "-",
            "00:00 a line that starts with digits",
        ),
        expect(KEY_TCP, 14, "no", "trailing", "-", "newline at close"),
    ];
    want.sort();
    assert_eq!(got, want, "stderr:\n{}", s.fwd.stderr());
    assert!(s.sink.framing_errors().is_empty());
}

#[test]
fn logger_sends_over_tcp_udp_and_octet_counting() {
    let s = setup(false);
    let run = |args: &[&str]| {
        let st = Command::new("logger")
            .args(args)
            .status()
            .expect("logger runs");
        assert!(st.success(), "logger {args:?}");
    };
    let tcp = s.tcp.to_string();
    let udp = s.udp.to_string();
    run(&[
        "--tcp",
        "--server",
        "127.0.0.1",
        "--port",
        &tcp,
        "--rfc3164",
        "-t",
        "app1",
        "-p",
        "local0.info",
        "--",
        "hello rfc3164 over tcp",
    ]);
    run(&[
        "--tcp",
        "--octet-count",
        "--server",
        "127.0.0.1",
        "--port",
        &tcp,
        "--rfc5424",
        "-t",
        "app2",
        "--id=4242",
        "-p",
        "auth.notice",
        "--",
        "hello rfc5424 octet counted",
    ]);
    run(&[
        "--udp",
        "--server",
        "127.0.0.1",
        "--port",
        &udp,
        "--rfc5424=notq,notime",
        "-t",
        "app3",
        "-p",
        "user.err",
        "--",
        "hello udp",
    ]);
    let lines = s.sink.wait_for(3, WAIT);
    let got = masked(&lines);
    assert_eq!(got.len(), 3, "{got:?}\n{}", s.fwd.stderr());
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        got.contains(&expect(
            KEY_TCP,
            134,
            &host,
            "app1",
            "-",
            "hello rfc3164 over tcp"
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&expect(
            KEY_TCP,
            37,
            &host,
            "app2",
            "4242",
            "hello rfc5424 octet counted"
        )),
        "{got:?}"
    );
    assert!(
        got.iter().any(|l| l.starts_with("<11>1 TS ")
            && l.ends_with(&format!(
                " app3 - LOG [SEKOIA@53288 intake_key=\"{KEY_UDP}\"] hello udp\n"
            ))),
        "{got:?}"
    );
}

#[test]
fn udp_datagrams_are_messages() {
    let s = setup(false);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"<13>first datagram\n", ("127.0.0.1", s.udp))
        .unwrap();
    sock.send_to(b"", ("127.0.0.1", s.udp)).unwrap();
    sock.send_to(b"<13>1 - host app - - - second", ("127.0.0.1", s.udp))
        .unwrap();
    let got = masked(&s.sink.wait_for(2, WAIT));
    let mut want = vec![
        expect(KEY_UDP, 13, "first", "datagram", "-", ""),
        // RFC 5424 with a nil timestamp: the reference's parser keeps the fields.
        expect(KEY_UDP, 13, "host", "app", "-", "second"),
    ];
    want.sort();
    assert_eq!(got, want);
}

/// The name this machine gives 127.0.0.1 (`getent hosts`), if any.
fn loopback_name() -> Option<String> {
    let out = Command::new("getent")
        .args(["hosts", "127.0.0.1"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let name = text.split_whitespace().nth(1)?.to_ascii_lowercase();
    // A dotted name may lose the local domain; "localhost" never does.
    (name == "localhost").then_some(name)
}

#[test]
fn first_events_of_new_senders_without_hostname_carry_the_reverse_dns_name() {
    let Some(name) = loopback_name() else {
        eprintln!("127.0.0.1 is not 'localhost' here; skipped");
        return;
    };
    let s = setup_with(false, |b| b.env("RESOLVE_HOSTNAMES", "true"));
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", s.tcp)).unwrap();
    for n in 0..5 {
        let line = format!("<13>Oct 11 22:14:15 myapp: n{n}\n");
        udp.send_to(line.as_bytes(), ("127.0.0.1", s.udp)).unwrap();
        tcp.write_all(line.as_bytes()).unwrap();
    }
    drop(tcp);
    let got = masked(&s.sink.wait_for(10, WAIT));
    let mut want: Vec<String> = (0..5)
        .flat_map(|n| {
            let msg = format!("n{n}");
            [KEY_UDP, KEY_TCP].map(|key| expect(key, 13, &name, "myapp", "-", &msg))
        })
        .collect();
    want.sort();
    assert_eq!(got, want, "stderr:\n{}", s.fwd.stderr());
}

#[test]
fn tls_intake_round_trip() {
    let s = setup(false);
    let tcp = TcpStream::connect(("127.0.0.1", s.tls)).unwrap();
    let conn =
        rustls::ClientConnection::new(s.certs.client_config(), "localhost".try_into().unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    for i in 0..100 {
        writeln!(
            tls,
            "<86>Jan  5 01:02:03 srv sshd[{i}]: Accepted publickey for root"
        )
        .unwrap();
    }
    tls.flush().unwrap();
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let got = masked(&s.sink.wait_for(100, WAIT));
    assert_eq!(got.len(), 100, "{}", s.fwd.stderr());
    for i in 0..100 {
        let want = expect(
            KEY_TLS,
            86,
            "srv",
            "sshd",
            &i.to_string(),
            "Accepted publickey for root",
        );
        assert!(got.contains(&want), "missing {want:?}");
    }
}

#[test]
fn debug_intake_prints_input_and_output() {
    let s = setup(true);
    let mut c = TcpStream::connect(("127.0.0.1", s.tcp)).unwrap();
    c.write_all(b"<13>Oct 11 22:14:15 host1 prog: debug me\n")
        .unwrap();
    drop(c);
    s.sink.wait_for(1, WAIT);
    assert!(sekoia_tests::wait_until(WAIT, || s
        .fwd
        .stdout()
        .contains("[Output")));
    let out = s.fwd.stdout();
    assert!(
        out.contains(&format!(
            "[Input \"{KEY_TCP}\"] <13>Oct 11 22:14:15 host1 prog: debug me\n"
        )),
        "{out}"
    );
    let output_line = out.lines().find(|l| l.starts_with("[Output")).unwrap();
    let line = output_line
        .strip_prefix(&format!("[Output \"{KEY_TCP}\"] "))
        .unwrap();
    let (_, m) = mask_timestamp(format!("{line}\n").as_bytes());
    assert_eq!(
        String::from_utf8(m).unwrap(),
        expect(KEY_TCP, 13, "host1", "prog", "-", "debug me")
    );
    assert!(out.contains("These Intakes have been set up"), "{out}");
    assert!(out.contains(&format!("Intake key: {KEY_UDP}")), "{out}");
}

#[test]
fn sigterm_stops_inputs_flushes_and_exits_zero() {
    let mut s = setup(false);
    let mut c = TcpStream::connect(("127.0.0.1", s.tcp)).unwrap();
    for i in 0..1000 {
        writeln!(c, "<13>Oct 11 22:14:15 h app: event {i}").unwrap();
    }
    // The worker closes its side once it has queued everything: then stop it.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(std::io::Read::read(&mut c, &mut [0u8; 1]).unwrap(), 0);
    let status = s.fwd.terminate(Duration::from_secs(40));
    assert!(status.success(), "exit {status:?}\n{}", s.fwd.stderr());
    assert_eq!(s.sink.count(), 1000);
    assert!(
        TcpStream::connect(("127.0.0.1", s.tcp)).is_err(),
        "port closed after stop"
    );
}
