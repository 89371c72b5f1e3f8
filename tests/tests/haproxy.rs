//! Scale-out behind a real HAProxy with the PROXY protocol (docs/scale-out.md): two
//! forwarders with separate spools, many TCP clients from two source addresses spread over
//! them through a `send-proxy-v2` frontend and a `send-proxy` (v1) one, one forwarder killed
//! with -9 mid-stream and restarted. Events arrive at a real TLS listener under the senders'
//! addresses (reverse DNS is off in the harness, so the host field is the sender's IP: the
//! balancer's, 127.0.0.1, without the PROXY protocol).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sekoia_tests::events::{duplicates, sequence_counts, tail};
use sekoia_tests::haproxy::{self, Frontend, Haproxy};
use sekoia_tests::{free_tcp_port, wait_until, Forwarder, ForwarderBuilder, TestCerts, TlsSink};

const KEYS: [&str; 2] = ["BalancedOneKey0123456789", "BalancedTwoKey0123456789"];
/// The senders' own addresses: HAProxy sees them, the forwarders only through the header.
const SOURCES: [&str; 2] = ["127.0.0.2", "127.0.0.3"];
const CLIENTS: u64 = 20;
const FIRST_RUN: u64 = 400;
const SECOND_RUN: u64 = 50;
/// Pause between two events of a client: the first run lasts over a second, so the kill
/// lands mid-stream even on a loaded machine.
const PACE: Duration = Duration::from_millis(2);
/// Events a client sends again after its connection broke (they may have been in flight).
const RESENT_TAIL: usize = 50;
const WAIT: Duration = Duration::from_secs(60);

fn haproxy_binary() -> PathBuf {
    haproxy::binary().expect("haproxy is missing: apt-get install haproxy (.ci/run installs it)")
}

/// A tcp intake (and a tls one) behind the balancer: PROXY protocol on, only the balancer
/// (127.0.0.1) may connect.
fn yaml(key: &str, tcp: u16, tls: u16) -> String {
    format!(
        "intakes:\n- name: Balanced\n  protocol: tcp\n  port: {tcp}\n  intake_key: {key}\n  \
         proxy_protocol: true\n  allowed_sources: [\"127.0.0.1/32\"]\n\
         - name: Balanced TLS\n  protocol: tls\n  port: {tls}\n  intake_key: {key}\n  \
         proxy_protocol: true\n  allowed_sources: [\"127.0.0.1/32\"]\n"
    )
}

struct Site {
    certs: TestCerts,
    sink: TlsSink,
    forwarders: Vec<Forwarder>,
    tcp_ports: [u16; 2],
    haproxy: Haproxy,
    /// Frontend ports: PROXY v2 to the tcp intakes, v1 to the tcp intakes, v2 to the tls ones.
    v2: u16,
    v1: u16,
    tls: u16,
}

fn site() -> Site {
    let binary = haproxy_binary();
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let tcp_ports = [free_tcp_port(), free_tcp_port()];
    let tls_ports = [free_tcp_port(), free_tcp_port()];
    let forwarders = (0..2)
        .map(|i| {
            ForwarderBuilder::new(&yaml(KEYS[i], tcp_ports[i], tls_ports[i]), sink.port)
                .ca_file(&certs.ca_pem)
                .certs_dir(&certs.certs_dir())
                .start()
        })
        .collect();
    let (v2, v1, tls) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let haproxy = Haproxy::start(
        &binary,
        &[
            Frontend {
                name: "syslog_v2",
                port: v2,
                server_options: "send-proxy-v2 check-send-proxy",
                servers: &tcp_ports,
            },
            Frontend {
                name: "syslog_v1",
                port: v1,
                server_options: "send-proxy",
                servers: &tcp_ports,
            },
            Frontend {
                name: "syslog_tls",
                port: tls,
                server_options: "send-proxy-v2",
                servers: &tls_ports,
            },
        ],
    );
    Site {
        certs,
        sink,
        forwarders,
        tcp_ports,
        haproxy,
        v2,
        v1,
        tls,
    }
}

