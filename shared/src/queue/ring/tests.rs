//! Behaviour tests of the ring through its public API, on real files in a tempdir.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::layout::{HEADER_LEN, OFF_COMMITTED, OFF_HEAD};
use crate::queue::record::{decode_header, RECORD_HEADER_LEN};
use crate::queue::{RecordMeta, Ring, RingConsumer, RingError, RingProducer};

fn meta() -> RecordMeta {
    RecordMeta {
        intake_id: 7,
        recv_time_us: 1_700_000_000_000_000,
        flags: 0,
    }
}

fn new_ring(cap: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rings").join("intake-7.ring");
    let info = Ring::create_or_open(&path, cap, 7).unwrap();
    assert!(!info.reopened);
    (dir, path)
}

fn read_all(c: &mut RingConsumer, from: u64) -> (Vec<u8>, u64, u32, u32) {
    let mut out = Vec::new();
    let span = c.read(from, None, usize::MAX, &mut out).unwrap().unwrap();
    (out, span.end, span.records, span.corrupt_skipped)
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn reopen_keeps_content_and_positions() {
    let (_d, path) = new_ring(4096);
    {
        let mut p = RingProducer::attach(&path).unwrap();
        assert!(p.try_push(&meta(), b"first").unwrap());
        assert!(p.try_push(&meta(), b"second").unwrap());
        p.publish();
    }
    let info = Ring::create_or_open(&path, 8192, 7).unwrap();
    assert!(info.reopened);
    assert_eq!((info.capacity, info.head, info.committed), (4096, 80, 0));
    let mut c = RingConsumer::attach(&path).unwrap();
    let from = c.committed();
    assert_eq!(read_all(&mut c, from), (b"firstsecond".to_vec(), 80, 2, 0));
}

#[test]
fn attach_rejects_bad_magic_unknown_version_and_wrong_size_in_words() {
    let (_d, path) = new_ring(4096);
    patch(&path, 0, b"NOTARING");
    let e = RingConsumer::attach(&path).err().unwrap();
    assert!(
        e.to_string()
            .contains("is not a sekoia-forwarder ring file"),
        "{e}"
    );
    patch(&path, 0, b"SKFRING\0");
    patch(&path, 8, &9u32.to_le_bytes());
    let e = RingProducer::attach(&path).err().unwrap();
    assert!(
        e.to_string()
            .contains("format version 9, this build understands only version 1"),
        "{e}"
    );
    assert!(
        Ring::create_or_open(&path, 4096, 7).is_err(),
        "unknown version is left untouched"
    );
    patch(&path, 8, &1u32.to_le_bytes());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(HEADER_LEN + 1024)
        .unwrap();
    let e = RingConsumer::attach(&path).err().unwrap();
    assert!(
        e.to_string()
            .contains("bytes but its header says it should be"),
        "{e}"
    );
}

#[test]
fn attach_rejects_indices_that_cannot_be_true() {
    let (_d, path) = new_ring(4096);
    patch(&path, OFF_COMMITTED as u64, &64u64.to_le_bytes());
    let e = RingConsumer::attach(&path).err().unwrap();
    assert!(e.to_string().contains("ahead of head"), "{e}");
}

#[test]
fn never_finished_file_is_reinitialised_and_attach_meanwhile_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let e = RingProducer::attach(&path).err().unwrap();
    assert!(
        matches!(e, RingError::NotInitialised { .. }) && e.is_retryable(),
        "{e}"
    );
    let info = Ring::create_or_open(&path, 1000, 1).unwrap();
    assert_eq!((info.capacity, info.reopened), (1000, false));
    assert!(RingProducer::attach(&path).is_ok());
}

#[test]
fn capacity_below_minimum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = Ring::create_or_open(&dir.path().join("r"), 64, 0)
        .err()
        .unwrap();
    assert!(e.to_string().contains("256-byte minimum"), "{e}");
}

#[test]
fn second_producer_or_consumer_is_refused_until_the_first_goes_away() {
    let (_d, path) = new_ring(4096);
    let p = RingProducer::attach(&path).unwrap();
    let c = RingConsumer::attach(&path).unwrap();
    let e = RingProducer::attach(&path).err().unwrap();
    assert!(
        matches!(
            e,
            RingError::AlreadyAttached {
                role: "producer",
                ..
            }
        ) && e.is_retryable()
    );
    assert!(matches!(
        RingConsumer::attach(&path),
        Err(RingError::AlreadyAttached {
            role: "consumer",
            ..
        })
    ));
    drop((p, c));
    assert!(RingProducer::attach(&path).is_ok());
}

