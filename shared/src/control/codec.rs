//! Bounded JSON lines: the one framing of the control channel, both directions.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One value as a JSON line (no newline inside: serde_json escapes them).
pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// Parses one line (with or without its newline).
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> io::Result<T> {
    serde_json::from_slice(line.strip_suffix(b"\n").unwrap_or(line))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one line of at most `max` bytes into `buf` (cleared first). `Ok(false)`: the peer
/// closed before sending anything. A longer line is an error and nothing of it is kept.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<bool> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return if buf.is_empty() {
                Ok(false)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + take > max {
            buf.clear();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line longer than {max} bytes"),
            ));
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_read_one_at_a_time_and_bounded() {
        let data: &[u8] = b"{\"a\":1}\nsecond\n";
        let mut reader = tokio::io::BufReader::new(data);
        let mut buf = Vec::new();
        assert!(read_line(&mut reader, &mut buf, 64).await.unwrap());
        assert_eq!(buf, b"{\"a\":1}\n");
        let v: serde_json::Value = decode(&buf).unwrap();
        assert_eq!(v["a"], 1);
        assert!(read_line(&mut reader, &mut buf, 64).await.unwrap());
        assert_eq!(buf, b"second\n");
        assert!(!read_line(&mut reader, &mut buf, 64).await.unwrap());

        let long: &[u8] = b"0123456789\n";
        let mut reader = tokio::io::BufReader::new(long);
        assert!(read_line(&mut reader, &mut buf, 5).await.is_err());
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn a_line_cut_by_the_peer_is_an_error() {
        let data: &[u8] = b"{\"a\":";
        let mut reader = tokio::io::BufReader::new(data);
        let mut buf = Vec::new();
        assert!(read_line(&mut reader, &mut buf, 64).await.is_err());
    }
}
