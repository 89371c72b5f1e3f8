//! The PROXY protocol (versions 1 and 2, haproxy's `doc/proxy-protocol.txt`): the header a
//! load balancer puts at the start of each connection it relays, naming the real client.
//!
//! Only on intakes that say `proxy_protocol: true`: a receiver must never guess whether a
//! header is there (a client could then claim any address), so on such an intake every
//! connection must start with one, and one that does not is closed.
//!
//! Formats, as read here:
//! ```text
//! v1: "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP sport SP dport CRLF
//!     "PROXY" SP "UNKNOWN" [anything] CRLF          at most 107 bytes in all
//! v2: sig[12] = 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
//!     ver_cmd u8   high nibble 2; low nibble 0 LOCAL, 1 PROXY
//!     fam u8       00 unspec, 11/12 IPv4 TCP/UDP, 21/22 IPv6, 31/32 unix
//!     len u16 BE   bytes that follow: addresses (src, dst, sport, dport), then TLVs (skipped)
//! ```
//! Promises:
//! - **Exactly the header is read, nothing more**: [`parse`] says at most how many further
//!   bytes surely still belong to the header, and [`read_header`] never asks the socket for
//!   more. What follows (syslog frames, or a TLS ClientHello) stays in the socket for the
//!   framing loop or the TLS handshake. The first read takes at most 15 bytes (the
//!   shortest v1 line; any v2 header is longer). A v1 line then goes on by the fewest bytes
//!   its fields still take (`v1_least_left`): 6 reads for a typical 44-byte TCP4 line. A v2
//!   header takes 3 reads: 15 bytes, the 16th (the fixed part tells `len`), then `len`.
//! - Bounded: a v1 line without CRLF in 107 bytes, or a v2 `len` above [`V2_MAX_BLOCK`], is
//!   refused before more is read; so is a first byte that starts neither signature.
//! - LOCAL (v2, a balancer's own health check), UNKNOWN (v1) and the address families we do
//!   not take (unspecified, unix sockets) keep the connection's own address, as the
//!   specification says. IPv4 and IPv6 sources (stream or datagram) name the client.
//! - Time (see [`read_header`]): waiting for the first byte is an idle connection like any
//!   other (`idle_timeout`, if set); from the first byte the whole header must come within
//!   the intake's `partial_frame_timeout`: the header is the connection's first frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::admission::{Admitted, Notice};
use super::shutdown_requested;
use super::tcp::Listener;

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version and command, family, length.
const V2_FIXED: usize = 16;
/// Largest v2 address block with its TLVs we accept. Addresses take at most 216 bytes
/// (unix); balancers add a few TLVs (unique id up to 128 bytes, TLS details, a cloud
/// endpoint id), so 4 KiB is generous and still a small, fixed cost per connection.
pub const V2_MAX_BLOCK: usize = 4096;
/// Longest v1 line, CRLF included (the specification's worst case).
pub const V1_MAX: usize = 107;
/// Shortest v1 line (`PROXY UNKNOWN\r\n`); shorter than any v2 header, so this many bytes
/// can always be read first.
const V1_MIN: usize = 15;
const V1_PREFIX: &[u8] = b"PROXY ";

/// What a complete header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// Relayed for this client: events carry its address.
    Client(SocketAddr),
    /// The balancer's own connection (v2 LOCAL, v1 UNKNOWN, or a family we do not take):
    /// the connection's own peer address stands.
    Own,
}

/// Where parsing a header stands after the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The bytes read are exactly one complete header.
    Done(Proxied),
    /// Incomplete: the next `n` bytes (at most) surely still belong to the header.
    Need(usize),
    Invalid(Malformed),
}

