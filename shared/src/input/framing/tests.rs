//! Framing table and chunking properties: any split of the input gives the same frames.

use super::*;

/// (bytes, truncated) of every frame, then whether `finish` discarded a partial frame.
type Decoded = (Vec<(Vec<u8>, bool)>, bool);

fn collect(dec: &mut FrameDecoder, spans: &[FrameSpan], out: &mut Vec<(Vec<u8>, bool)>) {
    for span in spans {
        let frame = dec.frame(span);
        out.push((frame.bytes.to_vec(), frame.truncated));
    }
}

/// Feeds `input` in chunks whose sizes come from `next_size`, like a connection would.
fn decode_in_chunks(input: &[u8], mut next_size: impl FnMut() -> usize) -> Decoded {
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut spans = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let n = next_size().clamp(1, dec.room()).min(input.len() - at);
        dec.read_space(n).copy_from_slice(&input[at..at + n]);
        dec.commit_read(n);
        at += n;
        spans.clear();
        dec.decode(&mut spans);
        collect(&mut dec, &spans, &mut frames);
        dec.compact();
        assert!(
            dec.allocated() <= BUFFER_LIMIT,
            "buffer grew past its bound"
        );
    }
    spans.clear();
    let discarded = dec.finish(&mut spans);
    collect(&mut dec, &spans, &mut frames);
    (frames, discarded)
}

fn decode_all(input: &[u8]) -> Decoded {
    decode_in_chunks(input, || usize::MAX)
}

fn texts(decoded: &Decoded) -> Vec<String> {
    decoded
        .0
        .iter()
        .map(|(b, _)| String::from_utf8_lossy(b).into_owned())
        .collect()
}

#[test]
fn framing_table() {
    let cases: &[(&str, &[&str], bool)] = &[
        ("a\nb\n", &["a", "b"], false),
        ("\n\n\n", &[], false),
        ("5 hello3 abc", &["hello", "abc"], false),
        ("5 hello\n6 world!\n", &["hello", "world!"], false),
        ("3 a\nb", &["a\nb"], false),
        ("hello", &["hello"], false),
        ("a\r\n", &["a\r"], false),
        (
            "2024-05-01 10:00:00 host app: hi\n",
            &["2024-05-01 10:00:00 host app: hi"],
            false,
        ),
        ("0 leading zero\n", &["0 leading zero"], false),
        ("1234567890 ten digits\n", &["1234567890 ten digits"], false),
        ("123\n", &["123"], false),
        ("123", &["123"], false),
        ("12abc\n", &["12abc"], false),
        ("5 hel", &[], true),
        ("12 ", &[], true),
        ("4 abcdline\n8 partial", &["abcd", "line"], true),
        (" 5 x\n", &[" 5 x"], false),
        ("1  \n", &[" "], false),
    ];
    for (input, want, discarded) in cases {
        let got = decode_all(input.as_bytes());
        assert_eq!(texts(&got), *want, "input {input:?}");
        assert_eq!(got.1, *discarded, "discarded for {input:?}");
        assert!(
            got.0.iter().all(|(_, t)| !t),
            "nothing truncated in {input:?}"
        );
    }
}

#[test]
fn oversize_line_is_truncated_and_rest_skipped_not_split() {
    let mut input = vec![b'x'; MAX_MESSAGE + 10];
    input.extend_from_slice(b"\nnext\n");
    let (frames, _) = decode_all(&input);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0], (vec![b'x'; MAX_MESSAGE], true));
    assert_eq!(frames[1], (b"next".to_vec(), false));
}

#[test]
fn line_of_exactly_max_is_not_truncated() {
    let mut input = vec![b'y'; MAX_MESSAGE];
    input.push(b'\n');
    let (frames, _) = decode_all(&input);
    assert_eq!(frames, vec![(vec![b'y'; MAX_MESSAGE], false)]);
}

#[test]
fn oversize_unterminated_line_at_close_gives_only_the_truncated_head() {
    let input = vec![b'z'; MAX_MESSAGE + 5];
    let (frames, discarded) = decode_all(&input);
    assert_eq!(frames, vec![(vec![b'z'; MAX_MESSAGE], true)]);
    assert!(!discarded);
}

