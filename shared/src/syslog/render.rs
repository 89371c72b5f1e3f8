//! Writes the output line, octet-counted, in one pass:
//!
//! ```text
//! LEN SP <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID LOG [SEKOIA@53288 intake_key="KEY"] MSG\n
//! ```
//!
//! LEN (decimal, no leading zeros) counts the line from `<` to the final `\n` included. MSG
//! loses its leading spaces, as the reference template's `^[ \t]*(.*)$` does (TABs are
//! already `#011` after sanitising, so only spaces remain to strip); trailing whitespace is
//! kept and an empty MSG leaves `...] \n`. The length is known before writing, so LEN is
//! written first and nothing is moved afterwards.
//!
//! A line longer than [`MAX_MESSAGE`] is cut to exactly that many bytes, losing its final
//! `\n`, because the reference's omfwd does so (`if len > maxMessageSize: len = maxMessageSize`,
//! checked on the wire against rsyslogd 8.2302): the intake receives the same 256000 bytes.

use crate::syslog::{EventContext, Fields, MAX_MESSAGE};

const SD_OPEN: &[u8] = b" LOG [SEKOIA@53288 intake_key=\"";
const SD_CLOSE: &[u8] = b"\"] ";

/// Appends `LEN SP LINE` to `out`; returns the range of LINE.
pub(crate) fn write_line(
    pri: u8,
    f: &Fields<'_>,
    ctx: &EventContext<'_>,
    out: &mut Vec<u8>,
) -> std::ops::Range<usize> {
    let host = f.hostname.unwrap_or(ctx.sender_host.as_bytes());
    let lead = f.msg.iter().take_while(|&&b| b == b' ').count();
    let msg = &f.msg[lead..];

    let mut pri_buf = [0u8; 20];
    let pri_text = decimal(u64::from(pri), &mut pri_buf);
    let full_len = 1 + pri_text.len() + 3 // "<" PRI ">1 "
        + ctx.timestamp.len() + 1
        + host.len() + 1
        + f.app_name.len() + 1
        + f.procid.len()
        + SD_OPEN.len() + ctx.intake_key.len() + SD_CLOSE.len()
        + msg.len() + 1;
    let line_len = full_len.min(MAX_MESSAGE);
    let mut len_buf = [0u8; 20];
    let len_text = decimal(line_len as u64, &mut len_buf);

    out.reserve(len_text.len() + 1 + full_len);
    out.extend_from_slice(len_text);
    out.push(b' ');
    let start = out.len();
    out.push(b'<');
    out.extend_from_slice(pri_text);
    out.extend_from_slice(b">1 ");
    out.extend_from_slice(ctx.timestamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(host);
    out.push(b' ');
    out.extend_from_slice(f.app_name);
    out.push(b' ');
    out.extend_from_slice(f.procid);
    out.extend_from_slice(SD_OPEN);
    out.extend_from_slice(ctx.intake_key.as_bytes());
    out.extend_from_slice(SD_CLOSE);
    out.extend_from_slice(msg);
    out.push(b'\n');
    debug_assert_eq!(out.len() - start, full_len);
    out.truncate(start + line_len);
    start..out.len()
}

/// Decimal digits of `v`, written at the end of `buf`.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: EventContext<'static> = EventContext {
        intake_key: "KEY",
        sender_host: "10.0.0.1",
        timestamp: "TS",
    };

    #[test]
    fn writes_length_prefix_and_range_of_line() {
        let f = Fields {
            hostname: Some(b"fw01"),
            app_name: b"app",
            procid: b"12",
            msg: b"  hi ",
        };
        let mut out = b"prev".to_vec();
        let r = write_line(134, &f, &CTX, &mut out);
        let line = &b"<134>1 TS fw01 app 12 LOG [SEKOIA@53288 intake_key=\"KEY\"] hi \n"[..];
        assert_eq!(&out[r.clone()], line);
        assert_eq!(&out[..r.start], format!("prev{} ", line.len()).as_bytes());
    }

    #[test]
    fn missing_hostname_uses_sender_and_empty_msg_keeps_space() {
        let f = Fields {
            hostname: None,
            app_name: b"-",
            procid: b"-",
            msg: b"   ",
        };
        let mut out = Vec::new();
        let r = write_line(0, &f, &CTX, &mut out);
        assert_eq!(
            &out[r],
            b"<0>1 TS 10.0.0.1 - - LOG [SEKOIA@53288 intake_key=\"KEY\"] \n"
        );
    }

    #[test]
    fn line_longer_than_max_message_is_cut_like_omfwd() {
        let long = vec![b'm'; MAX_MESSAGE];
        let f = Fields {
            hostname: Some(b"h"),
            app_name: b"a",
            procid: b"-",
            msg: &long,
        };
        let mut out = Vec::new();
        let r = write_line(13, &f, &CTX, &mut out);
        assert_eq!(r.len(), MAX_MESSAGE);
        assert_eq!(&out[..r.start], b"256000 ");
        assert_eq!(
            out.last(),
            Some(&b'm'),
            "the cut drops the final LF, as the reference"
        );
    }

    #[test]
    fn decimal_formats_edges() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }
}
