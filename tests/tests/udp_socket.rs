//! The UDP intake's socket: bound without `SO_REUSEADDR`, so no other socket on the host can
//! bind the same port beside it and take a share of its datagrams.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};
use sekoia_tests::{free_port_both, ForwarderBuilder, TestCerts, TlsSink};

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