/// A connection from `source` to 127.0.0.1:`port`.
fn connect_from(source: &str, port: u16) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: SocketAddr = format!("{source}:0").parse().expect("source address");
    socket.bind(&local.into())?;
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect_timeout(&target.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// Whether the other side closed `conn` (a balancer that lost its server closes the client).
fn closed(conn: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let _ = conn.set_nonblocking(true);
    let gone = match conn.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = conn.set_nonblocking(false);
    gone
}

/// One client through the balancer: sends `seqs` paced, and when its connection breaks
/// (or the balancer refuses it) connects again and sends the last [`RESENT_TAIL`] events
/// again before going on. Returns how many times it reconnected.
fn client(
    source: &'static str,
    port: u16,
    via: &'static str,
    seqs: std::ops::Range<u64>,
    written: &AtomicU64,
) -> u32 {
    let mut conn: Option<TcpStream> = None;
    let mut broken = false;
    let mut recent: VecDeque<Vec<u8>> = VecDeque::new();
    let mut reconnects = 0;
    let give_up = Instant::now() + WAIT;
    for seq in seqs {
        let line = format!("<13>Oct 11 22:14:15 app: seq={seq} src={source} via={via} x\n");
        loop {
            assert!(
                Instant::now() < give_up,
                "client {source} could not send seq={seq}"
            );
            if broken || conn.as_ref().is_none_or(closed) {
                let Ok(fresh) = connect_from(source, port) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                broken = false;
                if conn.replace(fresh).is_some() {
                    reconnects += 1;
                    let resend = conn
                        .as_mut()
                        .map(|c| recent.iter().try_for_each(|l| c.write_all(l)));
                    broken = !matches!(resend, Some(Ok(())));
                    continue;
                }
            }
            match conn.as_mut().map(|c| c.write_all(line.as_bytes())) {
                Some(Ok(())) => break,
                _ => broken = true,
            }
        }
        written.fetch_add(1, Ordering::Relaxed);
        recent.push_back(line.into_bytes());
        if recent.len() > RESENT_TAIL {
            recent.pop_front();
        }
        std::thread::sleep(PACE);
    }
    reconnects
}

/// Starts [`CLIENTS`] clients, alternating sources and frontends, each sending `per_client`
/// events numbered from `first`; `written` counts the events they wrote.
fn clients(
    s: &Site,
    first: u64,
    per_client: u64,
    written: &Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<u32>> {
    (0..CLIENTS)
        .map(|c| {
            let source = SOURCES[(c % 2) as usize];
            let (port, via) = if c % 4 < 2 {
                (s.v2, "v2")
            } else {
                (s.v1, "v1")
            };
            let seqs = first + c * per_client..first + (c + 1) * per_client;
            let written = written.clone();
            std::thread::spawn(move || client(source, port, via, seqs, &written))
        })
        .collect()
}

/// (host field, `src=` of the message, intake key) of an output line.
fn host_src_key(line: &[u8]) -> (String, String, String) {
    let text = String::from_utf8_lossy(line);
    let host = text.split(' ').nth(2).unwrap_or_default().to_string();
    let after = |tag: &str| {
        let rest = text.split(tag).nth(1).unwrap_or_default();
        rest.split(['"', ' '])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    (host, after("src="), after("intake_key=\""))
}

/// The `input totals` field of the intake `Balanced` at the forwarder's stop.
fn total(log: &str, field: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("input totals intake=Balanced received="))?;
    let value = line.split(&format!(" {field}=")).nth(1)?;
    value.split_whitespace().next()?.parse().ok()
}

/// Sequence numbers in `payloads` (the killed forwarder's rings).
fn seqs(payloads: &[Vec<u8>]) -> BTreeSet<u64> {
    sequence_counts(payloads).into_keys().collect()
}

#[test]
fn two_forwarders_behind_haproxy_keep_senders_names_and_lose_nothing_accepted_through_a_kill9() {
    let mut s = site();
    // A sender that bypasses the balancer is refused at accept (allowed_sources); one that
    // comes from the balancer's address without a header is closed and counted.
    let mut direct = connect_from(SOURCES[0], s.tcp_ports[1]).expect("connect");
    let _ = direct.write_all(b"<13>Oct 11 22:14:15 app: seq=999999 direct\n");
    let mut headerless = connect_from("127.0.0.1", s.tcp_ports[1]).expect("connect");
    let _ = headerless.write_all(b"<13>Oct 11 22:14:15 app: seq=999998 no header\n");

    let written = Arc::new(AtomicU64::new(0));
    let kill = kill_and_restart_mid_stream(&mut s, &written);
    let sent_first = CLIENTS * FIRST_RUN;
    let second = clients(&s, sent_first, SECOND_RUN, &written);
    for c in second {
        c.join().expect("client");
    }
    let second_run: BTreeSet<u64> = (sent_first..sent_first + CLIENTS * SECOND_RUN).collect();
    let counts = wait_for_all(&s.sink, kill.accepted.iter().chain(&second_run));
    let in_flight = (0..sent_first).filter(|n| !counts.contains_key(n)).count();
    eprintln!(
        "{} events sent (the kill after {}), {} in the killed forwarder's rings, all \
         delivered; {in_flight} lost in flight (in socket buffers at the kill, never \
         accepted); {} duplicates; {} reconnects",
        sent_first + CLIENTS * SECOND_RUN,
        kill.written,
        kill.accepted.len(),
        duplicates(&counts),
        kill.reconnects
    );
    assert!(!counts.contains_key(&999_999) && !counts.contains_key(&999_998));
    assert_senders_named_and_spread(&s.sink.lines(), &second_run);

    assert!(closed_soon(&mut direct) && closed_soon(&mut headerless));
    let stopped = s.forwarders[1].terminate(WAIT);
    assert!(stopped.success(), "{}", tail(&s.forwarders[1].stderr()));
    let log = s.forwarders[1].stderr();
    // Exactly the headerless connection: HAProxy's health checks (a LOCAL header on v2, a
    // v1 line naming HAProxy itself) are not refusals.
    assert_eq!(
        total(&log, "proxy_header_rejected"),
        Some(1),
        "{}",
        tail(&log)
    );
    assert_eq!(total(&log, "refused_source"), Some(1), "{}", tail(&log));
    assert!(
        log.contains("no valid PROXY protocol header")
            && log.contains("no PROXY protocol header: the connection starts with"),
        "{}",
        tail(&log)
    );
}

/// What the kill of forwarder 1 left: what its rings held, how far the clients were.
struct Kill {
    accepted: BTreeSet<u64>,
    written: u64,
    reconnects: u32,
}

/// Runs the first batch of clients, kills forwarder 1 with -9 once a quarter of it was
/// written, notes what its rings held, starts it again on its spool, waits for the clients
/// and for HAProxy to see the forwarder up again.
fn kill_and_restart_mid_stream(s: &mut Site, written: &Arc<AtomicU64>) -> Kill {
    let first = clients(s, 0, FIRST_RUN, written);
    let sent_first = CLIENTS * FIRST_RUN;
    let quarter = wait_until(WAIT, || written.load(Ordering::Relaxed) > sent_first / 4);
    assert!(
        quarter,
        "clients write through haproxy\n{}",
        s.haproxy.log()
    );
    s.forwarders[0].kill9_all();
    let written_at_kill = written.load(Ordering::Relaxed);
    assert!(written_at_kill < sent_first, "killed mid-stream");
    let accepted = seqs(&s.forwarders[0].ring_payloads());
    s.forwarders[0].spawn();
    let reconnects = first.into_iter().map(|c| c.join().expect("client")).sum();
    let up = wait_until(WAIT, || {
        s.haproxy.server_up("syslog_v2_servers", "f1")
            && s.haproxy.server_up("syslog_v1_servers", "f1")
    });
    assert!(
        up,
        "haproxy sees the restarted forwarder\n{}",
        s.haproxy.log()
    );
    Kill {
        accepted,
        written: written_at_kill,
        reconnects,
    }
}

/// Waits until every sequence number of `wanted` arrived at `sink`; returns the counts.
fn wait_for_all<'a>(
    sink: &TlsSink,
    wanted: impl Iterator<Item = &'a u64> + Clone,
) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    let arrived = wait_until(WAIT, || {
        counts = sequence_counts(&sink.lines());
        wanted.clone().all(|n| counts.contains_key(n))
    });
    let missing: Vec<&u64> = wanted
        .filter(|n| !counts.contains_key(n))
        .take(20)
        .collect();
    assert!(
        arrived,
        "accepted or sent after the restart, and lost: {missing:?}"
    );
    counts
}

