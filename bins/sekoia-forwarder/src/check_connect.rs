//! `check --connect`: can this machine reach the destination the way the uplink does?
//! Resolves its name, opens TCP, then TLS with the uplink's own client configuration
//! (`uplink::client_config`: system roots plus `SEKOIA_CA_FILE`, TLS 1.2/1.3, the host name
//! sent and verified), and prints each step with its duration. It replaces the reference's
//! troubleshooting step "try telnet intake.sekoia.io 10514", which proved only the TCP part.
//!
//! Nothing is sent after the handshake but a TLS close_notify: no event reaches the intake.
//! Each step is bounded by [`STEP_TIMEOUT`] (each address tried, for the TCP step).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use sekoia_shared::config::Destination;
use sekoia_shared::uplink;

/// The longest any one step may take (the uplink's connect and handshake timeouts).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The step that failed, and why.
#[derive(Debug)]
pub struct Failed {
    pub step: &'static str,
    pub why: String,
}

/// Runs every step, printing one line per step on stdout; stops at the first that fails.
pub fn connect(dest: &Destination, ca_file: Option<&std::path::Path>) -> Result<(), Failed> {
    let fail = |step, why: String| Failed { step, why };
    let tls_config = uplink::client_config(ca_file)
        .map_err(|e| fail("trust store", format!("cannot be built: {e}")))?;
    let name = ServerName::try_from(dest.host.clone()).map_err(|e| {
        fail(
            "resolve",
            format!("\"{}\" is not a host name: {e}", dest.host),
        )
    })?;

    let started = Instant::now();
    let addrs = resolve(dest).map_err(|why| fail("resolve", why))?;
    let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    println!(
        "resolve {}: {} address{} ({}): {}",
        dest.host,
        addrs.len(),
        if addrs.len() == 1 { "" } else { "es" },
        ms(started),
        list.join(", ")
    );

    let mut tcp = open_tcp(&addrs).map_err(|why| fail("connect", why))?;

    let started = Instant::now();
    let mut tls = ClientConnection::new(Arc::clone(&tls_config), name)
        .map_err(|e| fail("TLS", format!("cannot start the handshake: {e}")))?;
    handshake(&mut tls, &mut tcp).map_err(|why| fail("TLS", why))?;
    println!(
        "TLS {} handshake, certificate verified for {} ({}), cipher suite {}",
        version(&tls),
        dest.host,
        ms(started),
        tls.negotiated_cipher_suite()
            .map_or_else(|| "?".to_string(), |s| format!("{:?}", s.suite()))
    );
    // Best effort: the destination may close first; nothing depends on it.
    tls.send_close_notify();
    let _ = tls.complete_io(&mut tcp);
    Ok(())
}

/// The destination's addresses, bounded by [`STEP_TIMEOUT`] (the system resolver has no
/// timeout of its own that we control, so it runs on a thread we stop waiting for).
fn resolve(dest: &Destination) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = mpsc::channel();
    let target = (dest.host.clone(), dest.port);
    std::thread::spawn(move || {
        let _ = tx.send(target.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    });
    match rx.recv_timeout(STEP_TIMEOUT) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("{} has no address", dest.host)),
        Ok(Err(e)) => Err(format!("cannot resolve {}: {e}", dest.host)),
        Err(_) => Err(format!(
            "no answer for {} within {} s (check the DNS servers of this machine)",
            dest.host,
            STEP_TIMEOUT.as_secs()
        )),
    }
}

/// Tries each address in turn, as the uplink does, printing each attempt.
fn open_tcp(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut errors = Vec::new();
    for addr in addrs {
        let started = Instant::now();
        match TcpStream::connect_timeout(addr, STEP_TIMEOUT) {
            Ok(tcp) => {
                println!("connect {addr} ({})", ms(started));
                return Ok(tcp);
            }
            Err(e) => {
                println!("connect {addr}: {e} ({})", ms(started));
                errors.push(format!("{addr}: {e}"));
            }
        }
    }
    Err(format!(
        "no address accepted a TCP connection ({}); check the destination's host and port, and that this machine may open outgoing TCP connections to it",
        errors.join("; ")
    ))
}

/// Drives the handshake to its end, within [`STEP_TIMEOUT`] in all.
fn handshake(tls: &mut ClientConnection, tcp: &mut TcpStream) -> Result<(), String> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while tls.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout_text());
        }
        let io = tcp
            .set_read_timeout(Some(left))
            .and_then(|()| tcp.set_write_timeout(Some(left)));
        io.map_err(|e| format!("cannot set the socket's timeout: {e}"))?;
        match tls.complete_io(tcp) {
            Ok((0, 0)) if tls.is_handshaking() => {
                return Err("the destination closed the connection during the handshake".into())
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timeout_text())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

fn timeout_text() -> String {
    format!(
        "no complete handshake within {} s (is this a TLS port?)",
        STEP_TIMEOUT.as_secs()
    )
}

fn version(tls: &ClientConnection) -> &'static str {
    match tls.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "(unknown version)",
    }
}

fn ms(since: Instant) -> String {
    format!("{} ms", since.elapsed().as_millis())
}
