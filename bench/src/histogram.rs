//! A latency histogram in microseconds: exact below 64 µs, then 32 buckets per power of two
//! (error under 3 %), up to about 18 minutes. Mergeable, so each sink thread keeps its own.

const SUB: u32 = 32;
const LINEAR: u64 = 64;
const BUCKETS: usize = LINEAR as usize + SUB as usize * 40;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let log = 63 - v.leading_zeros(); // >= 6
    let sub = (v >> (log - 5)) as u32 & (SUB - 1);
    (LINEAR as usize + (log - 6) as usize * SUB as usize + sub as usize).min(BUCKETS - 1)
}

/// The lowest value of bucket `b`.
fn bucket_low(b: usize) -> u64 {
    if b < LINEAR as usize {
        return b as u64;
    }
    let rel = b - LINEAR as usize;
    let log = (rel / SUB as usize) as u32 + 6;
    let sub = (rel % SUB as usize) as u64;
    (1u64 << log) + (sub << (log - 5))
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        self.counts[bucket(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), as the low edge of its bucket; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_low(b).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_three_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 50_000.0 - 1.0).abs() < 0.03, "{p50}");
        assert!((p99 / 99_000.0 - 1.0).abs() < 0.03, "{p99}");
        assert_eq!(h.max(), 100_000);
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for v in 0..1_000_000u64 {
            let b = bucket(v);
            assert!(b >= last);
            assert!(bucket_low(b) <= v);
            last = b;
        }
    }
}
