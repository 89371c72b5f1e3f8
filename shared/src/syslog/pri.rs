//! The `<PRI>` prefix, read like rsyslog's `ParsePRI` (runtime/parser.c), on sanitised bytes.
//!
//! - No `<` at byte 0: PRI 13 (user.notice) and the header starts at byte 0.
//! - `<` then digits then `>` with a value ≤ 191: that PRI; leading zeros are fine (`<0013>`)
//!   and, as in rsyslog, no digits at all (`<>`) is PRI 0.
//! - Anything else (`<999>`, `<abc>`, `<1`, `< 13>`): rsyslog renders the PRI as `invld` and
//!   parses nothing. We return [`Pri::Invalid`]; the renderer uses PRI 13 and keeps the whole
//!   line as the message (our documented deviation, SPEC §4).

/// Largest valid PRI: facility 23, severity 7.
const MAX_PRI: u32 = 191;
/// PRI used when the message has none, or an invalid one (our deviation from `invld`).
pub const DEFAULT_PRI: u8 = 13;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pri {
    /// A usable PRI; the header starts at `body` (just after `>`, or 0 without PRI).
    Valid { value: u8, body: usize },
    /// Malformed or larger than 191.
    Invalid,
}

pub fn parse_pri(msg: &[u8]) -> Pri {
    if msg.first() != Some(&b'<') {
        return Pri::Valid {
            value: DEFAULT_PRI,
            body: 0,
        };
    }
    // Mirrors rsyslog: digits are accumulated while the value is still ≤ 191, so a long run
    // of digits stops early and then fails the `>` test or the range test.
    let mut value: u32 = 0;
    let mut i = 1;
    while i < msg.len() && msg[i].is_ascii_digit() && value <= MAX_PRI {
        value = value * 10 + u32::from(msg[i] - b'0');
        i += 1;
    }
    match msg.get(i) {
        Some(b'>') if value <= MAX_PRI => Pri::Valid {
            value: value as u8,
            body: i + 1,
        },
        _ => Pri::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_without_angle_bracket_gets_pri_13_from_byte_0() {
        assert_eq!(parse_pri(b"hello"), Pri::Valid { value: 13, body: 0 });
        assert_eq!(parse_pri(b""), Pri::Valid { value: 13, body: 0 });
    }

    #[test]
    fn valid_pri_with_and_without_leading_zeros() {
        assert_eq!(
            parse_pri(b"<134>x"),
            Pri::Valid {
                value: 134,
                body: 5
            }
        );
        assert_eq!(parse_pri(b"<0013>x"), Pri::Valid { value: 13, body: 6 });
        assert_eq!(
            parse_pri(b"<00000013>"),
            Pri::Valid {
                value: 13,
                body: 10
            }
        );
        assert_eq!(
            parse_pri(b"<191>"),
            Pri::Valid {
                value: 191,
                body: 5
            }
        );
        assert_eq!(parse_pri(b"<0>"), Pri::Valid { value: 0, body: 3 });
    }

    #[test]
    fn empty_angle_brackets_are_pri_0_like_rsyslog() {
        assert_eq!(parse_pri(b"<>x"), Pri::Valid { value: 0, body: 2 });
    }

    #[test]
    fn malformed_or_too_large_pri_is_invalid() {
        for m in [
            &b"<192>x"[..],
            b"<999>",
            b"<1919>",
            b"<abc>",
            b"<1",
            b"<13",
            b"<",
            b"< 13>",
            b"<-1>",
            b"<1a>",
        ] {
            assert_eq!(
                parse_pri(m),
                Pri::Invalid,
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
    }
}
