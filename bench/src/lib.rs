//! Pieces shared by the benchmark binaries (`loadgen`, `benchsink`, `benchrun`).
//!
//! Every generated event carries its sequence number and its send time, so the sink can check
//! each one (loss, duplicates) and measure latency from send to sink whatever the forwarder
//! in between did to the rest of the line:
//!
//! ```text
//! <134>1 2024-05-01T10:00:00.000000Z bench01 benchapp 4242 - - BENCH s=000000000123 t=00000001234567890123 xxxx…
//!                                                              └ seq: 12 digits └ CLOCK_MONOTONIC ns: 20 digits
//! ```
//!
//! The message (without framing) is exactly `size` bytes, padded with `x`. CLOCK_MONOTONIC is
//! one clock for every process of the machine, so the generator's stamp and the sink's
//! reading compare directly.

pub mod certs;
pub mod histogram;
pub mod procstat;

/// The fixed head of every message, before the marker.
pub const HEAD: &[u8] = b"<134>1 2024-05-01T10:00:00.000000Z bench01 benchapp 4242 - - ";
/// What the sink looks for in a delivered line.
pub const MARKER: &[u8] = b"BENCH s=";
const SEQ_DIGITS: usize = 12;
const TIME_DIGITS: usize = 20;
/// Bytes from the marker to the end of the time stamp.
const STAMP_LEN: usize = MARKER.len() + SEQ_DIGITS + 3 + TIME_DIGITS;
/// The smallest message `size` the format allows.
pub const MIN_SIZE: usize = HEAD.len() + STAMP_LEN + 1;

/// Nanoseconds of CLOCK_MONOTONIC (the same clock in every process of this machine).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A message template of exactly `size` bytes; `stamp` writes the sequence and time into it.
#[derive(Clone)]
pub struct Message {
    bytes: Vec<u8>,
}

impl Message {
    pub fn new(size: usize) -> Self {
        assert!(
            size >= MIN_SIZE,
            "event size must be at least {MIN_SIZE} bytes"
        );
        let mut bytes = HEAD.to_vec();
        bytes.extend_from_slice(MARKER);
        bytes.resize(HEAD.len() + STAMP_LEN, b'0');
        bytes[HEAD.len() + MARKER.len() + SEQ_DIGITS..][..3].copy_from_slice(b" t=");
        bytes.push(b' ');
        bytes.resize(size, b'x');
        Self { bytes }
    }

    /// Writes `seq` and `time_ns` into the template and returns the message.
    pub fn stamp(&mut self, seq: u64, time_ns: u64) -> &[u8] {
        let at = HEAD.len() + MARKER.len();
        write_digits(&mut self.bytes[at..at + SEQ_DIGITS], seq);
        let at = at + SEQ_DIGITS + 3;
        write_digits(&mut self.bytes[at..at + TIME_DIGITS], time_ns);
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

fn write_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Finds the marker in a delivered line and reads (seq, send time ns) after it.
pub fn parse_stamp(line: &[u8]) -> Option<(u64, u64)> {
    let start = find(line, MARKER)? + MARKER.len();
    let rest = line.get(start..start + SEQ_DIGITS + 3 + TIME_DIGITS)?;
    let seq = read_digits(&rest[..SEQ_DIGITS])?;
    if &rest[SEQ_DIGITS..SEQ_DIGITS + 3] != b" t=" {
        return None;
    }
    let t = read_digits(&rest[SEQ_DIGITS + 3..])?;
    Some((seq, t))
}

fn read_digits(d: &[u8]) -> Option<u64> {
    d.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let off = hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)?;
        i += off;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The source address of client `i` when spreading over 127.0.0.0/8: 127.0.<i/250>.<i%250+1>.
pub fn spread_source(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, (i / 250) as u8, (i % 250 + 1) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_message_has_the_size_and_parses_back() {
        let mut m = Message::new(300);
        let bytes = m.stamp(123, 98_765_432_100).to_vec();
        assert_eq!(bytes.len(), 300);
        assert_eq!(parse_stamp(&bytes), Some((123, 98_765_432_100)));
        let line = [
            b"<134>1 TS h a p LOG [SEKOIA@53288 intake_key=\"K\"] ".as_slice(),
            &bytes[HEAD.len()..],
        ]
        .concat();
        assert_eq!(parse_stamp(&line), Some((123, 98_765_432_100)));
    }

    #[test]
    fn line_without_marker_is_rejected() {
        assert_eq!(parse_stamp(b"hello BENCH s=12"), None);
        assert_eq!(parse_stamp(b"no marker at all"), None);
    }

    #[test]
    fn sources_spread_over_distinct_addresses() {
        assert_eq!(spread_source(0).to_string(), "127.0.0.1");
        assert_eq!(spread_source(249).to_string(), "127.0.0.250");
        assert_eq!(spread_source(250).to_string(), "127.0.1.1");
        assert_eq!(spread_source(4999).to_string(), "127.0.19.250");
    }
}