#[test]
fn full_ring_says_no_room_and_has_room_after_commit() {
    let (_d, path) = new_ring(256);
    let mut p = RingProducer::attach(&path).unwrap();
    let mut c = RingConsumer::attach(&path).unwrap();
    let payload = [0xAB; 32]; // 64-byte records: four fill the ring
    for _ in 0..4 {
        assert!(p.try_push(&meta(), &payload).unwrap());
    }
    assert!(!p.try_push(&meta(), &payload).unwrap());
    assert_eq!(p.free_bytes(), 0);
    p.publish();
    let mut out = Vec::new();
    let span = c.read(0, None, 40, &mut out).unwrap().unwrap();
    assert_eq!(
        (span.records, span.end),
        (1, 64),
        "max_bytes stops after one record"
    );
    assert!(
        !p.try_push(&meta(), &payload).unwrap(),
        "read alone frees nothing"
    );
    c.commit(span.end);
    assert!(p.try_push(&meta(), &payload).unwrap());
}

#[test]
fn record_that_does_not_fit_before_the_end_follows_a_pad_record() {
    let (_d, path) = new_ring(256);
    let mut p = RingProducer::attach(&path).unwrap();
    let mut c = RingConsumer::attach(&path).unwrap();
    for i in 0..3u8 {
        assert!(p.try_push(&meta(), &[i; 40]).unwrap()); // 72 bytes each: 216 used
    }
    p.publish();
    let (_, end, n, _) = read_all(&mut c, 0);
    assert_eq!((end, n), (216, 3));
    c.commit(end);
    assert!(p.try_push(&meta(), &[9; 40]).unwrap()); // 40 left: PAD 40, record at 256
    p.publish();
    let (out, end, n, bad) = read_all(&mut c, 216);
    assert_eq!((out, end, n, bad), (vec![9; 40], 256 + 72, 1, 0));
}

#[test]
fn fewer_than_a_header_of_bytes_before_the_end_are_implicit_padding() {
    let (_d, path) = new_ring(256);
    let mut p = RingProducer::attach(&path).unwrap();
    let mut c = RingConsumer::attach(&path).unwrap();
    assert!(p.try_push(&meta(), &[1; 96]).unwrap()); // 128
    assert!(p.try_push(&meta(), &[2; 72]).unwrap()); // 104: offset 232, 24 bytes left
    p.publish();
    let end = read_all(&mut c, 0).1;
    c.commit(end);
    assert!(p.try_push(&meta(), b"wrapped").unwrap());
    p.publish();
    let (out, end, n, bad) = read_all(&mut c, 232);
    assert_eq!((out, end, n, bad), (b"wrapped".to_vec(), 256 + 40, 1, 0));
}

#[test]
fn oversized_payload_is_an_error_not_a_hang() {
    let (_d, path) = new_ring(1024);
    let mut p = RingProducer::attach(&path).unwrap();
    assert_eq!(p.max_payload(), 512 - RECORD_HEADER_LEN);
    assert!(p.try_push(&meta(), &vec![0; p.max_payload()]).unwrap());
    let e = p
        .try_push(&meta(), &vec![0; p.max_payload() + 1])
        .err()
        .unwrap();
    assert!(
        matches!(e, RingError::PayloadTooLarge { len: 481, max: 480 }),
        "{e}"
    );
}

#[test]
fn corrupt_payload_is_skipped_and_counted() {
    let (_d, path) = new_ring(4096);
    let mut p = RingProducer::attach(&path).unwrap();
    let mut c = RingConsumer::attach(&path).unwrap();
    for s in [b"one", b"two", b"six"] {
        assert!(p.try_push(&meta(), s).unwrap());
    }
    p.publish();
    patch(&path, HEADER_LEN + 40 + 32, b"X"); // second record's payload
    assert_eq!(read_all(&mut c, 0), (b"onesix".to_vec(), 120, 2, 1));
}

#[test]
fn insane_header_skips_to_the_end_of_the_published_segment() {
    let (_d, path) = new_ring(4096);
    let mut p = RingProducer::attach(&path).unwrap();
    let mut c = RingConsumer::attach(&path).unwrap();
    for s in [b"one", b"two", b"six"] {
        assert!(p.try_push(&meta(), s).unwrap());
    }
    p.publish();
    patch(&path, HEADER_LEN + 40, &u32::MAX.to_le_bytes()); // second record's len
    assert_eq!(read_all(&mut c, 0), (b"one".to_vec(), 120, 1, 1));
    assert!(c.read(120, None, 100, &mut Vec::new()).unwrap().is_none());
}