/// Why a connection's header was refused; the text goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("no PROXY protocol header: the connection starts with {}; the sender bypassed the load balancer, or the balancer does not send the header (HAProxy: `send-proxy-v2` on the server line)", shown(.0))]
    Missing(Vec<u8>),
    #[error("PROXY v1 line without CRLF in its first 107 bytes")]
    V1TooLong,
    #[error("PROXY v1 line ends with a lone CR or LF, not CRLF")]
    V1BadEnd,
    #[error("PROXY v1 line is not valid: {0}")]
    V1Field(&'static str),
    #[error("PROXY v2 header with version {0}, not 2")]
    V2Version(u8),
    #[error("PROXY v2 header with command {0:#x}, neither LOCAL (0) nor PROXY (1)")]
    V2Command(u8),
    #[error("PROXY v2 header with address family and protocol {0:#04x}, not one the specification defines")]
    V2Family(u8),
    #[error("PROXY v2 header announces {0} bytes of addresses and TLVs, more than the {V2_MAX_BLOCK} accepted")]
    V2TooLong(usize),
    #[error("PROXY v2 header announces {len} bytes, fewer than its {family} addresses take")]
    V2ShortAddresses { family: &'static str, len: usize },
    #[error("the connection closed after {0} bytes, inside the PROXY header")]
    Truncated(usize),
    #[error("reading the PROXY header failed: {0}")]
    Broken(String),
    #[error("the PROXY header did not arrive within {}s of its first byte (partial_frame_timeout)", .0.as_secs())]
    TimedOut(Duration),
}

/// The first bytes of a stream that is not a PROXY header, for the log line.
fn shown(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// Parses the bytes read so far (never more than [`Progress::Need`] allowed).
pub fn parse(buf: &[u8]) -> Progress {
    match buf.first() {
        None => Progress::Need(V1_MIN),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Progress::Invalid(Malformed::Missing(buf.to_vec())),
    }
}

fn parse_v1(buf: &[u8]) -> Progress {
    let head = buf.len().min(V1_PREFIX.len());
    if buf[..head] != V1_PREFIX[..head] {
        return Progress::Invalid(Malformed::Missing(buf.to_vec()));
    }
    if buf.len() < V1_MIN {
        return Progress::Need(V1_MIN - buf.len());
    }
    let len = buf.len();
    match buf.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(at) if buf[at] == b'\n' => Progress::Invalid(Malformed::V1BadEnd),
        Some(at) if at + 1 == len && len < V1_MAX => Progress::Need(1),
        Some(at) if at + 1 == len => Progress::Invalid(Malformed::V1TooLong),
        Some(at) if buf[at + 1] != b'\n' => Progress::Invalid(Malformed::V1BadEnd),
        Some(at) => match v1_line(&buf[..at]) {
            Ok(proxied) if at + 2 == len => Progress::Done(proxied),
            // Only a line that is not valid can end before what was read.
            Ok(_) => Progress::Invalid(Malformed::V1Field("bytes follow its CRLF")),
            Err(what) => Progress::Invalid(Malformed::V1Field(what)),
        },
        None if len >= V1_MAX => Progress::Invalid(Malformed::V1TooLong),
        None => Progress::Need(v1_least_left(buf).min(V1_MAX - len)),
    }
}

/// The fewest bytes a valid v1 line that starts with `buf` (no CR yet) still has, its CRLF
/// included: every field still to come at its shortest (`0.0.0.0` or `::`, a one-digit
/// port). Before the family is known, or for `UNKNOWN` (which may end at once), only the
/// CRLF is sure.
fn v1_least_left(buf: &[u8]) -> usize {
    const CRLF: usize = 2;
    let mut fields = buf.split(|&b| b == b' ').skip(1);
    let shortest_address = match fields.next() {
        Some(b"TCP4") => 7,
        Some(b"TCP6") => 2,
        _ => return CRLF,
    };
    // Source, destination, source port, destination port.
    let shortest: [usize; 4] = [shortest_address, shortest_address, 1, 1];
    let (mut started, mut partial) = (0, 0);
    for field in fields {
        started += 1;
        partial = field.len();
    }
    let (current, rest) = match started {
        0 => (0, &shortest[..]),
        n if n <= shortest.len() => (shortest[n - 1].saturating_sub(partial), &shortest[n..]),
        _ => return CRLF, // too many fields: refused at its CRLF
    };
    current + rest.iter().map(|field| 1 + field).sum::<usize>() + CRLF
}

/// One v1 line without its CRLF: fields separated by exactly one space.
fn v1_line(line: &[u8]) -> Result<Proxied, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "not US-ASCII")?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY", checked by the caller
    let family = fields.next().ok_or("no protocol")?;
    let parse_ip = |text: Option<&str>| -> Result<IpAddr, &'static str> {
        let text = text.ok_or("missing address")?;
        match family {
            "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            _ => text.parse::<Ipv6Addr>().map(IpAddr::V6),
        }
        .map_err(|_| "an address is not valid for its protocol")
    };
    match family {
        "UNKNOWN" => return Ok(Proxied::Own),
        "TCP4" | "TCP6" => {}
        _ => return Err("the protocol is not TCP4, TCP6 or UNKNOWN"),
    }
    let source = parse_ip(fields.next())?;
    parse_ip(fields.next())?;
    let source_port = v1_port(fields.next())?;
    v1_port(fields.next())?;
    if fields.next().is_some() {
        return Err("extra fields after the ports");
    }
    Ok(Proxied::Client(SocketAddr::new(source, source_port)))
}

