//! The PROXY protocol header parser (`input::internals::parse_proxy_header`) on any bytes,
//! fed one prefix longer at a time, as a reader that gets one byte per read would feed it.
//!
//! Checks: no panic; a request for more bytes is never empty and never passes the
//! specification's bounds (107 bytes for a v1 line, 16 + 4,096 for v2); and no request passes
//! the end of a header: when a prefix of the input is a complete header, every shorter prefix
//! asked for at most the bytes up to its end (the reader reads exactly the header, nothing
//! of the syslog or TLS bytes after it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekoia_shared::input::internals::{parse_proxy_header, Progress, V1_MAX, V2_MAX_BLOCK};

fuzz_target!(|data: &[u8]| {
    let mut asked: Vec<(usize, usize)> = Vec::new();
    for k in 0..=data.len() {
        match parse_proxy_header(&data[..k]) {
            Progress::Need(n) => {
                assert!(n > 0, "an empty request at {k}");
                let bound = if data.first() == Some(&b'P') {
                    V1_MAX
                } else {
                    16 + V2_MAX_BLOCK
                };
                assert!(k + n <= bound, "at {k} it asks {n}, past {bound}");
                asked.push((k, n));
            }
            Progress::Done(_) => {
                for (at, n) in &asked {
                    assert!(
                        at + n <= k,
                        "at {at} it asked {n}, past the header's end {k}"
                    );
                }
                return;
            }
            Progress::Invalid(_) => return,
        }
    }
});
