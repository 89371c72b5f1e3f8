//! The RELP frame reader (`relp::FrameReader`) on any bytes from a server, cut into reads of a
//! size the input's first byte chooses; every `rsp` frame's data also goes through the answer
//! and offer parsers.
//!
//! Checks: no panic; the reader never holds more than one bounded frame (header fields of
//! fixed maximum length plus `MAX_PEER_DATA` and the trailer); the frames and the first error
//! are the same however the stream is cut (compared with one read of everything); and a frame
//! we encode ourselves reads back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekoia_shared::relp::{encode, Frame, FrameReader, Offers, Response, MAX_PEER_DATA};

/// TXNR (9) + SP + COMMAND (32) + SP + DATALEN (9) + SP + DATA + LF, and one read's slack.
const MOST_HELD: usize = 9 + 1 + 32 + 1 + 9 + 1 + MAX_PEER_DATA + 1;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut).max(1);
    let whole = read_all(stream, stream.len().max(1));
    let pieces = read_all(stream, chunk);
    assert_eq!(whole, pieces, "frames depend on how the stream is cut");
    for frame in whole.0.iter().filter(|f| f.command == "rsp") {
        if let Ok(rsp) = Response::parse(&frame.data) {
            let _ = Offers::from_open_answer(&rsp);
        }
    }
    // Our own frames read back as written.
    let command = if cut % 2 == 0 { "syslog" } else { "rsp" };
    let payload = &stream[..stream.len().min(MAX_PEER_DATA)];
    let txnr = u32::from(cut) + 1;
    let mut out = Vec::new();
    encode(&mut out, txnr, command, payload);
    let (frames, error) = read_all(&out, chunk);
    assert!(error.is_none(), "our own frame was refused: {error:?}");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].txnr, txnr);
    assert_eq!(frames[0].command, command);
    assert_eq!(frames[0].data, payload);
});

/// Every frame up to the first error (what was wrong), feeding `chunk` bytes at a time.
fn read_all(stream: &[u8], chunk: usize) -> (Vec<Frame>, Option<String>) {
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk) {
        reader.feed(piece);
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                // The error without the excerpt of the frame's start, which shows what was
                // buffered when the error was found.
                Err(e) => {
                    let text = e.to_string();
                    let kind = text.split(" (frame starts").next().unwrap_or_default();
                    return (frames, Some(kind.to_string()));
                }
            }
        }
        assert!(
            reader.buffered() <= MOST_HELD + chunk,
            "holds {} bytes",
            reader.buffered()
        );
    }
    (frames, None)
}
