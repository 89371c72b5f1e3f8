//! RFC 6587 stream framing, incremental and free of I/O.
//!
//! The connection reads straight into the decoder's buffer ([`FrameDecoder::read_space`] then
//! [`FrameDecoder::commit_read`]), asks for the frames now complete ([`FrameDecoder::decode`]
//! gives [`FrameSpan`]s, [`FrameDecoder::frame`] turns them into borrowed [`Frame`]s), delivers
//! them, and only then calls [`FrameDecoder::compact`], which drops the consumed bytes.
//!
//! Rules, decided per frame:
//! - 1–9 digits, the first not `0`, then a space: octet-counted `LEN SP MSG` (RFC 6587 §3.4.1,
//!   `MSG-LEN = NONZERO-DIGIT *DIGIT`). A leading `0` or a 10th digit is not a valid MSG-LEN,
//!   so such a frame is LF-framed text (a line may well start with `0` or a long number).
//! - anything else ends at LF (§3.4.2); the LF is not part of the message; a CR before it is
//!   kept (the sanitiser escapes it, as the reference does). Empty frames are ignored.
//! - a message longer than [`MAX_MESSAGE`] yields its first `MAX_MESSAGE` bytes with
//!   `truncated = true`; the rest of it (up to the LF, or the rest of LEN) is skipped.
//! - at end of stream ([`FrameDecoder::finish`]) a partial LF frame is a message, a partial
//!   octet-counted one is discarded (the caller counts it).
//!
//! Invariant: when the caller never reads more than [`FrameDecoder::room`], the buffer holds at
//! most [`BUFFER_LIMIT`] bytes: a pending frame never exceeds `MAX_MESSAGE + 1` bytes plus a
//! 10-byte header before `decode` emits (or truncates) it.

use super::{Frame, MAX_MESSAGE};

/// Most bytes a decoder buffers: one maximal frame with its header, plus a little read slack.
pub const BUFFER_LIMIT: usize = MAX_MESSAGE + 16 + 4096;

/// Longest valid MSG-LEN, in digits.
const MAX_LEN_DIGITS: usize = 9;

/// A complete frame inside the decoder buffer, valid until the next [`FrameDecoder::compact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpan {
    start: usize,
    end: usize,
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a frame start, or inside an LF frame (or an undecided run of digits) starting at `pos`.
    Frame,
    /// Inside an octet-counted body that starts at `pos` and is `len` bytes long.
    Counted { len: usize },
    /// Skipping the rest of a truncated LF frame, up to and including its LF.
    SkipToLf,
    /// Skipping the rest of a truncated octet-counted frame.
    SkipBytes(usize),
}

/// What the start of a frame says about its framing.
enum Header {
    Counted {
        len: usize,
        header_len: usize,
    },
    Line,
    /// Only digits so far: wait for more bytes.
    Undecided,
}

