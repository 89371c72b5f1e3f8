//! The ordering invariant and the stuck states of an intake's queue, on real rings and
//! journals in a temporary folder.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::Protocol;
use crate::queue::{Doorbell, JournalWriter, RecordMeta, Ring, RingProducer};

struct Fixture {
    _tmp: tempfile::TempDir,
    ring: PathBuf,
    spool: SpoolDir,
    budget: DiskBudget,
    opts: JournalOptions,
    doorbell: Doorbell,
}

const KEY: QueueKey = QueueKey {
    protocol: Protocol::Tcp,
    port: 514,
};

fn fixture(disk_space: u64) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let ring = tmp.path().join("shm").join("intake-tcp-514.ring");
    Ring::create_or_open(&ring, 1 << 20, 1).unwrap();
    let spool = SpoolDir::new(&tmp.path().join("spool"));
    let budget =
        DiskBudget::create(&tmp.path().join("shm").join("disk.budget"), disk_space, 0).unwrap();
    let doorbell = Doorbell::create_or_open(&tmp.path().join("shm").join("doorbell")).unwrap();
    let opts = journal_options(disk_space, 1, false);
    Fixture {
        _tmp: tmp,
        ring,
        spool,
        budget,
        opts,
        doorbell,
    }
}

impl Fixture {
    /// A writer whose ring takes at most `max_records` events.
    fn writer(&self, journal_dir: &Path, max_records: u64) -> IntakeWriter {
        let mut ring =
            RingProducer::attach_with_doorbell(&self.ring, self.doorbell.clone()).unwrap();
        ring.set_max_records(Some(max_records));
        let opener = JournalOpener::new(
            journal_dir.to_path_buf(),
            1,
            self.budget.clone(),
            self.opts.clone(),
        );
        IntakeWriter::new("t", ring, opener, self.doorbell.clone())
    }

    fn queue(&self) -> IntakeQueue {
        open_queue(KEY, Some(&self.ring), &self.spool, &self.budget, &self.opts)
    }
}

fn meta() -> RecordMeta {
    RecordMeta {
        intake_id: 1,
        recv_time_us: 0,
        flags: 0,
    }
}

fn push(w: &mut IntakeWriter, events: std::ops::Range<u32>) -> Vec<Push> {
    let pushed = events
        .map(|i| w.push(&meta(), format!("e{i:04};").as_bytes()))
        .collect();
    w.end_batch();
    pushed
}

/// The uplink's view of one intake: the queue and the position it reads from next.
struct Uplink(IntakeQueue, u64);

impl Uplink {
    fn new(q: IntakeQueue) -> Self {
        let at = q.committed();
        Self(q, at)
    }
}

/// Reads and commits everything the queue holds now, as text.
fn drain(u: &mut Uplink) -> String {
    let mut out = Vec::new();
    while let Some(span) = u.0.read(u.1, None, 1 << 16, &mut out).unwrap() {
        u.1 = span.end;
    }
    u.0.commit(u.1);
    String::from_utf8(out).unwrap()
}

fn expected(events: std::ops::Range<u32>) -> String {
    events.map(|i| format!("e{i:04};")).collect()
}

#[test]
fn events_spilled_to_the_journal_come_after_the_ring_and_memory_is_used_again_once_drained() {
    let f = fixture(64 << 20);
    let mut w = f.writer(&f.spool.journal_dir(KEY), 10);
    assert!(push(&mut w, 0..25).iter().all(|p| *p == Push::Queued));
    let mut q = Uplink::new(f.queue());
    // Ring (0..10) first, then the journal (10..25), while new events still go to the journal.
    assert!(push(&mut w, 25..30).iter().all(|p| *p == Push::Queued));
    assert_eq!(drain(&mut q), expected(0..30));
    // The journal is delivered: the next events go to the ring again, and come out in order.
    push(&mut w, 30..35);
    let journal = JournalWriter::open(
        &f.spool.journal_dir(KEY),
        1,
        f.budget.clone(),
        f.opts.clone(),
    );
    assert!(journal.is_err(), "the writer still holds the journal");
    assert_eq!(drain(&mut q), expected(30..35));
}

#[test]
fn without_a_journal_the_intake_goes_back_to_the_ring_once_there_is_room() {
    let f = fixture(64 << 20);
    // The journal's folder is a file: the journal cannot be opened.
    std::fs::create_dir_all(f.spool.path()).unwrap();
    let blocked = f.spool.journal_dir(KEY);
    std::fs::write(&blocked, b"not a folder").unwrap();
    let mut w = f.writer(&blocked, 10);
    assert!(push(&mut w, 0..10).iter().all(|p| *p == Push::Queued));
    assert_eq!(push(&mut w, 10..11), vec![Push::HeldBack]);
    let mut q = Uplink::new(f.queue());
    assert_eq!(drain(&mut q), expected(0..10));
    // Room again: the held-back event and the next ones go to the ring.
    assert!(push(&mut w, 10..15).iter().all(|p| *p == Push::Queued));
    assert_eq!(drain(&mut q), expected(10..15));
}