/// Found by the `ring_consumer` fuzz target: a head published after attach that no producer
/// could publish (unaligned, behind, or more than the capacity ahead) made reads end off a
/// record boundary (the next read was refused for ever) or walk the ring round and round.
#[test]
fn impossible_head_published_after_attach_is_ignored() {
    let (_d, path) = new_ring(4096);
    let mut p = RingProducer::attach(&path).unwrap();
    let mut c = RingConsumer::attach(&path).unwrap();
    for s in [b"one", b"two"] {
        assert!(p.try_push(&meta(), s).unwrap());
    }
    p.publish();
    let good_head = c.head();
    assert_eq!(read_all(&mut c, 0), (b"onetwo".to_vec(), good_head, 2, 0));
    for bad in [good_head + 3, good_head - 8, 4096 + 8 + good_head, !7u64] {
        patch(&path, OFF_HEAD as u64, &bad.to_le_bytes());
        let mut out = Vec::new();
        let span = c.read(good_head, None, usize::MAX, &mut out).unwrap();
        assert_eq!(span, None, "head {bad}: nothing past the last good head");
        assert!(out.is_empty());
    }
    // A sane head later is taken again.
    patch(&path, OFF_HEAD as u64, &good_head.to_le_bytes());
    assert!(p.try_push(&meta(), b"six").unwrap());
    p.publish();
    assert_eq!(
        read_all(&mut c, good_head),
        (b"six".to_vec(), c.head(), 1, 0)
    );
}

#[test]
fn unpublished_records_are_invisible_and_a_new_producer_continues_from_head() {
    let (_d, path) = new_ring(4096);
    let mut c = RingConsumer::attach(&path).unwrap();
    {
        let mut p = RingProducer::attach(&path).unwrap();
        assert!(p.try_push(&meta(), b"kept").unwrap());
        p.publish();
        assert!(p.try_push(&meta(), b"lost").unwrap()); // the worker dies before publish
        assert!(c.read(40, None, 100, &mut Vec::new()).unwrap().is_none());
    }
    let mut p = RingProducer::attach(&path).unwrap();
    assert!(p.try_push(&meta(), b"next").unwrap());
    p.publish();
    assert_eq!(read_all(&mut c, 0), (b"keptnext".to_vec(), 80, 2, 0));
    let mut raw = [0u8; RECORD_HEADER_LEN];
    let bytes = std::fs::read(&path).unwrap();
    raw.copy_from_slice(&bytes[HEADER_LEN as usize + 40..][..RECORD_HEADER_LEN]);
    assert_eq!(
        decode_header(&raw).unwrap().seq,
        1,
        "sequence continues after reattach"
    );
}

#[test]
fn read_stops_before_until_and_rejects_positions_outside_the_ring() {
    let (_d, path) = new_ring(4096);
    let mut p = RingProducer::attach(&path).unwrap();
    let mut c = RingConsumer::attach(&path).unwrap();
    for s in [b"a", b"b", b"c"] {
        assert!(p.try_push(&meta(), s).unwrap());
    }
    p.publish();
    let mut out = Vec::new();
    let span = c.read(0, Some(80), 1000, &mut out).unwrap().unwrap();
    assert_eq!(
        (out.as_slice(), span.end, span.records),
        (&b"ab"[..], 80, 2)
    );
    assert!(c.read(80, Some(80), 1000, &mut out).unwrap().is_none());
    c.commit(80);
    assert!(matches!(
        c.read(40, None, 1, &mut out),
        Err(RingError::PositionOutOfRange { .. })
    ));
    assert!(matches!(
        c.read(800, None, 1, &mut out),
        Err(RingError::PositionOutOfRange { .. })
    ));
    drop(c);
    let c = RingConsumer::attach(&path).unwrap();
    assert_eq!(
        (c.committed(), c.head()),
        (80, 120),
        "a new consumer resumes at committed"
    );
}

#[test]
fn handles_can_move_to_worker_threads() {
    fn send<T: Send + 'static>() {}
    fn shared<T: Send + Sync + 'static>() {}
    send::<RingProducer>();
    send::<RingConsumer>();
    shared::<crate::queue::Doorbell>();
}

