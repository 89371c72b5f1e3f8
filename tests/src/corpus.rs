//! Reads `tests/corpus/messages.txt`: one message per line, `#` starts a comment line, and
//! `\t \r \n \0 \\ \xHH` escapes stand for the bytes a text file cannot hold.

use std::path::PathBuf;

pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/messages.txt")
}

/// Every message of the corpus, unescaped.
pub fn messages() -> Vec<Vec<u8>> {
    let text = std::fs::read(path()).expect("read tests/corpus/messages.txt");
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .map(unescape)
        .collect()
}

pub fn unescape(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] == b'\\' && i + 1 < line.len() {
            match line[i + 1] {
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b'0' => out.push(0),
                b'\\' => out.push(b'\\'),
                b'x' if i + 3 < line.len() => {
                    let hex = std::str::from_utf8(&line[i + 2..i + 4]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 4;
                            continue;
                        }
                        None => out.extend_from_slice(&line[i..i + 2]),
                    }
                }
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn escapes_become_bytes() {
        assert_eq!(
            unescape(br"a\tb\r\0\\\x41\xzz"),
            b"a\tb\r\0\\A\\xzz".to_vec()
        );
    }
}
