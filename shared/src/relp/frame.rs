//! RELP frames: `TXNR SP COMMAND SP DATALEN [SP DATA] LF`, encoded into a caller's buffer and
//! parsed incrementally from what the server sent.
//!
//! [`FrameReader`] buffers at most one frame: header fields have fixed maximum lengths and a
//! frame announcing more than [`MAX_PEER_DATA`] bytes of data is refused as soon as its length
//! is read, so a hostile or broken server cannot make the uplink grow a buffer. An incomplete
//! frame is `Ok(None)` (an expected condition), a malformed one an error that ends the session.

use std::fmt;

/// Longest DATA accepted from the server. Its frames are answers (`200 OK`) and the `open`
/// answer's offers, a few hundred bytes; 64 KiB leaves room for a verbose server.
pub const MAX_PEER_DATA: usize = 64 * 1024;
const MAX_TXNR_DIGITS: usize = 9;
const MAX_COMMAND_LEN: usize = 32;
const MAX_DATALEN_DIGITS: usize = 9;

/// One frame received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub txnr: u32,
    pub command: String,
    pub data: Vec<u8>,
}

/// What was wrong with the server's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed frame: {field} {problem} (frame starts \"{start}\")")]
    Malformed {
        field: &'static str,
        problem: &'static str,
        start: String,
    },
    #[error("frame announces {len} bytes of data, more than the {MAX_PEER_DATA} accepted")]
    TooLarge { len: usize },
    #[error("frame of {len} bytes is not followed by its LF trailer (found byte {found:#04x})")]
    MissingTrailer { len: usize, found: u8 },
}

/// Append one frame to `out`. `command` is one of the names in [`crate::relp`] and `txnr` at
/// most 999,999,999 (callers take it from [`crate::relp::Txnr`]).
pub fn encode(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{txnr} {command} {}", data.len());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// Frames parsed from the server's byte stream, one bounded buffer.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Start of the first frame not yet returned: consumed bytes are dropped at the next
    /// `feed`, not after every frame (a read holds hundreds of small answers).
    at: usize,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes received from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.at);
        self.at = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` until one is complete. After an error the stream is
    /// out of step: the session must end.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match parse(&self.buf[self.at..])? {
            None => Ok(None),
            Some((frame, used)) => {
                self.at += used;
                Ok(Some(frame))
            }
        }
    }

    /// Bytes held for an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.at
    }
}

/// Parse one frame at the start of `buf`: the frame and the bytes it used, or `None` if `buf`
/// holds only a valid beginning.
fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let mut at = 0;
    let Some(txnr) = field(buf, &mut at, "TXNR", MAX_TXNR_DIGITS, u8::is_ascii_digit)? else {
        return Ok(None);
    };
    let Some(command) = field(
        buf,
        &mut at,
        "COMMAND",
        MAX_COMMAND_LEN,
        u8::is_ascii_alphabetic,
    )?
    else {
        return Ok(None);
    };
    let Some((len, has_data)) = datalen(buf, &mut at)? else {
        return Ok(None);
    };
    if len > MAX_PEER_DATA {
        return Err(FrameError::TooLarge { len });
    }
    if !has_data && len > 0 {
        return Err(malformed(
            buf,
            "DATALEN",
            "is not followed by a space and its data",
        ));
    }
    let Some(&trailer) = buf.get(at + len) else {
        return Ok(None);
    };
    if trailer != b'\n' {
        return Err(FrameError::MissingTrailer {
            len,
            found: trailer,
        });
    }
    let frame = Frame {
        txnr: number(txnr).ok_or_else(|| malformed(buf, "TXNR", "is not a number"))?,
        command: String::from_utf8_lossy(command).into_owned(),
        data: buf[at..at + len].to_vec(),
    };
    Ok(Some((frame, at + len + 1)))
}

/// A header field ended by SP: its bytes, `None` if `buf` ends inside it.
fn field<'a>(
    buf: &'a [u8],
    at: &mut usize,
    name: &'static str,
    max: usize,
    allowed: fn(&u8) -> bool,
) -> Result<Option<&'a [u8]>, FrameError> {
    let start = *at;
    for (i, b) in buf[start..].iter().enumerate() {
        if *b == b' ' {
            if i == 0 {
                return Err(malformed(buf, name, "is empty"));
            }
            *at = start + i + 1;
            return Ok(Some(&buf[start..start + i]));
        }
        if !allowed(b) {
            return Err(malformed(buf, name, "has a byte it may not hold"));
        }
        if i == max {
            return Err(malformed(buf, name, "is too long"));
        }
    }
    Ok(None)
}

/// DATALEN, ended by SP (data follows) or LF (no data; left for the trailer check).
fn datalen(buf: &[u8], at: &mut usize) -> Result<Option<(usize, bool)>, FrameError> {
    let start = *at;
    for (i, b) in buf[start..].iter().enumerate() {
        if *b == b' ' || *b == b'\n' {
            if i == 0 {
                return Err(malformed(buf, "DATALEN", "is empty"));
            }
            let len = number(&buf[start..start + i])
                .ok_or_else(|| malformed(buf, "DATALEN", "is not a number"))?;
            let has_data = *b == b' ';
            *at = start + i + usize::from(has_data);
            return Ok(Some((len as usize, has_data)));
        }
        if !b.is_ascii_digit() {
            return Err(malformed(buf, "DATALEN", "has a byte it may not hold"));
        }
        if i == MAX_DATALEN_DIGITS {
            return Err(malformed(buf, "DATALEN", "is too long"));
        }
    }
    Ok(None)
}

fn number(digits: &[u8]) -> Option<u32> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn malformed(buf: &[u8], field: &'static str, problem: &'static str) -> FrameError {
    FrameError::Malformed {
        field,
        problem,
        start: Printable(&buf[..buf.len().min(48)]).to_string(),
    }
}

/// The first bytes of a bad frame, for the log line: printable ASCII as is, the rest escaped.
struct Printable<'a>(&'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.escape_ascii().fmt(f)
    }
}

#[cfg(test)]
mod tests;
