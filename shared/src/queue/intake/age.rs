//! The age of the oldest event a tier still holds, as its producer can know it.
//!
//! The producer notes, as it pushes, the record number (seq) where each new reception time
//! starts ([`AgeMarks::pushed`]); the consumer publishes the seq after the last record it
//! delivered (the ring header's `committed_seq`, the journal state's `committed_seq`). The
//! oldest undelivered record is then covered by the last mark at or before that seq, and
//! its time is the mark's.
//!
//! Bounded: a new mark is made only when the time moved by [`STEP_US`] or more (an age is
//! exact to 100 ms, never younger than the truth), and at most [`MAX_MARKS`] are kept; past
//! that, new records share the last mark (their age reads older than it is). Records the
//! producer did not push itself (left by a previous worker) have no mark: their age is
//! unknown (`None`), never made up.

use std::collections::VecDeque;

/// Smallest time step between two marks, µs.
const STEP_US: i64 = 100_000;
/// Most marks kept (16 bytes each).
const MAX_MARKS: usize = 65_536;

#[derive(Debug, Default)]
pub(crate) struct AgeMarks {
    /// `(first seq, reception time µs)`, seqs increasing.
    marks: VecDeque<(u64, i64)>,
}

impl AgeMarks {
    /// Record `seq` (received at `time_us`) was pushed.
    pub(crate) fn pushed(&mut self, seq: u64, time_us: i64) {
        let far_enough = self
            .marks
            .back()
            .is_none_or(|&(_, t)| time_us >= t.saturating_add(STEP_US) || time_us < t);
        if far_enough && self.marks.len() < MAX_MARKS {
            self.marks.push_back((seq, time_us));
        }
    }

    /// Reception time of the oldest record not delivered, given the seq after the last
    /// delivered record and the number of records still held; None when nothing is held
    /// or its time is unknown. Forgets the marks of delivered records.
    pub(crate) fn oldest(&mut self, delivered_seq: u64, held: u64) -> Option<i64> {
        while self.marks.get(1).is_some_and(|&(s, _)| s <= delivered_seq) {
            self.marks.pop_front();
        }
        if held == 0 {
            return None;
        }
        match self.marks.front() {
            Some(&(seq, time)) if seq <= delivered_seq => Some(time),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_held_record_has_its_marks_time() {
        let mut m = AgeMarks::default();
        for seq in 0..10 {
            m.pushed(seq, 1_000_000 + seq as i64 * 200_000);
        }
        assert_eq!(m.oldest(0, 10), Some(1_000_000));
        assert_eq!(m.oldest(4, 6), Some(1_800_000));
        assert_eq!(m.oldest(10, 0), None, "nothing held");
    }

    #[test]
    fn close_times_share_a_mark_and_are_never_younger() {
        let mut m = AgeMarks::default();
        m.pushed(5, 1_000_000);
        m.pushed(6, 1_050_000);
        m.pushed(7, 1_100_000);
        assert_eq!(
            m.oldest(6, 2),
            Some(1_000_000),
            "within 100 ms: the older time"
        );
        assert_eq!(m.oldest(7, 1), Some(1_100_000));
    }

    #[test]
    fn records_of_a_previous_producer_have_no_age() {
        let mut m = AgeMarks::default();
        m.pushed(100, 5_000_000);
        assert_eq!(m.oldest(40, 61), None, "seqs 40..100 were not pushed here");
        assert_eq!(m.oldest(100, 1), Some(5_000_000));
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// What the ingest path pays per event for the age marks (a release build:
    /// `cargo test --release -p sekoia-shared --lib age_marks_cost -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, run by hand in release"]
    fn age_marks_cost_per_event() {
        let mut m = AgeMarks::default();
        let n = 20_000_000u64;
        let start = std::time::Instant::now();
        for seq in 0..n {
            // A batch of 64 events per µs-stamp, a new stamp every 64 events, 1 ms apart.
            m.pushed(std::hint::black_box(seq), (seq / 64) as i64 * 1_000);
            if seq % 100_000 == 0 {
                std::hint::black_box(m.oldest(seq.saturating_sub(50_000), 50_000));
            }
        }
        let per_event = start.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "age marks: {per_event:.2} ns per event, {} marks held",
            m.marks.len()
        );
    }
}
