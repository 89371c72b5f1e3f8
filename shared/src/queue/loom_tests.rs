//! Loom model of the ring's index protocol: the real `ProducerCore` / `ConsumerCore` code over
//! a tiny in-process ring whose atomics are loom's and whose data bytes live in loom
//! `UnsafeCell`s (one per 8-byte word). Loom explores the interleavings and flags any read
//! of a word that is not ordered after its write ("causality violation"): that is the
//! "consumer never reads unpublished bytes" property. The consumer additionally checks that
//! every record arrives whole, in order, with a valid CRC and nothing skipped.
//!
//! Run from the workspace root (compiles only this crate's tests in loom mode):
//! `RUSTFLAGS="--cfg loom" cargo test --release -p sekoia-shared --lib loom`

use std::sync::Arc;

use loom::cell::UnsafeCell;

use crate::queue::ring::memory::RingMemory;
use crate::queue::ring::{ConsumerCore, ProducerCore};
use crate::queue::sync::{AtomicU64, Ordering};
use crate::queue::RecordMeta;

struct LoomRing {
    head: AtomicU64,
    committed: AtomicU64,
    next_seq: AtomicU64,
    words: Vec<UnsafeCell<u64>>,
    /// Test hook: publish `head` with this ordering instead of the one asked for.
    head_store_override: Option<Ordering>,
}

// SAFETY: the cells are shared between the producer and consumer threads exactly as the
// mapped ring is; loom checks every access to them at run time and fails the model on a race.
unsafe impl Sync for LoomRing {}

impl LoomRing {
    fn new(capacity: u64, head_store_override: Option<Ordering>) -> Self {
        LoomRing {
            head: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            next_seq: AtomicU64::new(0),
            words: (0..capacity / 8).map(|_| UnsafeCell::new(0)).collect(),
            head_store_override,
        }
    }

    /// Calls `f(word, first_byte, bytes)` for each word the byte range touches.
    fn for_words(offset: u64, len: usize, mut f: impl FnMut(usize, usize, std::ops::Range<usize>)) {
        let (mut pos, mut done) = (offset as usize, 0);
        while done < len {
            let (w, b) = (pos / 8, pos % 8);
            let n = (8 - b).min(len - done);
            f(w, b, done..done + n);
            pos += n;
            done += n;
        }
    }
}

impl RingMemory for LoomRing {
    fn capacity(&self) -> u64 {
        self.words.len() as u64 * 8
    }
    fn intake_id(&self) -> u16 {
        1
    }
    fn load_head(&self, order: Ordering) -> u64 {
        self.head.load(order)
    }
    fn store_head(&self, value: u64, order: Ordering) {
        self.head
            .store(value, self.head_store_override.unwrap_or(order))
    }
    fn load_committed(&self, order: Ordering) -> u64 {
        self.committed.load(order)
    }
    fn store_committed(&self, value: u64, order: Ordering) {
        self.committed.store(value, order)
    }
    fn load_next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed)
    }
    fn store_next_seq(&self, value: u64) {
        self.next_seq.store(value, Ordering::Relaxed)
    }
    unsafe fn write(&self, offset: u64, src: &[u8]) {
        Self::for_words(offset, src.len(), |w, b, r| {
            self.words[w].with_mut(|p| {
                // SAFETY: loom hands us the cell's pointer and checks that no other thread
                // accesses the word concurrently (that check is the point of this model).
                let mut bytes = unsafe { *p }.to_le_bytes();
                bytes[b..b + r.len()].copy_from_slice(&src[r]);
                // SAFETY: as above.
                unsafe { *p = u64::from_le_bytes(bytes) };
            })
        });
    }
    unsafe fn read(&self, offset: u64, dst: &mut [u8]) {
        Self::for_words(offset, dst.len(), |w, b, r| {
            // SAFETY: as in `write`; loom reports a read not ordered after the last write.
            let bytes = self.words[w].with(|p| unsafe { *p }).to_le_bytes();
            dst[r.clone()].copy_from_slice(&bytes[b..b + r.len()]);
        });
    }
}

fn payload(k: u8) -> Vec<u8> {
    // 8, 20, 24 bytes: records of 40, 56, 56 bytes in a 128-byte ring, so the third one
    // needs the consumer's first commit and wraps behind a PAD record.
    let len = [8, 20, 24][k as usize];
    (0..len).map(|i| k.wrapping_mul(31) ^ i).collect()
}

/// Producer pushes 3 records (publishing each); consumer reads, checks and commits.
fn model(head_store_override: Option<Ordering>) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(8); // LOOM_MAX_PREEMPTIONS overrides
    }
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mem = Arc::new(LoomRing::new(128, head_store_override));
        let mut producer = ProducerCore::new(mem.clone()).unwrap();
        let mut consumer = ConsumerCore::new(mem).unwrap();
        let meta = RecordMeta::default();
        let t = loom::thread::spawn(move || {
            for k in 0..3 {
                while !producer.try_push(&meta, &payload(k)).unwrap() {
                    loom::thread::yield_now();
                }
                producer.publish();
            }
        });
        let (mut pos, mut k, mut out) = (0u64, 0u8, Vec::new());
        while k < 3 {
            out.clear();
            match consumer.read(pos, None, usize::MAX, &mut out).unwrap() {
                None => loom::thread::yield_now(),
                Some(span) => {
                    assert_eq!(span.corrupt_skipped, 0, "torn or corrupt record seen");
                    let mut expected = Vec::new();
                    for _ in 0..span.records {
                        expected.extend(payload(k));
                        k += 1;
                    }
                    assert_eq!(out, expected);
                    pos = span.end;
                    consumer.commit(pos);
                }
            }
        }
        t.join().unwrap();
    });
    println!(
        "loom explored {} interleavings",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[test]
fn loom_consumer_sees_whole_published_records_in_order() {
    model(None);
}

/// The model has teeth: publishing `head` with Relaxed lets the consumer read record bytes
/// that are not ordered after their writes, and loom catches it.
#[test]
#[should_panic]
fn loom_catches_a_relaxed_publish() {
    model(Some(Ordering::Relaxed));
}