/// A decimal port, 0 to 65535, without leading zeros.
fn v1_port(text: Option<&str>) -> Result<u16, &'static str> {
    let text = text.ok_or("missing port")?;
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err("a port is not a decimal number without leading zeros");
    }
    text.parse().map_err(|_| "a port is above 65535")
}

fn parse_v2(buf: &[u8]) -> Progress {
    let head = buf.len().min(V2_SIGNATURE.len());
    if buf[..head] != V2_SIGNATURE[..head] {
        return Progress::Invalid(Malformed::Missing(buf.to_vec()));
    }
    if buf.len() < V2_FIXED {
        return Progress::Need(V2_FIXED - buf.len());
    }
    let (version, command, family) = (buf[12] >> 4, buf[12] & 0x0f, buf[13]);
    if version != 2 {
        return Progress::Invalid(Malformed::V2Version(version));
    }
    if command > 1 {
        return Progress::Invalid(Malformed::V2Command(command));
    }
    if !matches!(family, 0x00 | 0x11 | 0x12 | 0x21 | 0x22 | 0x31 | 0x32) {
        return Progress::Invalid(Malformed::V2Family(family));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_BLOCK {
        return Progress::Invalid(Malformed::V2TooLong(len));
    }
    let total = V2_FIXED + len;
    if buf.len() < total {
        return Progress::Need(total - buf.len());
    }
    let block = &buf[V2_FIXED..total];
    // LOCAL: the balancer's own connection; whatever the block holds is skipped.
    if command == 0 {
        return Progress::Done(Proxied::Own);
    }
    match v2_source(family >> 4, block) {
        Ok(proxied) => Progress::Done(proxied),
        Err(short) => Progress::Invalid(short),
    }
}

/// The source address of a v2 PROXY block; TLVs after the addresses are skipped.
fn v2_source(family: u8, block: &[u8]) -> Result<Proxied, Malformed> {
    let short = |family| Malformed::V2ShortAddresses {
        family,
        len: block.len(),
    };
    let (ip, port_at) = match family {
        1 if block.len() >= 12 => (IpAddr::from(octets::<4>(block)), 8),
        2 if block.len() >= 36 => (IpAddr::from(octets::<16>(block)), 32),
        1 => return Err(short("IPv4")),
        2 => return Err(short("IPv6")),
        // Unspecified or unix: the specification lets us fall back to the connection's own.
        _ => return Ok(Proxied::Own),
    };
    let port = u16::from_be_bytes([block[port_at], block[port_at + 1]]);
    Ok(Proxied::Client(SocketAddr::new(ip, port)))
}

/// The first `N` bytes of `bytes`, which holds at least that many (checked by the caller).
fn octets<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(&bytes[..N]);
    array
}

