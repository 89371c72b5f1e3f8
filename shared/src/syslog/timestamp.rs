//! Skipping over the sender's timestamp the way rsyslog's `runtime/datetime.c` recognises it
//! (`ParseTIMESTAMP3339`, `ParseTIMESTAMP3164`). We never use the value (the output carries
//! the reception time), only whether a timestamp is there and where it ends, so only the
//! acceptance rules are reproduced:
//!
//! - numbers are runs of 0 or more digits (an empty run reads as 0, so `-01-01T1:0:0Z` is
//!   a valid RFC 3339 timestamp to rsyslog); ranges: year 0..2099, month 1..12, day 1..31,
//!   hour 0..23, minute 0..59, second 0..60, offset hour 0..23, offset minute 0..59;
//! - RFC 3339 needs `T`, then `Z` or `±hh:mm`; RFC 3164 is `[yyyy ]Mmm [ ]d[d] [yyyy ]hh:mm:ss`
//!   with case-insensitive month, optional `.frac`, optional trailing `:`;
//! - either must be followed by a space (eaten) or the end.
//!
//! rsyslog quirk reproduced on purpose: after a leading `yyyy ` in an RFC 3164 timestamp it
//! skips the space without counting it, so its remaining length is one too large. A
//! timestamp that then ends the message is rejected, and the parsers after it may step onto
//! the terminating NUL. [`Cursor`] models that: reading past the end yields 0 (the NUL) and
//! `left` may exceed the bytes really left by one.

/// Parse position inside the header, with rsyslog's own idea of how many bytes are left.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
    pub left: isize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], pos: usize) -> Self {
        let left = buf.len().saturating_sub(pos) as isize;
        Cursor { buf, pos, left }
    }

    /// Byte at `pos + k`, or 0 past the end (rsyslog's NUL terminator).
    pub fn peek(&self, k: usize) -> u8 {
        self.buf.get(self.pos + k).copied().unwrap_or(0)
    }

    pub fn bump(&mut self) {
        self.pos += 1;
        self.left -= 1;
    }

    /// The bytes from the current position to the real end (empty if past it).
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos.min(self.buf.len())..]
    }

    /// rsyslog's `srSLMGParseInt32`: 0 or more digits, bounded against overflow.
    fn int(&mut self) -> i64 {
        let mut v: i64 = 0;
        while self.left > 0 && self.peek(0).is_ascii_digit() && v < i64::from(i32::MAX / 10 - 1) {
            v = v * 10 + i64::from(self.peek(0) - b'0');
            self.bump();
        }
        v
    }

    /// `lenStr == 0 || *p++ != c` fails; otherwise the byte is consumed.
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.left == 0 || self.peek(0) != c {
            return None;
        }
        self.bump();
        Some(())
    }

    /// After a timestamp: the end, or one space which is eaten.
    fn end_or_space(&mut self) -> Option<()> {
        if self.left > 0 {
            if self.peek(0) != b' ' {
                return None;
            }
            self.bump();
        }
        Some(())
    }
}

fn in_range(v: i64, lo: i64, hi: i64) -> Option<()> {
    (lo..=hi).contains(&v).then_some(())
}

