//! The UDP intake's socket: bound without `SO_REUSEADDR`, so no other socket on the host can
//! bind the same port beside it and take a share of its datagrams; and what the kernel drops
//! when the socket's buffer overflows is counted and reported, exactly.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};
use sekoia_tests::events::{duplicates, sequence_counts};
use sekoia_tests::{free_port_both, wait_until, ForwarderBuilder, TestCerts, TlsSink};

/// Binds a UDP socket with `SO_REUSEADDR` set, as a second listener would try.
fn bind_reusing(addr: SocketAddr) -> Result<OwnedFd, Errno> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Datagram, SockFlag::empty(), None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    Ok(fd)
}

#[test]
fn another_socket_cannot_bind_the_udp_intake_port_even_with_so_reuseaddr() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let port = free_port_both();
    let yaml = format!(
        "intakes:\n- name: Plain UDP\n  protocol: udp\n  port: {port}\n  intake_key: UdpSocketKey0123456789\n"
    );
    let _fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .certs_dir(&certs.certs_dir())
        .start();
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    for addr in [v6, v4] {
        let taken = bind_reusing(addr);
        assert_eq!(
            taken.err(),
            Some(Errno::EADDRINUSE),
            "a second socket bound {addr} beside the intake"
        );
    }
}

/// The value of `name=N` in the worker's "input totals" line.
fn total(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("input totals"))
        .unwrap_or_else(|| panic!("no input totals line:\n{log}"));
    let key = format!(" {name}=");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a count")
}

#[test]
fn datagrams_the_kernel_drops_in_a_flood_are_counted_exactly() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let port = free_port_both();
    let yaml = format!(
        "intakes:\n- name: Flooded\n  protocol: udp\n  port: {port}\n  intake_key: UdpSocketKey0123456789\n"
    );
    let mut fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .certs_dir(&certs.certs_dir())
        .start();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pad = "x".repeat(250);
    let send = |seq: u64| {
        let line = format!("<13>Jan  5 01:02:03 host1 app: seq={seq} {pad}");
        client
            .send_to(line.as_bytes(), ("127.0.0.1", port))
            .unwrap();
    };
    // Far more than the socket's buffer (8 MiB at most) holds, faster than a debug build reads.
    const FLOOD: u64 = 100_000;
    for seq in 0..FLOOD {
        send(seq);
    }
    // Markers until one comes through (the buffer has drained), then a last one: read alone,
    // it carries the kernel's final count.
    let mut sent = FLOOD;
    let through = |from: u64| {
        let counts = sequence_counts(&sink.lines());
        counts.range(from..).next().is_some()
    };
    let drained = wait_until(Duration::from_secs(60), || {
        send(sent); // one marker per poll (every 20 ms)
        sent += 1;
        through(FLOOD)
    });
    assert!(drained, "no marker arrived\n{}", fwd.stderr());
    let last = sent;
    send(last);
    sent += 1;
    assert!(
        wait_until(Duration::from_secs(30), || through(last)),
        "the last marker"
    );
    fwd.terminate(Duration::from_secs(30));
    let log = fwd.stderr();
    let (read, kernel) = (total(&log, "received"), total(&log, "udp_kernel_drops"));
    eprintln!("sent {sent}, read {read}, dropped by the kernel {kernel}");
    assert!(kernel > 0, "the flood must overflow the socket: {log}");
    assert_eq!(
        read + kernel,
        sent,
        "every datagram was read or counted as dropped"
    );
    let counts = sequence_counts(&sink.lines());
    assert_eq!(duplicates(&counts), 0);
    assert!(counts.len() as u64 <= read);
}
