//! Properties of the input path on the stable toolchain (proptest), beside the fuzz targets
//! in `fuzz/` (nightly): whatever the bytes, rendering never panics and never passes the
//! output limits; framing neither loses nor invents a byte of valid octet-counted input,
//! however the stream is cut; sanitising leaves no control byte.
// Under `--cfg loom` the library builds only its ring (lib.rs).
#![cfg(not(loom))]

use proptest::prelude::*;
use sekoia_shared::input::{FrameDecoder, BUFFER_LIMIT};
use sekoia_shared::syslog::internals::sanitise;
use sekoia_shared::syslog::{render_event, EventContext, MAX_MESSAGE};

const CTX: EventContext<'static> = EventContext {
    intake_key: "PropIntakeKey0123456789",
    sender_host: "192.0.2.7",
    timestamp: "2024-05-01T10:00:00.123456+00:00",
};

/// Checks one rendered `LEN SP LINE` against the output rules (SPEC §5, `syslog::render`).
fn assert_output_rules(out: &[u8], line: std::ops::Range<usize>) -> Result<(), TestCaseError> {
    let prefix = format!("{} ", line.len());
    prop_assert_eq!(&out[..line.start], prefix.as_bytes(), "LEN counts the line");
    prop_assert_eq!(line.end, out.len());
    let body = &out[line];
    prop_assert!(body.len() <= MAX_MESSAGE, "line of {} bytes", body.len());
    prop_assert!(body.starts_with(b"<"));
    if body.len() < MAX_MESSAGE {
        prop_assert_eq!(body.last(), Some(&b'\n'));
        let inner = &body[..body.len() - 1];
        prop_assert!(inner.iter().all(|&b| b >= 0x20), "control byte in the line");
    }
    Ok(())
}

/// Raw messages that look like syslog often enough to reach every parser branch.
fn raw_message() -> impl Strategy<Value = Vec<u8>> {
    let head = prop_oneof![
        Just(b"".to_vec()),
        Just(b"<13>".to_vec()),
        Just(b"<191>1 ".to_vec()),
        Just(b"<14>1 2024-05-01T10:00:00.123Z host app 12 ID [sd a=\"1\"] ".to_vec()),
        Just(b"<34>Oct 11 22:14:15 mymachine su[12]: ".to_vec()),
        Just(b"<0013>2024-05-01T10:00:00+02:00 h t: ".to_vec()),
        Just(b"<999>".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    (head, proptest::collection::vec(any::<u8>(), 0..600)).prop_map(|(mut h, b)| {
        h.extend(b);
        h
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn render_of_any_message_follows_the_output_rules(raw in raw_message()) {
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        let line = render_event(&raw, &CTX, &mut scratch, &mut out);
        assert_output_rules(&out, line)?;
    }

    #[test]
    fn sanitised_text_holds_no_control_byte_and_stays_within_bounds(
        raw in proptest::collection::vec(any::<u8>(), 0..2000)
    ) {
        let mut scratch = Vec::new();
        let clean = sanitise(&raw, &mut scratch);
        prop_assert!(clean.iter().all(|&b| b >= 0x20));
        prop_assert!(clean.len() <= raw.len().saturating_mul(4).min(MAX_MESSAGE));
    }

    #[test]
    fn octet_counted_frames_come_out_exactly_however_the_stream_is_cut(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..400), 1..20),
        cuts in proptest::collection::vec(1usize..700, 1..8),
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend_from_slice(format!("{} ", m.len()).as_bytes());
            stream.extend_from_slice(m);
        }
        let (frames, discarded) = decode(&stream, &cuts);
        prop_assert!(!discarded, "a complete frame was discarded");
        prop_assert_eq!(frames, msgs);
    }

    #[test]
    fn lf_frames_come_out_exactly_however_the_stream_is_cut(
        lines in proptest::collection::vec("[^0-9\n][^\n]{0,200}", 1..20),
        cuts in proptest::collection::vec(1usize..300, 1..8),
    ) {
        let mut stream = Vec::new();
        for l in &lines {
            stream.extend_from_slice(l.as_bytes());
            stream.push(b'\n');
        }
        let (frames, _) = decode(&stream, &cuts);
        let want: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
        prop_assert_eq!(frames, want);
    }
}

proptest! {
    // Each case renders about 256 kB twice: few cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn messages_around_the_size_limit_are_cut_to_it(
        head in raw_message(),
        len in (MAX_MESSAGE - 300)..(MAX_MESSAGE + 300),
        fill in prop_oneof![Just(b'x'), Just(b'\t'), Just(b' ')],
    ) {
        let mut raw = head;
        raw.resize(len.max(raw.len()), fill);
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        let line = render_event(&raw, &CTX, &mut scratch, &mut out);
        assert_output_rules(&out, line)?;
    }
}

/// Feeds `stream` to a decoder in chunks of the sizes in `cuts` (cycled), as a connection
/// would; returns the frames' bytes and whether `finish` discarded a partial frame.
fn decode(stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, bool) {
    let mut dec = FrameDecoder::new();
    let (mut frames, mut spans) = (Vec::new(), Vec::new());
    let (mut at, mut i) = (0, 0);
    while at < stream.len() {
        let n = cuts[i % cuts.len()].min(dec.room()).min(stream.len() - at);
        i += 1;
        dec.read_space(n).copy_from_slice(&stream[at..at + n]);
        dec.commit_read(n);
        at += n;
        spans.clear();
        dec.decode(&mut spans);
        frames.extend(spans.iter().map(|s| dec.frame(s).bytes.to_vec()));
        dec.compact();
        assert!(dec.allocated() <= BUFFER_LIMIT);
    }
    spans.clear();
    let discarded = dec.finish(&mut spans);
    frames.extend(spans.iter().map(|s| dec.frame(s).bytes.to_vec()));
    (frames, discarded)
}
