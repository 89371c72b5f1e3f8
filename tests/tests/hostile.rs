//! Hostile networks against the real forwarder: a memory bomb on the port an honest client
//! uses, and `allowed_sources` on tcp, tls and udp with real clients from two loopback
//! addresses (127.0.0.1 allowed, 127.0.0.2 not).

use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use sekoia_tests::{
    events::sequence_counts, free_port_both, free_tcp_port, wait_until, Forwarder,
    ForwarderBuilder, TestCerts, TlsSink,
};

const KEY: &str = "HostileIntakeKey0123";
const WAIT: Duration = Duration::from_secs(60);
const ALLOWED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A TCP connection from `local` (any 127.0.0.0/8 address works on Linux loopback).
fn connect_from(local: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(local, 0)),
    )?;
    let server = SockaddrIn::from(SocketAddrV4::new(ALLOWED, port));
    connect(fd.as_raw_fd(), &server)?;
    Ok(TcpStream::from(fd))
}

/// Resident and peak resident memory of `pid`, in KiB (VmRSS, VmHWM).
fn memory_kib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn ingest_worker(fwd: &Forwarder) -> i32 {
    let pids = fwd.worker_pids("ingest-worker");
    assert_eq!(pids.len(), 1, "one ingest worker: {pids:?}");
    pids[0]
}

/// The value of `field=N` on the "input totals" line of `intake` in the log.
fn total(log: &str, intake: &str, field: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("input totals") && l.contains(&format!("intake={intake} ")))?;
    let value = line.split(&format!(" {field}=")).nth(1)?;
    value.split_whitespace().next()?.parse().ok()
}

/// Memory bomb: each connection sends most of a 200 KB line and holds it.
const BOMBS: usize = 200;
const BOMB_BYTES: usize = 200_000;
/// `read_buffer_budget` of the intake under attack.
const BUDGET_MIB: u64 = 4;
const HONEST_EVENTS: u64 = 5_000;

#[test]
fn an_honest_client_gets_every_event_through_a_memory_bomb_within_the_memory_bound() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let yaml = format!(
        "intakes:\n- name: Bombed\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n  \
         read_buffer_budget: {BUDGET_MIB}m\n"
    );
    let mut fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .start();
    let worker = ingest_worker(&fwd);
    let (baseline, _) = memory_kib(worker);

    let line = vec![b'x'; BOMB_BYTES];
    let mut bombs = Vec::with_capacity(BOMBS);
    for _ in 0..BOMBS {
        let mut bomb = connect_from(ALLOWED, port).expect("bomb connects");
        bomb.set_nonblocking(true).unwrap();
        // As much of the line as the kernel takes now; never its end.
        let mut sent = 0;
        while sent < line.len() {
            match bomb.write(&line[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("bomb write: {e}"),
            }
        }
        bombs.push(bomb);
    }
    // The worker has read the bombs' free allowances and the whole budget.
    let loaded = (BUDGET_MIB << 10) + 2 * 1024;
    let read = wait_until(WAIT, || memory_kib(worker).0 >= baseline + loaded);
    assert!(
        read,
        "the worker did not read the bombs (RSS {:?} KiB)",
        memory_kib(worker)
    );

    let started = Instant::now();
    let mut honest = connect_from(ALLOWED, port).expect("honest connects");
    for seq in 0..HONEST_EVENTS {
        writeln!(honest, "<13>Jan  5 01:02:03 honest app: seq={seq} hello").unwrap();
    }
    honest.flush().unwrap();
    let arrived = wait_until(WAIT, || {
        sequence_counts(&sink.lines()).len() as u64 == HONEST_EVENTS
    });
    let counts = sequence_counts(&sink.lines());
    assert!(
        arrived,
        "{} of {HONEST_EVENTS} honest events arrived\n{}",
        counts.len(),
        fwd.stderr()
    );
    assert!((0..HONEST_EVENTS).all(|seq| counts.contains_key(&seq)));
    let took = started.elapsed();

    // The documented bound: budget + connections x (16 KiB free + 4 KiB state), plus a few
    // MiB of allocator slack, above what the worker used before the attack.
    let (_, peak) = memory_kib(worker);
    let bound = (BUDGET_MIB << 10) + (BOMBS as u64 + 1) * 20 + 8 * 1024;
    eprintln!(
        "memory bomb: baseline {baseline} KiB, peak {peak} KiB (+{} KiB, bound +{bound} KiB), \
         {HONEST_EVENTS} honest events in {took:?}",
        peak - baseline
    );
    assert!(
        peak <= baseline + bound,
        "peak RSS {peak} KiB is over baseline {baseline} + bound {bound} KiB"
    );
    assert_eq!(ingest_worker(&fwd), worker, "no worker restart");
    drop(bombs);
    drop(honest);
    fwd.terminate(Duration::from_secs(30));
    let log = fwd.stderr();
    assert!(!log.contains("restarting"), "{log}");
    // Each bomb's unterminated line became one event when it closed (SPEC §3: at close, a
    // partial LF frame is a message).
    let received = HONEST_EVENTS + BOMBS as u64;
    assert_eq!(total(&log, "Bombed", "received"), Some(received), "{log}");
}