#[test]
fn header_positions_are_on_their_own_cache_lines() {
    assert_eq!((OFF_HEAD, OFF_COMMITTED), (128, 256));
}

/// Deterministic (size, bytes) of the `k`-th stress record: sizes 1..=600.
fn stress_payload(k: u64, buf: &mut Vec<u8>) {
    let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    let len = 1 + (x % 600) as usize;
    buf.clear();
    buf.extend((0..len).map(|i| (x >> ((i % 8) * 8)) as u8 ^ i as u8));
}

#[test]
fn million_records_cross_threads_arrive_in_order_without_loss_or_corruption() {
    const N: u64 = 1_000_000;
    let (_d, path) = new_ring(16 * 1024);
    let mut p = RingProducer::attach(&path).unwrap();
    let mut c = RingConsumer::attach(&path).unwrap();
    let producer = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for k in 0..N {
            stress_payload(k, &mut buf);
            while !p.try_push(&meta(), &buf).unwrap() {
                p.publish();
                std::thread::yield_now();
            }
            if k % 16 == 0 {
                p.publish();
            }
        }
        p.publish();
    });
    let (mut pos, mut k, mut out, mut want) = (0u64, 0u64, Vec::new(), Vec::new());
    while k < N {
        out.clear();
        let Some(span) = c.read(pos, None, 4096, &mut out).unwrap() else {
            std::thread::yield_now();
            continue;
        };
        assert_eq!(span.corrupt_skipped, 0);
        let mut at = 0;
        for _ in 0..span.records {
            stress_payload(k, &mut want);
            assert_eq!(&out[at..at + want.len()], &want[..], "record {k}");
            at += want.len();
            k += 1;
        }
        assert_eq!(at, out.len());
        pos = span.end;
        c.commit(pos);
    }
    producer.join().unwrap();
    assert!(
        c.read(pos, None, 4096, &mut out).unwrap().is_none(),
        "nothing extra"
    );
}

#[test]
#[ignore = "micro-benchmark: cargo test --release -- --ignored --nocapture ring_throughput"]
fn ring_throughput_of_300_byte_records() {
    let (_d, path) = new_ring(64 << 20);
    let mut p = RingProducer::attach(&path).unwrap();
    let mut c = RingConsumer::attach(&path).unwrap();
    let payload = [b'x'; 300];
    let (mut push_t, mut read_t, mut n, mut pos) = (0.0, 0.0, 0u64, 0u64);
    let mut out = Vec::with_capacity(1 << 20);
    while n < 5_000_000 {
        let t = std::time::Instant::now();
        while p.try_push(&meta(), &payload).unwrap() {
            n += 1;
        }
        p.publish();
        push_t += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        while let Some(span) = c.read(pos, None, 1 << 20, &mut out).unwrap() {
            pos = span.end;
            out.clear();
        }
        c.commit(pos);
        read_t += t.elapsed().as_secs_f64();
    }
    println!(
        "ring, 300-byte records: {:.2} M pushes/s, {:.2} M reads/s",
        n as f64 / push_t / 1e6,
        n as f64 / read_t / 1e6
    );
}

#[test]
fn record_bound_says_no_room_until_the_consumer_commits() {
    let (_d, path) = new_ring(1 << 16);
    let mut p = RingProducer::attach(&path).unwrap();
    p.set_max_records(Some(3));
    let mut c = RingConsumer::attach(&path).unwrap();
    for _ in 0..3 {
        assert!(p.try_push(&meta(), b"event").unwrap());
    }
    assert!(
        !p.try_push(&meta(), b"event").unwrap(),
        "3 records held: full by count"
    );
    p.publish();
    let mut out = Vec::new();
    let first = c.read(c.committed(), None, 1, &mut out).unwrap().unwrap();
    assert_eq!(first.records, 1);
    assert!(
        !p.try_push(&meta(), b"event").unwrap(),
        "read is not committed"
    );
    c.commit(first.end);
    assert!(
        p.try_push(&meta(), b"event").unwrap(),
        "one committed: room for one"
    );
    assert!(!p.try_push(&meta(), b"event").unwrap());
    // A producer attached later (a restarted worker) sees the same count.
    p.publish();
    drop(p);
    let mut p2 = RingProducer::attach(&path).unwrap();
    p2.set_max_records(Some(3));
    assert!(!p2.try_push(&meta(), b"event").unwrap());
    let rest = c
        .read(first.end, None, usize::MAX, &mut out)
        .unwrap()
        .unwrap();
    c.commit(rest.end);
    assert!(p2.try_push(&meta(), b"event").unwrap());
}

