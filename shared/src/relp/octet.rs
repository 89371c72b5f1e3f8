//! The output lines inside a batch: the rings hold them octet-counted (`LEN SP LINE`, SPEC §5)
//! because that is what plain TLS syslog sends; a RELP `syslog` command carries `LINE` alone.

/// Iterates over the `LINE`s of concatenated `LEN SP LINE` records, each with its byte range
/// end in the batch. A record that does not parse ends the iteration with an error: the rings
/// only hold what the ingest worker rendered, so this means a bug, never input to skip.
pub struct OctetLines<'a> {
    data: &'a [u8],
    at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("batch byte {at}: not an octet-counted record ({problem})")]
pub struct OctetError {
    pub at: usize,
    pub problem: &'static str,
}

impl<'a> OctetLines<'a> {
    /// The records of `data`, starting at byte `at` (a record boundary).
    pub fn new(data: &'a [u8], at: usize) -> Self {
        Self { data, at }
    }
}

impl<'a> Iterator for OctetLines<'a> {
    /// The line and the offset just after its record.
    type Item = Result<(&'a [u8], usize), OctetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.data.len() {
            return None;
        }
        let start = self.at;
        let rest = &self.data[start..];
        let fail = |problem| Some(Err(OctetError { at: start, problem }));
        let Some(space) = rest.iter().take(11).position(|b| *b == b' ') else {
            self.at = self.data.len();
            return fail("no length and space");
        };
        let len = std::str::from_utf8(&rest[..space])
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<usize>().ok());
        let Some(len) = len else {
            self.at = self.data.len();
            return fail("the length is not a number");
        };
        let Some(line) = rest.get(space + 1..space + 1 + len) else {
            self.at = self.data.len();
            return fail("the line is shorter than its length");
        };
        self.at = start + space + 1 + len;
        Some(Ok((line, self.at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_each_line_without_its_count() {
        let data = b"6 <13>a\n3 b \n";
        let lines: Vec<_> = OctetLines::new(data, 0).collect();
        assert_eq!(lines, [Ok((&b"<13>a\n"[..], 8)), Ok((&b"b \n"[..], 13))]);
        let from_second: Vec<_> = OctetLines::new(data, 8).collect();
        assert_eq!(from_second, [Ok((&b"b \n"[..], 13))]);
    }

    #[test]
    fn a_record_that_is_not_octet_counted_is_an_error_and_ends_the_lines() {
        for (data, problem) in [
            (&b"x <13>a\n"[..], "the length is not a number"),
            (b"<13>a b c d e f\n", "the length is not a number"),
            (b"12345678901234", "no length and space"),
            (b"9 short", "the line is shorter than its length"),
        ] {
            let mut lines = OctetLines::new(data, 0);
            assert_eq!(lines.next(), Some(Err(OctetError { at: 0, problem })));
            assert_eq!(lines.next(), None);
        }
    }
}
