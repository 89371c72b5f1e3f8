//! Behaviour tests of `render_event` as a whole: edge cases first, then the table of cases
//! verified against the real rsyslogd (`verified_cases.rs`), then a deterministic fuzz run.

use super::verified_cases::VERIFIED;
use super::*;

const CTX: EventContext<'static> = EventContext {
    intake_key: "KEY",
    sender_host: "127.0.0.1",
    timestamp: "TS",
};
const SD: &[u8] = b" LOG [SEKOIA@53288 intake_key=\"KEY\"] ";

/// Renders `raw`, checks the framing, returns the line without `LEN SP` and without `\n`.
fn render(raw: &[u8]) -> Vec<u8> {
    let (mut scratch, mut out) = (Vec::new(), b"junk".to_vec());
    let r = render_event(raw, &CTX, &mut scratch, &mut out);
    assert_framed(&out[4..], r.start - 4);
    let line = &out[r.start..r.end];
    line.strip_suffix(b"\n").unwrap_or(line).to_vec()
}

/// `wire` is exactly one `LEN SP LINE` whose LINE starts at `line_start`; LINE ends with its
/// only LF, unless it was cut at `MAX_MESSAGE` bytes (then it has none).
fn assert_framed(wire: &[u8], line_start: usize) {
    let sp = wire.iter().position(|&b| b == b' ').expect("LEN SP");
    assert_eq!(sp + 1, line_start);
    let len: usize = std::str::from_utf8(&wire[..sp])
        .expect("ascii")
        .parse()
        .expect("LEN");
    assert!(wire[0] != b'0' || sp == 1, "no leading zeros in LEN");
    let line = &wire[line_start..];
    assert_eq!(len, line.len());
    assert!(len <= MAX_MESSAGE);
    let lfs = line.iter().filter(|&&b| b == b'\n').count();
    if len == MAX_MESSAGE && line.last() != Some(&b'\n') {
        assert_eq!(lfs, 0);
    } else {
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(lfs, 1);
    }
}

fn expected(head: &str, msg: &[u8]) -> Vec<u8> {
    [head.as_bytes(), SD, msg].concat()
}

#[test]
fn empty_message_renders_with_sender_and_empty_msg() {
    assert_eq!(render(b""), expected("<13>1 TS 127.0.0.1 - -", b""));
}

#[test]
fn only_pri_renders_empty_msg() {
    assert_eq!(render(b"<13>"), expected("<13>1 TS 127.0.0.1 - -", b""));
    assert_eq!(render(b"<0>"), expected("<0>1 TS 127.0.0.1 - -", b""));
}

#[test]
fn invalid_pri_renders_13_and_whole_line() {
    assert_eq!(
        render(b"<999>x y"),
        expected("<13>1 TS 127.0.0.1 - -", b"<999>x y")
    );
}

#[test]
fn all_control_bytes_are_escaped() {
    let raw: Vec<u8> = [&b"<13>host app: "[..], &(0u8..0x20).collect::<Vec<_>>()].concat();
    let line = render(&raw);
    assert!(line.ends_with(b"] #000#001#002#003#004#005#006#007#010#011#012#013#014#015#016#017#020#021#022#023#024#025#026#027#030#031#032#033#034#035#036#037"));
    assert!(line.iter().all(|&b| b >= 0x20));
}

#[test]
fn line_of_a_max_size_message_is_cut_at_max_message_like_omfwd() {
    let mut raw = b"<134>1 - host app 1 m - ".to_vec();
    let prefix = raw.len();
    raw.resize(MAX_MESSAGE, b'a');
    let line = render(&raw);
    let full = expected("<134>1 TS host app 1", &raw[prefix..]);
    assert_eq!(line, full[..MAX_MESSAGE]);
}

#[test]
fn max_size_message_with_control_bytes_is_capped_like_rsyslog() {
    let mut raw = b"<13>host app: ".to_vec();
    raw.resize(MAX_MESSAGE, b'\t');
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    let clean = sanitise::sanitise(&raw, &mut scratch);
    // rsyslogd 8.2302 keeps 255984 bytes of MSG here (63996 × "#011", seen with omfile)...
    assert_eq!(clean.len() - b"<13>host app: ".len(), 255_984);
    // ...and its omfwd then cuts the line to 256000 bytes.
    let r = render_event(&raw, &CTX, &mut scratch, &mut out);
    assert_eq!(r.len(), MAX_MESSAGE);
}

#[test]
fn oversized_input_does_not_panic() {
    let raw = vec![b'x'; 300_000];
    assert_eq!(render(&raw).len(), MAX_MESSAGE);
}

#[test]
fn every_rsyslog_verified_case_renders_identically() {
    assert!(VERIFIED.len() >= 60);
    for (raw, want) in VERIFIED {
        let got = render(raw);
        let at = got
            .windows(SD.len())
            .position(|w| w == SD)
            .expect("SD in line");
        let got = [&got[..at], b"|", &got[at + SD.len()..]].concat();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "input {:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn warm_buffers_are_not_grown_again() {
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    let raw = b"<13>Oct 11 22:14:15 host app[1]: a\tb";
    render_event(raw, &CTX, &mut scratch, &mut out);
    let caps = (scratch.capacity(), out.capacity());
    for _ in 0..100 {
        out.clear();
        render_event(raw, &CTX, &mut scratch, &mut out);
    }
    assert_eq!((scratch.capacity(), out.capacity()), caps);
}

/// xorshift64*: deterministic, no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn fuzz_never_panics_and_always_frames_one_line() {
    // Pieces that steer inputs into every parser branch, mixed with random bytes.
    const PIECES: &[&[u8]] = &[
        b"<",
        b">",
        b"<13>",
        b"<191>",
        b"<0013>",
        b"1 ",
        b"- ",
        b"2024-05-01T10:00:00Z ",
        b"2024 ",
        b"Oct 11 22:14:15 ",
        b"Oct  1 ",
        b"host ",
        b"app[12]: ",
        b"[a x=\"\\]\"] ",
        b"[",
        b"]",
        b"\\",
        b":",
        b" ",
        b"\t",
        b"\n",
        b"\0",
        b"{",
        b"\xc3\xa9",
        b"\xff",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    let mut raw = Vec::new();
    for _ in 0..20_000 {
        raw.clear();
        let parts = rng.below(12);
        for _ in 0..parts {
            if rng.below(3) == 0 {
                for _ in 0..rng.below(8) {
                    raw.push(rng.next() as u8);
                }
            } else {
                raw.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            }
        }
        out.clear();
        let r = render_event(&raw, &CTX, &mut scratch, &mut out);
        assert_framed(&out, r.start);
    }
}
