//! The PRI, RFC 5424 and RFC 3164 parsers (`syslog::internals`) on sanitised input.
//!
//! Checks: no panic; every field is a slice of the header (or the literal `-`); MSG is the
//! header's tail; RFC 5424 only claims headers that start with `1 `; the RFC 3164 hostname
//! and app-name respect the character rules of SPEC §4 (hostname `[A-Za-z0-9._-]`, at most
//! 511 bytes; app-name printable ASCII without `:`, `[`, `/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekoia_shared::syslog::internals::{
    parse_pri, parse_rfc3164, parse_rfc5424, sanitise, Fields, Pri,
};

fn inside(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    part.is_empty() || (p >= w && p + part.len() <= w + whole.len())
}

fn check_common(f: &Fields<'_>, header: &[u8]) {
    for field in [f.app_name, f.procid] {
        assert!(
            field == b"-" || inside(field, header),
            "field not from the header"
        );
    }
    if let Some(host) = f.hostname {
        assert!(inside(host, header), "hostname not from the header");
    }
    let end = header.as_ptr() as usize + header.len();
    assert!(
        f.msg.is_empty() || (inside(f.msg, header) && f.msg.as_ptr() as usize + f.msg.len() == end),
        "MSG is not the header's tail"
    );
}

fuzz_target!(|raw: &[u8]| {
    let mut scratch = Vec::new();
    let clean = sanitise(raw, &mut scratch);
    let header = match parse_pri(clean) {
        Pri::Valid { value, body } => {
            assert!(value <= 191, "PRI above 191");
            &clean[body..]
        }
        Pri::Invalid => clean,
    };
    if let Some(f) = parse_rfc5424(header) {
        assert!(
            header.starts_with(b"1 "),
            "RFC 5424 claimed a header without `1 `"
        );
        check_common(&f, header);
    }
    let f = parse_rfc3164(header);
    check_common(&f, header);
    if let Some(host) = f.hostname {
        assert!(host.len() <= 511, "hostname longer than 511 bytes");
        assert!(
            host.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "hostname byte outside [A-Za-z0-9._-]"
        );
    }
    assert!(
        f.app_name == b"-"
            || f.app_name
                .iter()
                .all(|&b| (0x20..0x7f).contains(&b) && !b":[/".contains(&b)),
        "app-name byte that should have ended it"
    );
});