/// Bytes the file really holds (allocated blocks), not its size.
/// A temporary folder on tmpfs, as in production, when there is one; any file system with
/// hole punching will do.
fn shm_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Drains everything published and commits it; returns the records read, checked.
fn drain_checked(c: &mut RingConsumer, pos: &mut u64, payload: &[u8]) -> u64 {
    let mut out = Vec::new();
    let mut n = 0;
    while let Some(span) = c.read(*pos, None, 1 << 20, &mut out).unwrap() {
        assert_eq!(span.corrupt_skipped, 0);
        assert!(
            out.chunks(payload.len()).all(|r| r == payload),
            "intact records"
        );
        n += u64::from(span.records);
        *pos = span.end;
        out.clear();
    }
    c.commit(*pos);
    n
}

#[test]
fn freed_space_is_given_back_and_the_ring_stays_correct_across_wraps() {
    const MIB: u64 = 1 << 20;
    let dir = shm_tempdir();
    let path = dir.path().join("intake-7.ring");
    Ring::create_or_open(&path, 64 * MIB, 7).unwrap();
    let reserved = allocated(&path);
    assert!(
        reserved >= 64 * MIB,
        "created with its memory reserved: {reserved}"
    );
    let mut p = RingProducer::attach(&path).unwrap();
    // The producer gives back the free space beyond the next release step (1 MiB) at once.
    let attached = allocated(&path);
    assert!(
        attached <= 2 * MIB,
        "free space given back at attach: {attached}"
    );
    let mut c = RingConsumer::attach(&path).unwrap();
    let payload = vec![0xA5u8; 1000];
    assert!(p.try_push(&meta(), &payload).unwrap());
    p.publish();
    let (mut pos, mut pushed, mut read) = (0u64, 1u64, 0u64);
    // Three laps: queue 56 MiB (resident), consume and commit it, push 5 MiB more: what
    // stays resident is the new 5 MiB plus at most two release steps (2 MiB).
    for lap in 0..3 {
        while p.free_bytes() > 8 * MIB {
            assert!(p.try_push(&meta(), &payload).unwrap());
            pushed += 1;
        }
        p.publish();
        let queued = allocated(&path);
        assert!(
            queued >= 55 * MIB,
            "lap {lap}: what is queued is resident: {queued}"
        );
        read += drain_checked(&mut c, &mut pos, &payload);
        assert_eq!(read, pushed);
        for _ in 0..5 * MIB / 1032 {
            assert!(p.try_push(&meta(), &payload).unwrap());
            pushed += 1;
        }
        p.publish();
        let released = allocated(&path);
        assert!(
            released <= 8 * MIB,
            "lap {lap}: committed space given back: {queued} -> {released}"
        );
        read += drain_checked(&mut c, &mut pos, &payload);
        assert_eq!(read, pushed);
    }
}

#[test]
fn pages_given_back_come_back_ahead_of_the_producer_in_one_step() {
    const MIB: u64 = 1 << 20;
    let dir = shm_tempdir();
    let path = dir.path().join("intake-8.ring");
    Ring::create_or_open(&path, 64 * MIB, 8).unwrap();
    // Attaching gives back everything past the first release step: holes from there on.
    let mut p = RingProducer::attach(&path).unwrap();
    let payload = vec![0x5Au8; 1000];
    while 64 * MIB - p.free_bytes() < 3 * MIB / 2 {
        assert!(p.try_push(&meta(), &payload).unwrap());
    }
    p.publish();
    let head = 64 * MIB - p.free_bytes();
    let resident = allocated(&path);
    // Written pages only would be about `head` (plus the header page); the producer has
    // faulted in up to PREFAULT_STEP (256 KiB) past it in one call.
    assert!(
        resident >= head + 128 * 1024,
        "pages ahead of head prefaulted: head {head}, resident {resident}"
    );
    assert!(
        resident <= head + MIB,
        "never more than the release step ahead: head {head}, resident {resident}"
    );
    let mut c = RingConsumer::attach(&path).unwrap();
    let mut pos = 0;
    let read = drain_checked(&mut c, &mut pos, &payload);
    assert!(read > 1_000, "every record reads back intact: {read}");
}
