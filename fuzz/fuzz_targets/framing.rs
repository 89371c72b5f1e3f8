//! RFC 6587 framing (`input::FrameDecoder`) over any byte stream cut at any points.
//!
//! Checks: no panic; the buffer stays within `BUFFER_LIMIT`; no frame is longer than
//! `MAX_MESSAGE`, and a truncated one is exactly that long; every frame is a piece of the
//! input, in order, never overlapping the previous one (nothing invented or reordered); and
//! the frames do not depend on how the stream was cut (the same input fed whole gives the
//! same frames and the same "partial frame discarded" verdict).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekoia_fuzz::Choices;
use sekoia_shared::input::{FrameDecoder, FrameSpan, BUFFER_LIMIT, MAX_MESSAGE};

type Frames = (Vec<(Vec<u8>, bool)>, bool);

fn decode(stream: &[u8], mut cut: impl FnMut() -> usize) -> Frames {
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut spans: Vec<FrameSpan> = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let n = cut().clamp(1, dec.room().max(1)).min(stream.len() - at);
        dec.read_space(n).copy_from_slice(&stream[at..at + n]);
        dec.commit_read(n);
        at += n;
        spans.clear();
        dec.decode(&mut spans);
        for s in &spans {
            let f = dec.frame(s);
            frames.push((f.bytes.to_vec(), f.truncated));
        }
        dec.compact();
        assert!(
            dec.pending() <= BUFFER_LIMIT,
            "pending bytes beyond the limit"
        );
        assert!(
            dec.allocated() <= BUFFER_LIMIT,
            "buffer grew beyond the limit"
        );
    }
    spans.clear();
    let discarded = dec.finish(&mut spans);
    for s in &spans {
        let f = dec.frame(s);
        frames.push((f.bytes.to_vec(), f.truncated));
    }
    (frames, discarded)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    let cuts = c.take(8).to_vec();
    let stream = c.rest();
    let mut i = 0;
    let chunked = decode(stream, || {
        i += 1;
        usize::from(cuts.get(i % cuts.len().max(1)).copied().unwrap_or(1)) + 1
    });
    let whole = decode(stream, || usize::MAX);
    assert_eq!(chunked, whole, "frames depend on how the stream was cut");

    let mut from = 0;
    for (bytes, truncated) in &chunked.0 {
        assert!(!bytes.is_empty(), "empty frame delivered");
        assert!(bytes.len() <= MAX_MESSAGE, "frame longer than MAX_MESSAGE");
        assert!(
            !truncated || bytes.len() == MAX_MESSAGE,
            "truncated frame of the wrong size"
        );
        let at = find(&stream[from..], bytes).expect("a frame that is not in the input");
        from += at + bytes.len();
    }
});