/// Every event carries its sender's address, never the balancer's; both sources came
/// through both frontends, and the `second_run` was spread over both forwarders.
fn assert_senders_named_and_spread(lines: &[Vec<u8>], second_run: &BTreeSet<u64>) {
    let mut keys_second_run = BTreeSet::new();
    for line in lines {
        let (host, src, key) = host_src_key(line);
        assert_eq!(host, src, "{}", String::from_utf8_lossy(line));
        let seq = sequence_counts(std::slice::from_ref(line));
        if seq.keys().any(|n| second_run.contains(n)) {
            keys_second_run.insert(key);
        }
    }
    for source in SOURCES {
        for via in ["v1", "v2"] {
            let tag = format!("src={source} via={via}");
            let seen = lines
                .iter()
                .any(|l| String::from_utf8_lossy(l).contains(&tag));
            assert!(seen, "{tag}");
        }
    }
    let both: BTreeSet<String> = KEYS.iter().map(|k| k.to_string()).collect();
    assert_eq!(keys_second_run, both);
}

/// Whether the forwarder closed `conn` (within a few seconds).
fn closed_soon(conn: &mut TcpStream) -> bool {
    wait_until(Duration::from_secs(5), || closed(conn))
}

#[test]
fn tls_through_haproxy_carries_the_senders_name() {
    let s = site();
    let tcp = connect_from(SOURCES[1], s.tls).expect("connect");
    let conn = rustls::ClientConnection::new(
        s.certs.client_config(),
        "localhost".try_into().expect("name"),
    )
    .expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    for seq in 0..100 {
        writeln!(
            tls,
            "<13>Oct 11 22:14:15 app: seq={seq} src={} tls",
            SOURCES[1]
        )
        .expect("write");
    }
    tls.flush().expect("flush");
    let lines = s.sink.wait_for(100, WAIT);
    assert_eq!(
        sequence_counts(&lines).len(),
        100,
        "{}",
        tail(&s.forwarders[0].stderr())
    );
    for line in &lines {
        let (host, src, _) = host_src_key(line);
        assert_eq!((host.as_str(), src.as_str()), (SOURCES[1], SOURCES[1]));
    }
}