#[test]
fn allowed_sources_refuse_other_senders_on_tcp_tls_and_udp_before_reading() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let (tcp, udp, tls) = (free_tcp_port(), free_port_both(), free_tcp_port());
    let allow = "  allowed_sources: [\"127.0.0.1/32\"]\n";
    let yaml = format!(
        "intakes:\n- name: T\n  protocol: tcp\n  port: {tcp}\n  intake_key: {KEY}\n{allow}\
         - name: U\n  protocol: udp\n  port: {udp}\n  intake_key: {KEY}\n{allow}\
         - name: S\n  protocol: tls\n  port: {tls}\n  intake_key: {KEY}\n{allow}"
    );
    let mut fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .certs_dir(&certs.certs_dir())
        .start();
    let event = |seq: u32| format!("<13>Jan  5 01:02:03 h app: seq={seq} x\n");

    // Refused first: nothing of theirs may arrive, whatever comes after.
    if let Ok(mut refused) = connect_from(ELSEWHERE, tcp) {
        let _ = refused.write_all(event(100).as_bytes());
    }
    let udp_refused = UdpSocket::bind((ELSEWHERE, 0)).unwrap();
    for seq in 200..205 {
        udp_refused
            .send_to(event(seq).as_bytes(), (ALLOWED, udp))
            .unwrap();
    }
    let tls_refused = send_tls(&certs, ELSEWHERE, tls, &event(300));
    assert!(tls_refused.is_err(), "no TLS handshake from elsewhere");

    let mut allowed = connect_from(ALLOWED, tcp).unwrap();
    allowed.write_all(event(1).as_bytes()).unwrap();
    drop(allowed);
    let udp_allowed = UdpSocket::bind((ALLOWED, 0)).unwrap();
    udp_allowed
        .send_to(event(2).as_bytes(), SocketAddr::from((ALLOWED, udp)))
        .unwrap();
    send_tls(&certs, ALLOWED, tls, &event(3)).expect("allowed TLS client");

    let lines = sink.wait_for(3, WAIT);
    fwd.terminate(Duration::from_secs(30));
    let counts = sequence_counts(&lines);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "allowed delivered exactly once each, refused never"
    );
    assert!(counts.values().all(|n| *n == 1));
    let log = fwd.stderr();
    assert_eq!(total(&log, "T", "refused_source"), Some(1), "{log}");
    assert_eq!(total(&log, "U", "refused_source"), Some(5), "{log}");
    assert_eq!(total(&log, "S", "refused_source"), Some(1), "{log}");
    assert_eq!(total(&log, "S", "tls_handshake_failures"), Some(0), "{log}");
    assert!(log.contains("not in allowed_sources"), "{log}");
}

/// One event over TLS from `local`; Err when the connection or handshake fails.
fn send_tls(certs: &TestCerts, local: Ipv4Addr, port: u16, line: &str) -> std::io::Result<()> {
    let tcp = connect_from(local, port)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = "localhost".try_into().expect("server name");
    let conn = rustls::ClientConnection::new(certs.client_config(), name)
        .map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(line.as_bytes())?;
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()
}
