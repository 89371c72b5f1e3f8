//! Sanitising (`syslog::internals::sanitise`) against a plain model of its rules.
//!
//! Model: drop one trailing NUL, then one trailing LF; escape every byte below 0x20 as `#`
//! and three octal digits. The real output must contain no byte below 0x20, must equal the
//! model, or (only when the rsyslog cap cut it: `min(4 × len, MAX_MESSAGE) - 3`) be a prefix
//! of the model at least as long as the cap. A message without control bytes is returned
//! as is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekoia_shared::syslog::internals::sanitise;
use sekoia_shared::syslog::MAX_MESSAGE;

fn model(raw: &[u8]) -> Vec<u8> {
    let mut msg = raw;
    if let Some(rest) = msg.strip_suffix(b"\0") {
        msg = rest;
    }
    if let Some(rest) = msg.strip_suffix(b"\n") {
        msg = rest;
    }
    let mut out = Vec::with_capacity(msg.len() * 4);
    for &b in msg {
        if b < 0x20 {
            out.extend_from_slice(&[b'#', b'0' + (b >> 6), b'0' + ((b >> 3) & 7), b'0' + (b & 7)]);
        } else {
            out.push(b);
        }
    }
    out
}

fuzz_target!(|raw: &[u8]| {
    let mut scratch = Vec::new();
    let out = sanitise(raw, &mut scratch).to_vec();
    assert!(out.iter().all(|&b| b >= 0x20), "a control byte survived");
    let want = model(raw);
    if out != want {
        let cap = raw
            .len()
            .saturating_mul(4)
            .min(MAX_MESSAGE)
            .saturating_sub(3);
        assert!(want.starts_with(&out), "output is not the escaped message");
        assert!(out.len() >= cap, "cut before the rsyslog cap");
    }
    assert!(out.len() <= raw.len().saturating_mul(4).min(MAX_MESSAGE.max(raw.len())));
    // Clean text (the output has no control byte, so no trailing NUL or LF) is left alone.
    let mut again = Vec::new();
    assert_eq!(
        sanitise(&out, &mut again),
        &out[..],
        "clean text was changed"
    );
});
