//! Test harness for whole-process scenarios: the real `sekoia-forwarder` binary, a real TLS
//! sink that plays the Sekoia intake, test certificates, and helpers to find and kill workers.
//!
//! Everything listens on 127.0.0.1 only, with ports chosen by the kernel.

pub mod certs;
pub mod corpus;
pub mod events;
pub mod forwarder;
pub mod haproxy;
pub mod imrelp;
pub mod rsyslog;
pub mod sink;
pub mod syslog_ng;

pub use certs::TestCerts;
pub use forwarder::{Forwarder, ForwarderBuilder};
pub use sink::TlsSink;

use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

/// A TCP port that was free a moment ago, on every address. Taken below the kernel's
/// ephemeral range (32768 and up), so the client sockets of other tests and benchmarks
/// cannot grab it between the check and its use.
pub fn free_tcp_port() -> u16 {
    next_port(|p| TcpListener::bind(("0.0.0.0", p)).is_ok())
}

/// A port free for both UDP and TCP.
pub fn free_port_both() -> u16 {
    next_port(|p| {
        TcpListener::bind(("0.0.0.0", p)).is_ok() && UdpSocket::bind(("0.0.0.0", p)).is_ok()
    })
}

fn next_port(free: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread test processes apart: each starts at an offset of its own.
    let seed = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (seed + n * 7) % SPAN) as u16;
        if free(port) {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

/// Polls `check` every 20 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Splits an output line into (timestamp, the rest with the timestamp replaced by `TS`), and
/// checks the timestamp has the reference's exact shape.
pub fn mask_timestamp(line: &[u8]) -> (String, Vec<u8>) {
    // <PRI>1 TIMESTAMP ...
    let first_space = line
        .iter()
        .position(|&b| b == b' ')
        .expect("space after version");
    let rest = &line[first_space + 1..];
    let ts_len = rest
        .iter()
        .position(|&b| b == b' ')
        .expect("space after timestamp");
    let ts = String::from_utf8_lossy(&rest[..ts_len]).into_owned();
    assert!(
        is_reference_timestamp(&ts),
        "timestamp {ts:?} has not the reference's shape"
    );
    let mut masked = line[..=first_space].to_vec();
    masked.extend_from_slice(b"TS");
    masked.extend_from_slice(&rest[ts_len..]);
    (ts, masked)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+HH:MM` (or `-HH:MM`).
pub fn is_reference_timestamp(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b[i].is_ascii_digit());
    b.len() == 32
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && (b[26] == b'+' || b[26] == b'-')
        && digits(27..29)
        && b[29] == b':'
        && digits(30..32)
}

/// True when some socket listens on TCP `port` (any address), from /proc/net/tcp{,6}.
pub fn is_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|file| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let mut f = l.split_whitespace();
                let local = f.nth(1).unwrap_or("");
                let state = f.nth(1).unwrap_or("");
                local.ends_with(&want) && state == "0A"
            })
    })
}
