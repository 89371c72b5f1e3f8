//! RFC 5424 header (`1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`), split the way
//! rsyslog's `pmrfc5424` does it, on sanitised bytes after the PRI.
//!
//! - Only a header starting with `1 ` is RFC 5424; anything else goes to RFC 3164.
//! - TIMESTAMP is `-` or an RFC 3339 timestamp. If it is neither, rsyslog stops parsing:
//!   hostname = the sender, app-name empty, procid `-`, MSG = everything after `1 `.
//! - HOSTNAME, APP-NAME, PROCID, MSGID: each runs to the next space (one space eaten) or the
//!   end; they are kept verbatim, empty included (a missing field is empty, not `-`), except
//!   that an empty APP-NAME renders as `-` (observed in rsyslogd 8.2302).
//! - MSGID is dropped (the output says `LOG`). STRUCTURED-DATA is skipped and dropped: `-`,
//!   or `[` … up to a `]` followed by a space (`\]` does not end it) or the last byte; a
//!   following space is eaten. rsyslog moves past whatever it scanned even when the SD is
//!   malformed (`[x` leaves MSG `x`), and so do we.

use crate::syslog::timestamp::{skip_rfc3339, Cursor};
use crate::syslog::Fields;

/// Splits an RFC 5424 header, or returns None when `header` does not start with `1 `.
pub fn parse(header: &[u8]) -> Option<Fields<'_>> {
    if !header.starts_with(b"1 ") {
        return None;
    }
    let mut c = Cursor::new(header, 2);
    if c.left >= 2 && c.peek(0) == b'-' && c.peek(1) == b' ' {
        c.bump();
        c.bump();
    } else if let Some(after) = skip_rfc3339(c) {
        c = after;
    } else {
        return Some(Fields {
            hostname: None,
            app_name: b"",
            procid: b"-",
            msg: &header[2..],
        });
    }
    let hostname = field(&mut c);
    let app_name = field(&mut c);
    let procid = field(&mut c);
    let _msgid = field(&mut c);
    skip_structured_data(&mut c);
    Some(Fields {
        hostname: Some(hostname),
        app_name: if app_name.is_empty() { b"-" } else { app_name },
        procid,
        msg: c.rest(),
    })
}

/// rsyslog's `parseRFCField`: bytes up to a space or the end; the space is eaten.
fn field<'a>(c: &mut Cursor<'a>) -> &'a [u8] {
    let start = c.pos;
    while c.left > 0 && c.peek(0) != b' ' {
        c.bump();
    }
    let value = &c.buf[start..c.pos];
    if c.left > 0 {
        c.bump();
    }
    value
}

/// rsyslog's `parseRFCStructuredData`, keeping only its effect on the position.
fn skip_structured_data(c: &mut Cursor<'_>) {
    match c.peek(0) {
        _ if c.left == 0 => return,
        b'-' => c.bump(),
        b'[' => loop {
            if c.left < 2 {
                if c.left > 0 && c.peek(0) == b']' {
                    c.bump();
                }
                break;
            }
            match (c.peek(0), c.peek(1)) {
                (b'\\', b']') => {
                    c.bump();
                    c.bump();
                }
                (b']', b' ') => {
                    c.bump();
                    c.bump();
                    break;
                }
                _ => c.bump(),
            }
        },
        _ => return,
    }
    if c.left > 0 && c.peek(0) == b' ' {
        c.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(h: &[u8]) -> (Option<String>, String, String, String) {
        let f = parse(h).expect("rfc5424");
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (f.hostname.map(s), s(f.app_name), s(f.procid), s(f.msg))
    }

    #[test]
    fn non_version_1_is_not_rfc5424() {
        assert!(parse(b"2 2024-05-01T10:00:00Z h a p m - x").is_none());
        assert!(parse(b"1").is_none());
    }

    #[test]
    fn splits_fields_and_drops_msgid_and_sd() {
        let f = fields(br#"1 2024-05-01T10:00:00Z fw01 app 123 ID1 [a b="c"][d e="\]"] hello "#);
        assert_eq!(
            f,
            (
                Some("fw01".into()),
                "app".into(),
                "123".into(),
                "hello ".into()
            )
        );
    }

    #[test]
    fn unparsable_timestamp_keeps_everything_after_version() {
        let f = fields(b"1 garbage host app");
        assert_eq!(f, (None, "".into(), "-".into(), "garbage host app".into()));
    }

    #[test]
    fn missing_fields_are_empty_but_empty_app_name_is_dash() {
        assert_eq!(
            fields(b"1 - host"),
            (Some("host".into()), "-".into(), "".into(), "".into())
        );
        assert_eq!(
            fields(b"1 - "),
            (Some("".into()), "-".into(), "".into(), "".into())
        );
    }

    #[test]
    fn malformed_structured_data_moves_like_rsyslog() {
        assert_eq!(fields(b"1 - h a p m [x").3, "x");
        assert_eq!(fields(b"1 - h a p m [a]no space").3, "e");
        assert_eq!(fields(b"1 - h a p m -x").3, "x");
        assert_eq!(fields(b"1 - h a p m ]").3, "]");
        assert_eq!(fields(b"1 - h a p m [a] [b] msg").3, "[b] msg");
    }
}
