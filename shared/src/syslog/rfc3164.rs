//! RFC 3164 ("BSD") header, split the way rsyslog's `pmrfc3164` does it with default
//! settings, on sanitised bytes after the PRI. Used when the header is not RFC 5424.
//!
//! 1. Headerless: if the first byte that is not a space is `{` or `[`, nothing is parsed
//!    (no hostname, app-name `-`, procid `-`, MSG = everything).
//! 2. Optional timestamp: RFC 3339, else RFC 3164, else (HP ProCurve) one space then RFC 3164.
//! 3. HOSTNAME: a run of `[A-Za-z0-9._-]` (at most 511 bytes) that ends in a letter or digit
//!    and is followed by a space (eaten), or that runs to the end of the message (then any
//!    last byte is fine, e.g. `<13>host-`). Otherwise there is none.
//! 4. TAG: up to 510 bytes up to `:` or space; a `:` is part of the TAG, a space stays in MSG.
//! 5. app-name (rsyslog `aquireProgramName`, then `-` when empty): the TAG up to the first
//!    byte that is `:`, `[`, `/` or not printable ASCII (so `café:` → `caf`).
//!    procid (rsyslog `aquirePROCIDFromTAG`): the bytes between the first `[` of the TAG and
//!    the next `]`, possibly empty; `-` when there is no `[` or no `]` after it.
//!
//! With the year-prefix quirk described in `timestamp.rs` the hostname/TAG scan may consume
//! rsyslog's NUL terminator; the NUL never shows in any field and MSG is then empty.

use crate::syslog::timestamp::{skip_rfc3164, skip_rfc3339, Cursor};
use crate::syslog::Fields;

/// `CONF_HOSTNAME_MAXSIZE - 1` and `CONF_TAG_MAXSIZE - 2` in rsyslog (both sizes are 512).
const MAX_HOSTNAME: isize = 511;
const MAX_TAG_BEFORE_COLON: usize = 510;

pub fn parse(header: &[u8]) -> Fields<'_> {
    let first = header.iter().position(|&b| b != b' ' && b != b'\t');
    if matches!(first.map(|i| header[i]), Some(b'{' | b'[')) {
        return Fields {
            hostname: None,
            app_name: b"-",
            procid: b"-",
            msg: header,
        };
    }
    let mut c = Cursor::new(header, 0);
    if let Some(after) = skip_rfc3339(c).or_else(|| skip_rfc3164(c)) {
        c = after;
    } else if c.peek(0) == b' ' && c.left > 1 {
        let mut shifted = c;
        shifted.bump();
        if let Some(after) = skip_rfc3164(shifted) {
            c = after;
        }
    }
    let hostname = hostname(&mut c);
    let tag = tag(&mut c);
    Fields {
        hostname,
        app_name: app_name(tag),
        procid: procid(tag),
        msg: c.rest(),
    }
}

fn is_hostname_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

fn hostname<'a>(c: &mut Cursor<'a>) -> Option<&'a [u8]> {
    if c.left <= 0 {
        return None;
    }
    let mut i: isize = 0;
    while i < c.left && is_hostname_byte(c.peek(i as usize)) && i < MAX_HOSTNAME {
        i += 1;
    }
    let n = i as usize;
    let name = &c.buf[c.pos..c.pos + n];
    if i == c.left {
        c.pos += n;
        c.left -= i;
        return Some(name);
    }
    if n > 0 && c.peek(n - 1).is_ascii_alphanumeric() && c.peek(n) == b' ' {
        c.pos += n + 1;
        c.left -= i + 1;
        return Some(name);
    }
    None
}

fn tag<'a>(c: &mut Cursor<'a>) -> &'a [u8] {
    let start = c.pos;
    let mut n = 0;
    while c.left > 0 && c.peek(0) != b':' && c.peek(0) != b' ' && n < MAX_TAG_BEFORE_COLON {
        c.bump();
        n += 1;
    }
    if c.left > 0 && c.peek(0) == b':' {
        c.bump();
    }
    // Leave out rsyslog's NUL terminator if the scan stepped onto it.
    &c.buf[start..c.pos.min(c.buf.len())]
}

fn app_name(tag: &[u8]) -> &[u8] {
    let end = tag
        .iter()
        .position(|&b| !(0x20..0x7f).contains(&b) || b == b':' || b == b'[' || b == b'/')
        .unwrap_or(tag.len());
    if end == 0 {
        b"-"
    } else {
        &tag[..end]
    }
}

fn procid(tag: &[u8]) -> &[u8] {
    let Some(open) = tag.iter().position(|&b| b == b'[') else {
        return b"-";
    };
    let inner = &tag[open + 1..];
    match inner.iter().position(|&b| b == b']') {
        Some(close) => &inner[..close],
        None => b"-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(h: &[u8]) -> (Option<String>, String, String, String) {
        let f = parse(h);
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (f.hostname.map(s), s(f.app_name), s(f.procid), s(f.msg))
    }

    fn t(h: Option<&str>, a: &str, p: &str, m: &str) -> (Option<String>, String, String, String) {
        (h.map(String::from), a.into(), p.into(), m.into())
    }

    #[test]
    fn spec_examples() {
        assert_eq!(fields(b"hello"), t(Some("hello"), "-", "-", ""));
        assert_eq!(
            fields(b"Oct 11 22:14:15 myapp: hi"),
            t(None, "myapp", "-", " hi")
        );
    }

    #[test]
    fn headerless_json_or_bracket_is_all_message() {
        assert_eq!(fields(br#" {"a":1}"#), t(None, "-", "-", r#" {"a":1}"#));
        assert_eq!(fields(b"[foo] bar"), t(None, "-", "-", "[foo] bar"));
    }

    #[test]
    fn tag_gives_app_name_and_procid() {
        assert_eq!(
            fields(b"Oct 11 22:14:15 host app[123]: m"),
            t(Some("host"), "app", "123", " m")
        );
        assert_eq!(
            fields(b"Oct 11 22:14:15 host app/sub[12]: m"),
            t(Some("host"), "app", "12", " m")
        );
        assert_eq!(
            fields(b"Oct 11 22:14:15 host app[]: m"),
            t(Some("host"), "app", "", " m")
        );
        assert_eq!(
            fields(b"Oct 11 22:14:15 host app[12: m"),
            t(Some("host"), "app", "-", " m")
        );
        assert_eq!(
            fields(b"Oct 11 22:14:15 host a:b:c"),
            t(Some("host"), "a", "-", "b:c")
        );
        assert_eq!(
            fields(b"host caf\xc3\xa9[1]: x"),
            t(Some("host"), "caf", "1", " x")
        );
    }

    #[test]
    fn hostname_must_end_alphanumeric_and_be_followed_by_space() {
        assert_eq!(
            fields(b"Oct 11 22:14:15 host- app: x"),
            t(None, "host-", "-", " app: x")
        );
        assert_eq!(
            fields(b"Oct 11 22:14:15 host:1 app: x"),
            t(None, "host", "-", "1 app: x")
        );
        assert_eq!(fields(b"host-"), t(Some("host-"), "-", "-", ""));
    }

    #[test]
    fn year_prefix_quirk_swallows_terminator() {
        assert_eq!(
            fields(b"2024 Oct 11 22:14:15 host"),
            t(None, "host", "-", "")
        );
        assert_eq!(fields(b"2024 Oct 11 22:14:15 "), t(None, "-", "-", ""));
    }
}
