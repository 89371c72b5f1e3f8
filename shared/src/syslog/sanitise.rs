//! Sanitising of one raw message, exactly as rsyslog's `SanitizeMsg` does it with default
//! settings, BEFORE any parsing.
//!
//! Rules (verified against rsyslogd 8.2302 and `runtime/parser.c`):
//! 1. drop one trailing NUL, then one trailing LF (`abc\n\0` → `abc`, but `abc\0\n` → `abc#000`);
//! 2. every byte below 0x20, TAB included, becomes `#` and three octal digits (`#011`, `#012`,
//!    `#015`, `#000`); DEL (0x7F) and bytes ≥ 0x80 are kept as they are;
//! 3. the escaped copy is capped like rsyslog caps it: at most `min(4 × len, MAX_MESSAGE)`
//!    bytes, and escaping stops once the copy reaches that cap minus 3. So a 256000-byte
//!    message with control bytes near its end loses its last few bytes, as in the reference.
//!    A message without control bytes is never copied (the common, zero-copy case).
//!
//! The other side is `render_event`, which parses the returned bytes.

use crate::syslog::MAX_MESSAGE;

/// Returns the sanitised message: a sub-slice of `raw` when nothing needs escaping,
/// otherwise the escaped copy written into `scratch` (cleared first).
pub fn sanitise<'a>(raw: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let mut len = raw.len();
    if len > 0 && raw[len - 1] == 0 {
        len -= 1;
    }
    if len > 0 && raw[len - 1] == b'\n' {
        len -= 1;
    }
    let msg = &raw[..len];
    let Some(first) = first_control(msg) else {
        return msg;
    };
    let max_dest = len.saturating_mul(4).min(MAX_MESSAGE);
    // rsyslog copies everything before the byte preceding the first control byte without
    // looking at the cap, then escapes from there while the copy is below `max_dest - 3`.
    let start = first.saturating_sub(1).min(max_dest);
    let stop = max_dest.saturating_sub(3);
    scratch.clear();
    scratch.reserve(max_dest);
    scratch.extend_from_slice(&msg[..start]);
    for &b in &msg[start..] {
        if scratch.len() >= stop {
            break;
        }
        if b < 0x20 {
            scratch.extend_from_slice(&[
                b'#',
                b'0' + (b >> 6),
                b'0' + ((b >> 3) & 7),
                b'0' + (b & 7),
            ]);
        } else {
            scratch.push(b);
        }
    }
    scratch
}

/// Position of the first byte below 0x20, 32 bytes per step (four 64-bit words, SWAR):
/// the common message has none, and a byte-at-a-time scan was the largest cost of our own
/// code under load. A flagged block is then searched byte by byte.
fn first_control(msg: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero exactly when some byte of `x` is below 0x20: such a byte wraps to 0xE0..=0xFF
    // and has its top bit clear in `x`; a byte in 0x20..0x80 sets no top bit unless a borrow
    // comes from a lower byte, which is itself below 0x20; bytes from 0x80 are masked by `!x`.
    fn below_0x20(word: &[u8]) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(word);
        let x = u64::from_le_bytes(b);
        x.wrapping_sub(0x20 * ONES) & !x & HIGH
    }
    let mut blocks = msg.chunks_exact(32);
    let mut base = 0;
    for block in &mut blocks {
        let any = below_0x20(&block[..8])
            | below_0x20(&block[8..16])
            | below_0x20(&block[16..24])
            | below_0x20(&block[24..]);
        if any != 0 {
            return block.iter().position(|&b| b < 0x20).map(|i| base + i);
        }
        base += 32;
    }
    blocks
        .remainder()
        .iter()
        .position(|&b| b < 0x20)
        .map(|i| base + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(raw: &[u8]) -> Vec<u8> {
        let mut scratch = Vec::new();
        sanitise(raw, &mut scratch).to_vec()
    }

    #[test]
    fn block_scan_finds_the_first_control_byte_anywhere() {
        for len in [0usize, 1, 7, 31, 32, 33, 63, 64, 65, 300, 1200] {
            // Every byte value around the boundaries, at every position.
            let clean: Vec<u8> = (0..len)
                .map(|i| [0x20, 0x7f, 0x80, 0xff, b'a'][i % 5])
                .collect();
            assert_eq!(first_control(&clean), None, "len {len}");
            for at in 0..len {
                for bad in [0x00, 0x09, 0x0a, 0x1f] {
                    let mut m = clean.clone();
                    m[at] = bad;
                    if at + 1 < len {
                        m[len - 1] = 0x01;
                    }
                    assert_eq!(
                        first_control(&m),
                        Some(at),
                        "len {len} at {at} byte {bad:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn clean_message_is_returned_unchanged() {
        assert_eq!(run(b"hello \x7f\xc3\xa9"), b"hello \x7f\xc3\xa9");
    }

    #[test]
    fn control_bytes_become_hash_and_three_octal_digits() {
        assert_eq!(run(b"a\tb\rc\x01d\x1fe\0f"), b"a#011b#015c#001d#037e#000f");
    }

    #[test]
    fn trailing_nul_then_trailing_lf_are_dropped_once() {
        assert_eq!(run(b"x\n\0"), b"x");
        assert_eq!(run(b"x\0\n"), b"x#000");
        assert_eq!(run(b"x\n\n"), b"x#012");
        assert_eq!(run(b"x\r\n"), b"x#015");
        assert_eq!(run(b"\n"), b"");
        assert_eq!(run(b""), b"");
    }

    #[test]
    fn escaped_copy_is_capped_like_rsyslog() {
        // All verified with rsyslogd 8.2302, maxMessageSize=256000.
        let mut a = b"<13>host app: \t".to_vec();
        a.resize(MAX_MESSAGE, b'x');
        assert_eq!(run(&a).len(), 255_997);
        let mut b = b"<13>host app: ".to_vec();
        b.resize(MAX_MESSAGE, b'\t');
        assert_eq!(run(&b).len(), 255_998);
        let mut c = b"<13>host app: ".to_vec();
        c.resize(MAX_MESSAGE - 1, b'y');
        c.push(b'\t');
        assert_eq!(run(&c).len(), 255_998);
    }

    #[test]
    fn small_messages_of_only_control_bytes_grow_fourfold() {
        let raw: Vec<u8> = (0u8..0x20).collect();
        let out = run(&raw);
        // trailing LF? 0x1f is last, so nothing is dropped; 0x00 first is escaped too.
        assert_eq!(out.len(), 32 * 4);
        assert!(out.starts_with(b"#000#001"));
        assert!(out.ends_with(b"#037"));
    }
}