#[test]
fn the_smallest_segment_holds_the_largest_event() {
    let f = fixture(256 << 10);
    assert!(
        f.opts.segment_bytes >= MIN_SEGMENT,
        "{}",
        f.opts.segment_bytes
    );
    let mut w = JournalWriter::open(
        &f.spool.journal_dir(KEY),
        1,
        DiskBudget::create(&f.spool.path().join("big.budget"), 64 << 20, 0).unwrap(),
        f.opts.clone(),
    )
    .unwrap();
    assert!(w.max_payload() >= MAX_EVENT_PAYLOAD);
    assert!(w.append(&meta(), &vec![b'x'; MAX_EVENT_PAYLOAD]).unwrap());
    w.flush().unwrap();
}

#[test]
fn max_event_payload_is_the_rendered_line_limit_plus_its_octet_count() {
    let count = format!("{} ", crate::syslog::MAX_MESSAGE);
    assert_eq!(MAX_EVENT_PAYLOAD, crate::syslog::MAX_MESSAGE + count.len());
}

#[test]
fn what_a_stop_saved_is_drained_before_the_ring_and_the_journal() {
    let f = fixture(64 << 20);
    let mut w = f.writer(&f.spool.journal_dir(KEY), 1000);
    push(&mut w, 0..5);
    drop(w);
    let saved = save_ring(
        &f.ring,
        &f.spool.saved_dir(KEY),
        1,
        f.budget.clone(),
        f.opts.clone(),
    )
    .unwrap();
    assert_eq!((saved.events, saved.left_bytes), (5, 0));
    // The next life: new events in the ring, then in the journal.
    let mut w = f.writer(&f.spool.journal_dir(KEY), 3);
    push(&mut w, 5..10);
    let mut q = Uplink::new(f.queue());
    assert_eq!(drain(&mut q), expected(0..10));
}

#[test]
fn the_snapshot_counts_each_tier_and_ages_its_oldest_event() {
    let f = fixture(64 << 20);
    let mut w = f.writer(&f.spool.journal_dir(KEY), 10);
    let now = crate::queue::journal::unix_micros();
    let at = |secs_ago: i64| RecordMeta {
        recv_time_us: now - secs_ago * 1_000_000,
        ..meta()
    };
    for i in 0..25u32 {
        // The first 10 go to the ring (received 60 s ago), the rest to the journal (30 s ago).
        let m = if i < 10 { at(60) } else { at(30) };
        assert_eq!(w.push(&m, format!("e{i:04};").as_bytes()), Push::Queued);
    }
    w.end_batch();
    let s = w.snapshot();
    assert_eq!(
        (s.ring_enqueued, s.ring_events, s.ring_max_events),
        (10, 10, 10)
    );
    assert_eq!((s.journal_enqueued, s.journal_events), (15, 15));
    assert_eq!(s.ring_full, 1);
    assert!(s.ring_bytes > 0 && s.journal_bytes > s.ring_bytes, "{s:?}");
    let age = s.oldest_age_ms.expect("known age");
    assert!((60_000..65_000).contains(&age), "the ring's oldest: {age}");

    // Once the uplink delivered the ring, the oldest is the journal's.
    let mut q = Uplink::new(f.queue());
    let mut out = Vec::new();
    let span = q.0.read(q.1, None, 10 * 6, &mut out).unwrap().unwrap();
    assert_eq!(span.records, 10);
    q.1 = span.end;
    q.0.commit(span.end);
    let s = w.snapshot();
    assert_eq!((s.ring_events, s.journal_events), (0, 15), "{s:?}");
    let age = s.oldest_age_ms.expect("known age");
    assert!(
        (30_000..35_000).contains(&age),
        "the journal's oldest: {age}"
    );
    // Part of the journal delivered: the reader's record number tells how many are left.
    let span = q.0.read(q.1, None, 5 * 6, &mut out).unwrap().unwrap();
    assert_eq!(span.records, 5);
    q.1 = span.end;
    q.0.commit(span.end);
    assert_eq!(w.snapshot().journal_events, 10);
    drain(&mut q);
    let s = w.snapshot();
    assert_eq!(
        (s.ring_events, s.journal_events, s.oldest_age_ms),
        (0, 0, None)
    );
    assert_eq!(s.journal_max_events, 15);
}