#[test]
fn oversize_octet_count_is_truncated_and_remainder_skipped() {
    let len = MAX_MESSAGE + 5;
    let mut input = format!("{len} ").into_bytes();
    input.extend(std::iter::repeat_n(b'q', len));
    input.extend_from_slice(b"3 abc");
    let (frames, _) = decode_all(&input);
    assert_eq!(
        frames,
        vec![(vec![b'q'; MAX_MESSAGE], true), (b"abc".to_vec(), false)]
    );
}

#[test]
fn nine_digit_octet_count_waits_for_its_bytes_and_is_discarded_at_close() {
    let (frames, discarded) = decode_all(b"999999999 abc");
    assert!(frames.is_empty());
    assert!(discarded);
}

#[test]
fn find_lf_matches_naive_search_at_every_position() {
    for len in 0..40 {
        for lf in 0..=len {
            let mut bytes = vec![b'a'; len];
            if lf < len {
                bytes[lf] = b'\n';
            }
            let want = bytes.iter().position(|&b| b == b'\n');
            assert_eq!(find_lf(&bytes), want, "len {len} lf {lf}");
        }
    }
    assert_eq!(find_lf(&[0x8a, 0x0b, 0x09, 0xff, 0x00, 0x0a]), Some(5));
}

/// An input with every kind of frame, including oversize ones and digits-first lines.
fn mixed_input() -> Vec<u8> {
    let mut input = Vec::new();
    input.extend_from_slice(b"<13>plain line\n\n5 hello2024-05-01 digits first\r\n");
    input.extend_from_slice(b"0 zero\n12 with\nnewline");
    input.extend(std::iter::repeat_n(b'L', MAX_MESSAGE + 3));
    input.extend_from_slice(b"\n");
    let len = MAX_MESSAGE + 7;
    input.extend_from_slice(format!("{len} ").as_bytes());
    input.extend(std::iter::repeat_n(b'C', len));
    input.extend(std::iter::repeat_n(b'E', MAX_MESSAGE));
    input.extend_from_slice(b"\n1234567890 long number\n42short");
    input.extend_from_slice(b"\nafter\nunterminated tail");
    input
}

#[test]
fn every_split_point_gives_the_same_frames() {
    let input = b"5 hello3 abc\nline one\n\n0 zero\n6 a\nb\ncdtail".to_vec();
    let whole = decode_all(&input);
    assert_eq!(
        texts(&whole),
        ["hello", "abc", "line one", "0 zero", "a\nb\ncd", "tail"]
    );
    for split in 1..input.len() {
        let mut sizes = [split, usize::MAX].into_iter();
        let got = decode_in_chunks(&input, || sizes.next().unwrap_or(usize::MAX));
        assert_eq!(got, whole, "split at {split}");
    }
}

#[test]
fn byte_by_byte_and_random_chunks_give_the_same_frames() {
    let input = mixed_input();
    let whole = decode_all(&input);
    let truncated: Vec<bool> = whole.0.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        truncated,
        [false, false, false, false, false, true, true, false, false, false, false, false]
    );
    assert!(!whole.1, "the tail is an LF frame, delivered at close");
    assert_eq!(decode_in_chunks(&input, || 1), whole, "byte by byte");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..20 {
        let max = [3, 17, 100, 4096, 65536, 300_000][round % 6];
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % max as u64) as usize + 1
        };
        assert_eq!(decode_in_chunks(&input, &mut next), whole, "round {round}");
    }
}

#[test]
fn slow_huge_frame_keeps_the_buffer_bounded() {
    let mut dec = FrameDecoder::new();
    let mut spans = Vec::new();
    for _ in 0..(MAX_MESSAGE + 50) {
        dec.feed(b"w");
        dec.decode(&mut spans);
        dec.compact();
        assert!(dec.pending() <= MAX_MESSAGE + 1);
    }
    assert_eq!(spans.len(), 1);
    assert!(spans[0].truncated);
    assert!(dec.allocated() <= BUFFER_LIMIT);
}

#[test]
fn shrink_gives_memory_back_after_a_large_message() {
    let mut input = vec![b'm'; 200_000];
    input.push(b'\n');
    let mut dec = FrameDecoder::new();
    dec.feed(&input);
    let mut spans = Vec::new();
    dec.decode(&mut spans);
    dec.compact();
    dec.shrink_to(4096);
    assert_eq!(dec.pending(), 0);
    assert!(dec.allocated() <= 4096);
}