/// Incremental RFC 6587 decoder with its own read buffer (see the module doc for the protocol).
#[derive(Debug)]
pub struct FrameDecoder {
    /// Zero-initialised storage; `buf[..end]` is data, `buf[pos..end]` not yet consumed.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// Where the LF search of the current LF frame resumes (avoids rescanning on each read).
    scan: usize,
    state: State,
    /// Frames ended so far (emitted, empty, or skipped after truncation).
    completed: u64,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// An empty decoder; it allocates only when first read into.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            end: 0,
            scan: 0,
            state: State::Frame,
            completed: 0,
        }
    }

    /// How many frames have ended so far; a change tells the caller a new frame began.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Whether a frame has started and not ended (bytes pending, or a header or truncated
    /// frame whose rest has not arrived).
    pub fn mid_frame(&self) -> bool {
        self.pending() > 0 || self.state != State::Frame
    }

    /// Frees the buffer when nothing is pending (an idle connection holds no buffer).
    pub fn release(&mut self) {
        if self.pending() == 0 {
            self.buf = Vec::new();
            (self.pos, self.end, self.scan) = (0, 0, 0);
        }
    }

    /// Bytes received but not yet consumed by a frame.
    pub fn pending(&self) -> usize {
        self.end - self.pos
    }

    /// Bytes allocated for the buffer (what the read budget accounts for).
    pub fn allocated(&self) -> usize {
        self.buf.len()
    }

    /// How much the caller may read now without exceeding [`BUFFER_LIMIT`].
    pub fn room(&self) -> usize {
        BUFFER_LIMIT.saturating_sub(self.pending())
    }

    /// Size the allocation will have after a [`read_space`](Self::read_space) of `want` bytes.
    pub fn allocation_for(&self, want: usize) -> usize {
        self.buf.len().max(self.data_end_before_read(want) + want)
    }

    /// Where the data will end once `read_space(want)` has made room (it may move the data).
    fn data_end_before_read(&self, want: usize) -> usize {
        if self.end + want > BUFFER_LIMIT {
            self.pending()
        } else {
            self.end
        }
    }

    /// A zeroed region of `want` bytes after the data, to read into. Moves the unconsumed
    /// bytes to the front first when the buffer would otherwise pass [`BUFFER_LIMIT`].
    pub fn read_space(&mut self, want: usize) -> &mut [u8] {
        if self.data_end_before_read(want) != self.end {
            self.move_to_front();
        }
        let need = self.end + want;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        &mut self.buf[self.end..need]
    }

    /// Marks `n` bytes of the last [`read_space`](Self::read_space) as data.
    pub fn commit_read(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Appends bytes (tests and callers with their own buffer).
    pub fn feed(&mut self, data: &[u8]) {
        self.read_space(data.len()).copy_from_slice(data);
        self.commit_read(data.len());
    }

    /// The bytes of a span returned by [`decode`](Self::decode) or [`finish`](Self::finish).
    pub fn frame(&self, span: &FrameSpan) -> Frame<'_> {
        Frame {
            bytes: &self.buf[span.start..span.end],
            truncated: span.truncated,
        }
    }

    /// Appends to `out` every frame complete in the buffer (empty frames are skipped).
    pub fn decode(&mut self, out: &mut Vec<FrameSpan>) {
        loop {
            let avail = self.end - self.pos;
            match self.state {
                State::SkipBytes(n) => {
                    let k = n.min(avail);
                    self.pos += k;
                    if k < n {
                        self.state = State::SkipBytes(n - k);
                        return;
                    }
                    self.start_frame();
                }
                State::SkipToLf => match find_lf(&self.buf[self.pos..self.end]) {
                    Some(i) => {
                        self.pos += i + 1;
                        self.start_frame();
                    }
                    None => {
                        self.pos = self.end;
                        return;
                    }
                },
                State::Counted { len } => {
                    let take = len.min(MAX_MESSAGE);
                    if avail < take {
                        return;
                    }
                    let truncated = len > MAX_MESSAGE;
                    out.push(FrameSpan {
                        start: self.pos,
                        end: self.pos + take,
                        truncated,
                    });
                    self.pos += take;
                    if truncated {
                        self.state = State::SkipBytes(len - take);
                    } else {
                        self.start_frame();
                    }
                }
                State::Frame => {
                    if avail == 0 {
                        return;
                    }
                    match classify(&self.buf[self.pos..self.end]) {
                        Header::Undecided => return,
                        Header::Counted { len, header_len } => {
                            self.pos += header_len;
                            self.state = State::Counted { len };
                        }
                        Header::Line => {
                            if !self.decode_line(out) {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// One step of an LF frame; false when it needs more bytes.
    fn decode_line(&mut self, out: &mut Vec<FrameSpan>) -> bool {
        let from = self.scan.max(self.pos);
        match find_lf(&self.buf[from..self.end]) {
            Some(i) => {
                let lf = from + i;
                let len = lf - self.pos;
                if len > 0 {
                    let truncated = len > MAX_MESSAGE;
                    let end = self.pos + len.min(MAX_MESSAGE);
                    out.push(FrameSpan {
                        start: self.pos,
                        end,
                        truncated,
                    });
                }
                self.pos = lf + 1;
                self.start_frame();
                true
            }
            None if self.end - self.pos > MAX_MESSAGE => {
                // Surely longer than the limit: emit the head now, skip the rest to its LF.
                let end = self.pos + MAX_MESSAGE;
                out.push(FrameSpan {
                    start: self.pos,
                    end,
                    truncated: true,
                });
                self.pos = end;
                self.scan = end;
                self.state = State::SkipToLf;
                true
            }
            None => {
                self.scan = self.end;
                false
            }
        }
    }

    fn start_frame(&mut self) {
        self.completed += 1;
        self.state = State::Frame;
        self.scan = self.pos;
    }

    /// End of stream: decodes what is complete, then yields a partial LF frame as a message.
    /// Returns true when a partial octet-counted frame was discarded.
    pub fn finish(&mut self, out: &mut Vec<FrameSpan>) -> bool {
        self.decode(out);
        let rest = self.end - self.pos;
        let discarded = match self.state {
            State::Frame if rest > 0 => {
                // Undecided digits or an unterminated line: both are LF-framed text.
                out.push(FrameSpan {
                    start: self.pos,
                    end: self.end,
                    truncated: false,
                });
                false
            }
            State::Counted { .. } => true,
            _ => false,
        };
        self.pos = self.end;
        self.start_frame();
        discarded
    }

    /// Forgets the consumed bytes, moving the unfinished frame to the front; spans handed out
    /// before are invalid afterwards. Each byte moves at most twice (once as part of an
    /// unfinished frame, once more after its octet-count header was consumed): the front
    /// stays put while its frame grows, so a client sending a huge frame one byte at a time
    /// costs O(1) per byte.
    pub fn compact(&mut self) {
        if self.pos > 0 {
            self.move_to_front();
        }
    }

    fn move_to_front(&mut self) {
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.scan = self.scan.saturating_sub(self.pos);
        self.pos = 0;
    }

    /// Gives back memory beyond `keep` bytes (never below the data held). Call after `compact`.
    pub fn shrink_to(&mut self, keep: usize) {
        let keep = keep.max(self.end);
        if self.buf.len() > keep {
            self.buf.truncate(keep);
            self.buf.shrink_to_fit();
        }
    }
}

fn classify(bytes: &[u8]) -> Header {
    let digits = bytes
        .iter()
        .take(MAX_LEN_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || bytes[0] == b'0' || digits > MAX_LEN_DIGITS {
        return Header::Line;
    }
    match bytes.get(digits) {
        None => Header::Undecided,
        Some(b' ') => {
            let len = bytes[..digits]
                .iter()
                .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
            Header::Counted {
                len,
                header_len: digits + 1,
            }
        }
        Some(_) => Header::Line,
    }
}

/// Position of the first LF, eight bytes at a time (a word holds an LF byte exactly when
/// `(x - 0x01..) & !x & 0x80..` is non-zero for `x` = word XOR `0x0a..`).
fn find_lf(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const LFS: u64 = ONES * b'\n' as u64;
    let position = |part: &[u8]| part.iter().position(|&b| b == b'\n');
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word) ^ LFS;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            return position(chunk).map(|i| offset + i);
        }
        offset += 8;
    }
    position(chunks.remainder()).map(|i| offset + i)
}

#[cfg(test)]
mod tests;