/// An RFC 3339 timestamp at the cursor: the cursor after it (and its space), or None.
pub(crate) fn skip_rfc3339(start: Cursor<'_>) -> Option<Cursor<'_>> {
    let mut c = start;
    let year = c.int();
    if c.left == 0 || c.peek(0) != b'-' || !(0..2100).contains(&year) {
        return None;
    }
    c.bump();
    in_range(c.int(), 1, 12)?;
    c.eat(b'-')?;
    in_range(c.int(), 1, 31)?;
    c.eat(b'T')?;
    in_range(c.int(), 0, 23)?;
    c.eat(b':')?;
    in_range(c.int(), 0, 59)?;
    c.eat(b':')?;
    in_range(c.int(), 0, 60)?;
    if c.left > 0 && c.peek(0) == b'.' {
        c.bump();
        c.int();
    }
    if c.left == 0 {
        return None;
    }
    match c.peek(0) {
        b'Z' => c.bump(),
        b'+' | b'-' => {
            c.bump();
            in_range(c.int(), 0, 23)?;
            c.eat(b':')?;
            in_range(c.int(), 0, 59)?;
        }
        _ => return None,
    }
    c.end_or_space()?;
    Some(c)
}

const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

/// An RFC 3164 timestamp at the cursor: the cursor after it (and its space), or None.
pub(crate) fn skip_rfc3164(start: Cursor<'_>) -> Option<Cursor<'_>> {
    let mut c = start;
    if c.left < 3 {
        return None;
    }
    let mut year = 0;
    if c.peek(0).is_ascii_digit() {
        year = c.int();
        if !(1970..=2100).contains(&year) || c.peek(0) != b' ' {
            return None;
        }
        c.pos += 1; // rsyslog skips this space without decrementing its length (quirk above)
    }
    let month = [c.peek(0), c.peek(1), c.peek(2)].map(|b| b.to_ascii_lowercase());
    if !MONTHS.iter().any(|m| **m == month) {
        return None;
    }
    c.pos += 3;
    c.left -= 3;
    c.eat(b' ')?;
    if c.peek(0) == b' ' {
        c.bump();
    }
    in_range(c.int(), 1, 31)?;
    c.eat(b' ')?;
    let mut hour = c.int();
    if year == 0 && hour > 1970 && hour < 2100 {
        c.eat(b' ')?;
        hour = c.int();
    }
    in_range(hour, 0, 23)?;
    c.eat(b':')?;
    in_range(c.int(), 0, 59)?;
    c.eat(b':')?;
    in_range(c.int(), 0, 60)?;
    if c.left > 0 && c.peek(0) == b'.' {
        c.bump();
        c.int();
    }
    if c.left > 0 && c.peek(0) == b':' {
        c.bump();
    }
    c.end_or_space()?;
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest3339(s: &[u8]) -> Option<&[u8]> {
        skip_rfc3339(Cursor::new(s, 0)).map(|c| c.rest())
    }
    fn rest3164(s: &[u8]) -> Option<&[u8]> {
        skip_rfc3164(Cursor::new(s, 0)).map(|c| c.rest())
    }

    #[test]
    fn rfc3339_accepts_what_rsyslog_accepts() {
        assert_eq!(
            rest3339(b"2024-05-01T10:00:00.123456+02:00 host"),
            Some(&b"host"[..])
        );
        assert_eq!(rest3339(b"2024-05-01T10:00:00Z"), Some(&b""[..]));
        assert_eq!(rest3339(b"2024-5-1T1:0:0Z x"), Some(&b"x"[..]));
        assert_eq!(rest3339(b"-01-01T10:00:00Z x"), Some(&b"x"[..]));
        assert_eq!(rest3339(b"2024-05-01T10:00:00.Z x"), Some(&b"x"[..]));
        assert_eq!(rest3339(b"2024-05-01T10:00:00+02: x"), Some(&b"x"[..]));
    }

    #[test]
    fn rfc3339_rejects_what_rsyslog_rejects() {
        for s in [
            &b"2024-05-01T10:00:00 x"[..],
            b"2024-05-01 10:00:00Z",
            b"2024-05-01t10:00:00Z",
            b"2024-05-01T10:00:00+0200 x",
            b"2024-05-01T10:00:00Zx",
            b"2024-05-01T10:00:00+24:00",
            b"2100-01-01T10:00:00Z",
            b"2024-13-01T10:00:00Z",
            b"2024-05-01T10:00:00+",
            b"-",
        ] {
            assert_eq!(rest3339(s), None, "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn rfc3164_accepts_variants() {
        assert_eq!(rest3164(b"Oct 11 22:14:15 host"), Some(&b"host"[..]));
        assert_eq!(rest3164(b"oct  1 22:14:15 host"), Some(&b"host"[..]));
        assert_eq!(rest3164(b"Oct 1 22:14:15 host"), Some(&b"host"[..]));
        assert_eq!(rest3164(b"Oct 11 2024 22:14:15 host"), Some(&b"host"[..]));
        assert_eq!(rest3164(b"Oct 11 22:14:15.123: host"), Some(&b"host"[..]));
        assert_eq!(rest3164(b"Oct 11 22:14:15"), Some(&b""[..]));
        assert_eq!(rest3164(b"2024 Oct 11 22:14:15 host"), Some(&b"host"[..]));
    }

    #[test]
    fn rfc3164_rejects_variants() {
        for s in [
            &b"Foo 11 22:14:15 x"[..],
            b"Oct 32 22:14:15 x",
            b"Oct 11 25:14:15 x",
            b"Oct   1 22:14:15 x",
            b"Oct 11 22:14 x",
            b"Oct 11 22:14:15x",
            b"Oct 11 2100 22:14:15 x",
            b"1969 Oct 11 22:14:15 x",
            b"2024 Oct 11 22:14:15",
        ] {
            assert_eq!(rest3164(s), None, "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn year_prefix_leaves_length_one_too_large() {
        let c = skip_rfc3164(Cursor::new(b"2024 Oct 11 22:14:15 host", 0));
        let c = c.map(|c| (c.rest().len() as isize, c.left));
        assert_eq!(c, Some((4, 5)));
    }
}
