//! Counting test events: every test event carries `seq=N `; what arrived is a map from N to
//! how many times it arrived (more than once: a duplicate, allowed and reported).

use std::collections::BTreeMap;

/// Sequence numbers found in `seq=N ` of each line, with how often each arrived.
pub fn sequence_counts(lines: &[Vec<u8>]) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let text = String::from_utf8_lossy(line);
        if let Some(n) = text
            .split("seq=")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|t| t.parse::<u64>().ok())
        {
            *counts.entry(n).or_insert(0) += 1;
        }
    }
    counts
}

/// Events that arrived more than once.
pub fn duplicates(counts: &BTreeMap<u64, u32>) -> u32 {
    counts.values().map(|c| c - 1).sum()
}

/// The last 40 lines of a log, for assertion messages.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sequence_numbers_and_duplicates() {
        let lines = vec![
            b"<13>1 TS h a - LOG [x] seq=1 payload\n".to_vec(),
            b"seq=2 x".to_vec(),
            b"seq=1 again".to_vec(),
            b"no number".to_vec(),
        ];
        let c = sequence_counts(&lines);
        assert_eq!(c.get(&1), Some(&2));
        assert_eq!(c.get(&2), Some(&1));
        assert_eq!(duplicates(&c), 1);
    }
}
