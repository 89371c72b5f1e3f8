//! The whole event path (`syslog::render_event`: sanitise, PRI, RFC 5424 / 3164, render).
//!
//! Checks: no panic; the output is `LEN SP LINE` with LEN the exact decimal length of LINE
//! (no leading zero); LINE starts `<PRI>1 ` and is at most `MAX_MESSAGE` bytes; a LINE
//! shorter than that ends with its only LF and holds no other byte below 0x20; the result
//! does not depend on what the reused buffers held before. One input in 32 is repeated past
//! `MAX_MESSAGE` so that the truncation paths run too (one such run costs a hundred short
//! ones under the fuzzer's instrumentation).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekoia_fuzz::Choices;
use sekoia_shared::syslog::{render_event, EventContext, MAX_MESSAGE};

const CTX: EventContext<'static> = EventContext {
    intake_key: "AAAAAAAAAAAAAAAAkey",
    sender_host: "10.1.2.3",
    timestamp: "2024-05-01T10:00:00.123456+00:00",
};

fn check(out: &[u8], line: std::ops::Range<usize>) {
    let sp = out.iter().position(|&b| b == b' ').expect("a LEN prefix");
    assert_eq!(line, sp + 1..out.len(), "returned range is not the line");
    let len_text = std::str::from_utf8(&out[..sp]).expect("decimal LEN");
    assert!(!len_text.starts_with('0'), "LEN with a leading zero");
    let len: usize = len_text.parse().expect("decimal LEN");
    let body = &out[line];
    assert_eq!(len, body.len(), "LEN does not count the line");
    assert!(body.len() <= MAX_MESSAGE, "line longer than MAX_MESSAGE");
    let pri_end = body.iter().position(|&b| b == b'>').expect("a PRI");
    assert!(
        body[0] == b'<' && pri_end > 1 && pri_end <= 4,
        "malformed PRI"
    );
    assert!(
        body[1..pri_end].iter().all(u8::is_ascii_digit),
        "malformed PRI"
    );
    assert!(body[pri_end..].starts_with(b">1 "), "no version after PRI");
    if body.len() < MAX_MESSAGE {
        assert_eq!(body.last(), Some(&b'\n'), "line without its final LF");
        let inner = &body[..body.len() - 1];
        assert!(
            inner.iter().all(|&b| b >= 0x20),
            "control byte inside the line"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    let long = c.u8() % 32 == 0;
    let raw = c.rest();
    let owned = match long && !raw.is_empty() {
        true => raw.repeat((MAX_MESSAGE + 64) / raw.len() + 1),
        false => raw.to_vec(),
    };
    let mut scratch = Vec::new();
    let mut out = Vec::new();
    let line = render_event(&owned, &CTX, &mut scratch, &mut out);
    check(&out, line);

    // Same event again with dirty buffers: the same bytes, appended after the old ones.
    scratch.extend_from_slice(b"\x01stale\n");
    let first = out.clone();
    let line = render_event(&owned, &CTX, &mut scratch, &mut out);
    assert_eq!(
        line.start,
        first.len() + first.iter().position(|&b| b == b' ').unwrap_or(0) + 1
    );
    assert_eq!(
        &out[first.len()..],
        &first[..],
        "output depends on the reused buffers"
    );
});