/// How reading a header ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Header(Proxied),
    /// Closed (or reset) before sending any byte: a balancer's plain TCP health check, not
    /// a refusal.
    ClosedFirst,
    /// No byte within the intake's `idle_timeout`.
    Idle,
    Rejected(Malformed),
}

/// Reads exactly one header from `stream`: the first byte may take as long as `idle` allows
/// (forever when `None`), the rest must come within `header_time` of it.
pub(crate) async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    idle: Option<Duration>,
    header_time: Duration,
) -> Outcome {
    let mut buf = Vec::with_capacity(V1_MAX);
    let first = read_step(stream, &mut buf);
    let first = match idle {
        Some(idle) => match tokio::time::timeout(idle, first).await {
            Ok(step) => step,
            Err(_) => return Outcome::Idle,
        },
        None => first.await,
    };
    if let Step::Decided(outcome) = first {
        return outcome;
    }
    let rest = async {
        loop {
            if let Step::Decided(outcome) = read_step(stream, &mut buf).await {
                return outcome;
            }
        }
    };
    match tokio::time::timeout(header_time, rest).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Rejected(Malformed::TimedOut(header_time)),
    }
}

enum Step {
    More,
    Decided(Outcome),
}

/// One read of at most what the header still surely needs, then where that leaves it.
async fn read_step<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Step {
    let need = match parse(buf) {
        Progress::Need(n) => n,
        decided => return decide(decided),
    };
    let start = buf.len();
    buf.resize(start + need, 0);
    let read = stream.read(&mut buf[start..]).await;
    buf.truncate(start + *read.as_ref().unwrap_or(&0));
    match read {
        Ok(0) | Err(_) if start == 0 => Step::Decided(Outcome::ClosedFirst),
        Ok(0) => Step::Decided(Outcome::Rejected(Malformed::Truncated(start))),
        Err(e) => Step::Decided(Outcome::Rejected(Malformed::Broken(e.to_string()))),
        Ok(_) => decide(parse(buf)),
    }
}

fn decide(progress: Progress) -> Step {
    match progress {
        Progress::Need(_) => Step::More,
        Progress::Done(proxied) => Step::Decided(Outcome::Header(proxied)),
        Progress::Invalid(why) => Step::Decided(Outcome::Rejected(why)),
    }
}

/// The sender of a connection on a `proxy_protocol` intake: the one its header names (or the
/// peer itself for a LOCAL or UNKNOWN header), once it got its per-source place; its name
/// lookup starts here. `None`: the connection is to be closed (refused: counted and logged
/// through the intake's notices; closed first; or shutdown).
pub(crate) async fn sender(
    stream: &mut TcpStream,
    peer: SocketAddr,
    shared: &Listener,
    place: &mut Admitted,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<SocketAddr> {
    let header = read_header(stream, shared.idle_timeout, shared.partial_frame_timeout);
    let outcome = tokio::select! {
        _ = shutdown_requested(shutdown) => return None,
        outcome = header => outcome,
    };
    let notices = &shared.admission.notices;
    let balancer = peer.ip().to_canonical();
    let sender = match outcome {
        Outcome::Header(Proxied::Client(source)) => source,
        Outcome::Header(Proxied::Own) => peer,
        Outcome::ClosedFirst => {
            tracing::debug!(peer = %peer, "closed before sending a PROXY header");
            return None;
        }
        Outcome::Idle => {
            notices.record(Notice::IdleTimeout, balancer);
            return None;
        }
        Outcome::Rejected(why) => {
            let why = why.to_string();
            notices.record_because(Notice::ProxyHeaderRejected, balancer, &why);
            return None;
        }
    };
    if !shared.admission.claim_source(place, sender.ip()) {
        return None;
    }
    tracing::debug!(peer = %peer, sender = %sender, "PROXY header read");
    shared.names.prefetch(sender.ip());
    Some(sender)
}

#[cfg(test)]
mod tests;
