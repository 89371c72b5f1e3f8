//! Behaviour tests of the journal through its public API, on real files in a tempdir.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::checkpoint::{
    decode_file, CheckpointFile, CHECKPOINT_FILE_LEN, CHECKPOINT_V1_LEN, SLOT_LEN,
};
use super::segment::{SegmentHeader, HDR};
use super::*;
use crate::queue::record::record_len;
use crate::queue::{ReadSpan, RecordMeta};
use std::os::unix::fs::MetadataExt;

const SEG: u64 = 4096;

fn meta() -> RecordMeta {
    RecordMeta {
        intake_id: 7,
        recv_time_us: 1_700_000_000_000_000,
        flags: 0,
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    budget: DiskBudget,
    opts: JournalOptions,
}

fn fixture_with(segment_bytes: u64, limit: u64) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let budget = DiskBudget::create(&tmp.path().join("shm").join("budget"), limit, 0).unwrap();
    let dir = tmp.path().join("spool").join("journal-tcp-20516");
    let opts = JournalOptions {
        segment_bytes,
        buffer_bytes: 1024,
        checkpoint_interval: Duration::ZERO,
        read_window: 4096,
        ..JournalOptions::default()
    };
    Fixture {
        _tmp: tmp,
        dir,
        budget,
        opts,
    }
}

fn fixture() -> Fixture {
    fixture_with(SEG, u64::MAX)
}

impl Fixture {
    fn writer(&self) -> JournalWriter {
        JournalWriter::open(&self.dir, 7, self.budget.clone(), self.opts.clone()).unwrap()
    }
    fn reader(&self) -> JournalReader {
        JournalReader::open(&self.dir, self.budget.clone(), self.opts.clone()).unwrap()
    }
    fn seg_path(&self, start: u64) -> PathBuf {
        self.dir.join(segment_file_name(start))
    }
    fn segments(&self) -> Vec<u64> {
        segment::list_dir(&self.dir).unwrap().segments
    }
}

/// An octet-counted line like the ones the ring carries: `LEN SP body`, body of `n` bytes.
fn event(i: usize, n: usize) -> Vec<u8> {
    let mut body = format!("<14>event {i:08} ").into_bytes();
    body.resize(n.max(body.len()), b'x');
    let mut line = format!("{} ", body.len()).into_bytes();
    line.extend_from_slice(&body);
    line
}

/// Splits concatenated octet-counted lines back into event numbers.
fn event_numbers(mut bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let sp = bytes.iter().position(|&b| b == b' ').unwrap();
        let len: usize = std::str::from_utf8(&bytes[..sp]).unwrap().parse().unwrap();
        let body = &bytes[sp + 1..sp + 1 + len];
        let n: usize = std::str::from_utf8(&body[10..18]).unwrap().parse().unwrap();
        out.push(n);
        bytes = &bytes[sp + 1 + len..];
    }
    out
}

fn append_all(w: &mut JournalWriter, range: std::ops::Range<usize>, size: impl Fn(usize) -> usize) {
    for i in range {
        assert!(w.append(&meta(), &event(i, size(i))).unwrap(), "append {i}");
    }
    w.flush().unwrap();
}

/// Reads everything readable now, in batches of `max_bytes`, committing after each batch.
fn drain(r: &mut JournalReader, max_bytes: usize) -> (Vec<usize>, u32) {
    let mut events = Vec::new();
    let mut corrupt = 0;
    let mut pos = r.committed();
    let mut out = Vec::new();
    while let Some(span) = r.read(pos, max_bytes, &mut out).unwrap() {
        assert_eq!(span.start, pos);
        assert!(span.end > pos, "a read must make progress");
        events.extend(event_numbers(&out));
        out.clear();
        corrupt += span.corrupt_skipped;
        pos = span.end;
        r.commit(pos).unwrap();
    }
    (events, corrupt)
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn read_byte(path: &Path, at: u64) -> u8 {
    let mut b = [0u8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    b[0]
}

#[test]
fn round_trip_across_many_segments_keeps_order() {
    let f = fixture();
    let mut w = f.writer();
    append_all(&mut w, 0..600, |i| 20 + (i * 37) % 300);
    assert!(f.segments().len() > 20, "{} segments", f.segments().len());
    assert_eq!(w.next_seq(), 600);
    let mut r = f.reader();
    let (events, corrupt) = drain(&mut r, 700);
    assert_eq!(events, (0..600).collect::<Vec<_>>());
    assert_eq!(corrupt, 0);
    assert_eq!(r.committed(), w.end());
    assert!(w.is_drained());
}

#[test]
fn read_returns_at_least_one_record_and_respects_max_bytes() {
    let f = fixture();
    let mut w = f.writer();
    append_all(&mut w, 0..10, |_| 100);
    let mut r = f.reader();
    let mut out = Vec::new();
    let one = r.read(0, 1, &mut out).unwrap().unwrap();
    assert_eq!((one.records, one.bytes as usize), (1, out.len()));
    out.clear();
    let three = r.read(
        one.end,
        3 * out.capacity().max(event(0, 100).len()),
        &mut out,
    );
    assert_eq!(three.unwrap().unwrap().records, 3);
}

#[test]
fn a_span_read_earlier_reads_again_exactly_up_to_until() {
    let f = fixture();
    let mut w = f.writer();
    append_all(&mut w, 0..10, |_| 100);
    let mut r = f.reader();
    let mut out = Vec::new();
    let first = r.read(0, 250, &mut out).unwrap().unwrap();
    let second = r.read(first.end, usize::MAX, &mut out).unwrap().unwrap();
    assert_eq!(first.records + second.records, 10);
    // Everything up to `second.end` is there now, yet a re-read stops at `until`.
    let mut again = Vec::new();
    let same = r.read_until(0, Some(first.end), usize::MAX, &mut again);
    assert_eq!(same.unwrap(), Some(first));
    assert_eq!(again, out[..first.bytes as usize]);
    again.clear();
    let same = r.read_until(first.end, Some(second.end), usize::MAX, &mut again);
    assert_eq!(same.unwrap(), Some(second));
    assert_eq!(again, out[first.bytes as usize..]);
}

#[test]
fn reader_sees_only_flushed_and_published_records() {
    let f = fixture();
    let mut w = f.writer();
    let mut r = f.reader();
    for i in 0..3 {
        assert!(w.append(&meta(), &event(i, 50)).unwrap());
    }
    assert!(w.buffered_bytes() > 0);
    let mut out = Vec::new();
    assert_eq!(r.read(r.committed(), usize::MAX, &mut out).unwrap(), None);
    assert_eq!(w.published_end(), 0);
    w.flush().unwrap();
    assert_eq!(w.published_end(), w.end());
    assert_eq!(drain(&mut r, usize::MAX).0, vec![0, 1, 2]);
}

#[test]
fn writer_is_drained_only_when_everything_is_committed() {
    let f = fixture();
    let mut w = f.writer();
    let mut r = f.reader();
    assert!(w.is_drained());
    assert!(w.append(&meta(), &event(0, 50)).unwrap());
    assert!(!w.is_drained(), "buffered");
    w.flush().unwrap();
    assert!(!w.is_drained(), "published, not delivered");
    let mut out = Vec::new();
    let span = r
        .read(r.committed(), usize::MAX, &mut out)
        .unwrap()
        .unwrap();
    assert!(!w.is_drained(), "read, not committed");
    r.commit(span.end).unwrap();
    assert_eq!(w.committed(), span.end);
    assert!(w.is_drained());
}

#[test]
fn commit_deletes_passed_segments_and_releases_their_budget() {
    let f = fixture();
    let mut w = f.writer();
    append_all(&mut w, 0..200, |_| 200);
    let segs = f.segments().len();
    assert!(segs > 5);
    let lens: u64 = f.segments()[..segs - 1]
        .iter()
        .map(|&s| std::fs::metadata(f.seg_path(s)).unwrap().len())
        .sum();
    assert_eq!(
        f.budget.used(),
        lens + SEG,
        "sealed lengths + the active reservation"
    );
    assert_eq!(
        scan_usage(f.dir.parent().unwrap()).unwrap(),
        f.budget.used()
    );
    let mut r = f.reader();
    assert_eq!(drain(&mut r, 10_000).0.len(), 200);
    assert_eq!(f.segments().len(), 1, "only the active segment is left");
    assert_eq!(f.budget.used(), SEG);
    assert_eq!(scan_usage(f.dir.parent().unwrap()).unwrap(), SEG);
    assert_eq!(r.persisted(), r.committed());
}

#[test]
fn exhausted_budget_makes_append_return_false_until_commit_frees_a_segment() {
    let f = fixture_with(SEG, 3 * SEG);
    let mut w = f.writer();
    let mut n = 0;
    while w.append(&meta(), &event(n, 200)).unwrap() {
        n += 1;
        assert!(n < 1000, "the budget must stop the writer");
    }
    assert!(f.budget.used() <= f.budget.limit());
    // Three whole segments, then smaller ones in what the sealed segments' unused tails
    // gave back.
    assert!(f.segments().len() >= 3, "{:?}", f.segments());
    w.flush().unwrap();
    assert!(!w.append(&meta(), &event(n, 200)).unwrap(), "still full");
    let mut r = f.reader();
    assert_eq!(drain(&mut r, usize::MAX).0, (0..n).collect::<Vec<_>>());
    assert!(w.append(&meta(), &event(n, 200)).unwrap(), "room again");
    w.flush().unwrap();
    assert_eq!(drain(&mut r, usize::MAX).0, vec![n]);
}

#[test]
fn writer_recovery_truncates_a_torn_tail_and_continues_seq() {
    let f = fixture_with(1 << 20, u64::MAX);
    let end;
    {
        let mut w = f.writer();
        append_all(&mut w, 0..10, |_| 100);
        end = w.end();
    }
    let path = f.seg_path(0);
    let len = std::fs::metadata(&path).unwrap().len();
    // Half a record: a valid header whose payload never made it, as a crash mid-write leaves.
    let mut torn = Vec::new();
    crate::queue::record::encode_record(&meta(), 10, &event(10, 100), &mut torn).unwrap();
    patch(&path, len, &torn[..torn.len() / 2]);
    let mut w = f.writer();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "torn tail cut"
    );
    assert_eq!((w.end(), w.next_seq()), (end, 10));
    append_all(&mut w, 10..12, |_| 100);
    let raw = std::fs::read(&path).unwrap();
    let mut h = [0u8; 32];
    h.copy_from_slice(&raw[(HDR + end) as usize..(HDR + end) as usize + 32]);
    assert_eq!(crate::queue::record::decode_header(&h).unwrap().seq, 10);
    let mut r = f.reader();
    assert_eq!(drain(&mut r, usize::MAX), ((0..12).collect(), 0));
}

#[test]
fn writer_recovery_keeps_valid_records_after_a_corrupt_one() {
    let f = fixture_with(1 << 20, u64::MAX);
    let rec = record_len(event(0, 100).len()) as u64;
    {
        let mut w = f.writer();
        append_all(&mut w, 0..10, |_| 100);
    }
    let path = f.seg_path(0);
    let at = HDR + 4 * rec + 40;
    patch(&path, at, &[read_byte(&path, at) ^ 0x04]);
    let len = std::fs::metadata(&path).unwrap().len();
    let w = f.writer();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "nothing cut");
    assert_eq!(w.next_seq(), 10);
    drop(w);
    let mut r = f.reader();
    let (events, corrupt) = drain(&mut r, usize::MAX);
    assert_eq!(events, [0, 1, 2, 3, 5, 6, 7, 8, 9]);
    assert_eq!(corrupt, 1);
}

#[test]
fn flipped_payload_bit_skips_that_record_only_and_counts_it() {
    let f = fixture();
    let rec = record_len(event(0, 100).len()) as u64;
    let mut w = f.writer();
    append_all(&mut w, 0..60, |_| 100);
    let path = f.seg_path(0);
    let at = HDR + 5 * rec + 50;
    patch(&path, at, &[read_byte(&path, at) ^ 0x01]);
    let mut r = f.reader();
    let (events, corrupt) = drain(&mut r, usize::MAX);
    let expected: Vec<usize> = (0..60).filter(|&i| i != 5).collect();
    assert_eq!((events, corrupt), (expected, 1));
}

#[test]
fn flipped_length_bit_resyncs_on_the_next_good_record() {
    let f = fixture();
    let rec = record_len(event(0, 100).len()) as u64;
    let mut w = f.writer();
    append_all(&mut w, 0..20, |_| 100);
    let path = f.seg_path(0);
    // The length field is covered only through the payload range; make it claim 8 KiB more.
    let at = HDR + 2 * rec + 1;
    patch(&path, at, &[read_byte(&path, at) ^ 0x20]);
    let mut r = f.reader();
    let (events, corrupt) = drain(&mut r, usize::MAX);
    let expected: Vec<usize> = (0..20).filter(|&i| i != 2).collect();
    assert_eq!((events, corrupt), (expected, 1));
}

#[test]
fn segment_truncated_in_the_middle_skips_its_rest_and_reads_the_next_segment() {
    let f = fixture();
    let rec = record_len(event(0, 100).len()) as u64;
    let mut w = f.writer();
    append_all(&mut w, 0..100, |_| 100);
    let per_seg = ((SEG - HDR) / rec) as usize;
    let segs = f.segments();
    assert!(segs.len() >= 3);
    // Cut the first segment in the middle of its 4th record (at an odd byte).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(f.seg_path(segs[0]))
        .unwrap();
    file.set_len(HDR + 3 * rec + 13).unwrap();
    let mut r = f.reader();
    let (events, corrupt) = drain(&mut r, 500);
    let expected: Vec<usize> = (0..100).filter(|&i| i < 3 || i >= per_seg).collect();
    assert_eq!((events, corrupt), (expected, 1));
}

#[test]
fn garbage_segment_never_stops_or_loops_the_reader() {
    let f = fixture();
    let mut w = f.writer();
    append_all(&mut w, 0..100, |_| 100);
    let segs = f.segments();
    let path = f.seg_path(segs[1]);
    let len = std::fs::metadata(&path).unwrap().len();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let junk: Vec<u8> = (0..len - HDR)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    patch(&path, HDR, &junk);
    let mut r = f.reader();
    let (events, corrupt) = drain(&mut r, 300);
    let rec = record_len(event(0, 100).len()) as u64;
    let per_seg = ((SEG - HDR) / rec) as usize;
    let expected: Vec<usize> = (0..100)
        .filter(|&i| !(per_seg..2 * per_seg).contains(&i))
        .collect();
    assert_eq!((events, corrupt), (expected, 1));
}

#[test]
fn damaged_header_of_a_sealed_segment_still_yields_its_records() {
    let f = fixture();
    let mut w = f.writer();
    append_all(&mut w, 0..100, |_| 100);
    patch(&f.seg_path(0), 0, b"garbage!");
    let mut r = f.reader();
    assert_eq!(drain(&mut r, usize::MAX), ((0..100).collect(), 0));
}

#[test]
fn unknown_segment_version_is_refused_in_words() {
    let f = fixture();
    drop(f.writer_with_records(3));
    let h = SegmentHeader {
        start: 0,
        capacity: SEG,
        first_seq: 0,
        created_us: 0,
        intake_id: 7,
    };
    let mut raw = h.encode();
    raw[8] = 9;
    let crc = crc32c::crc32c(&raw[..60]);
    raw[60..].copy_from_slice(&crc.to_le_bytes());
    patch(&f.seg_path(0), 0, &raw);
    let e = JournalWriter::open(&f.dir, 7, f.budget.clone(), f.opts.clone())
        .err()
        .unwrap();
    assert!(matches!(e, JournalError::BadSegmentHeader { .. }), "{e}");
    assert!(e.to_string().contains("version 9"), "{e}");
    assert!(e.to_string().contains("00000000000000000000.seg"), "{e}");
}

impl Fixture {
    fn writer_with_records(&self, n: usize) -> JournalWriter {
        let mut w = self.writer();
        append_all(&mut w, 0..n, |_| 100);
        w
    }
}

#[test]
fn foreign_files_in_the_journal_dir_are_ignored() {
    let f = fixture();
    std::fs::create_dir_all(&f.dir).unwrap();
    std::fs::write(f.dir.join("notes.txt"), b"hello").unwrap();
    std::fs::write(f.dir.join("123.seg"), b"not a segment name").unwrap();
    std::fs::create_dir(f.dir.join("00000000000000000008.seg")).unwrap();
    let listing = segment::list_dir(&f.dir).unwrap();
    assert_eq!(listing.foreign.len(), 3);
    let mut w = f.writer();
    append_all(&mut w, 0..30, |_| 100);
    let mut r = f.reader();
    assert_eq!(drain(&mut r, usize::MAX), ((0..30).collect(), 0));
    assert!(f.dir.join("notes.txt").exists());
}

#[test]
fn checkpoint_survives_reopen_and_is_never_ahead_of_delivery() {
    let mut f = fixture();
    f.opts.checkpoint_interval = Duration::from_secs(3600);
    let mut w = f.writer();
    append_all(&mut w, 0..10, |_| 100);
    let first_end;
    {
        let mut r = f.reader();
        let mut out = Vec::new();
        let a = r.read(r.committed(), 300, &mut out).unwrap().unwrap();
        let b = r.read(a.end, 300, &mut out).unwrap().unwrap();
        r.commit(a.end).unwrap();
        first_end = a.end;
        // Not yet due: the durable checkpoint lags (never leads) what was delivered.
        let on_disk = Checkpoint::load(&f.dir).unwrap().map_or(0, |c| c.position);
        assert!(on_disk <= r.committed());
        assert!(b.end > r.committed(), "read but not delivered");
    } // orderly close persists
    let c = Checkpoint::load(&f.dir).unwrap().unwrap();
    assert_eq!(c.position, first_end);
    assert_eq!(c.next_seq, event_numbers_count(first_end));
    let mut r = f.reader();
    assert_eq!(r.committed(), first_end);
    let (events, _) = drain(&mut r, usize::MAX);
    assert_eq!(events.first(), Some(&(c.next_seq as usize)));
    assert_eq!(events.last(), Some(&9));
}

fn event_numbers_count(end: u64) -> u64 {
    end / record_len(event(0, 100).len()) as u64
}

#[test]
fn second_writer_and_second_reader_are_refused() {
    let f = fixture();
    let _w = f.writer();
    let e = JournalWriter::open(&f.dir, 7, f.budget.clone(), f.opts.clone())
        .err()
        .unwrap();
    assert!(
        matches!(e, JournalError::Locked { role: "writer", .. }),
        "{e}"
    );
    assert!(e.is_retryable());
    assert!(e.to_string().contains("journal-tcp-20516"), "{e}");
    let _r = f.reader();
    let e = JournalReader::open(&f.dir, f.budget.clone(), f.opts.clone())
        .err()
        .unwrap();
    assert!(
        matches!(e, JournalError::Locked { role: "reader", .. }),
        "{e}"
    );
}

#[test]
fn reader_alone_after_restart_reads_everything() {
    let f = fixture();
    {
        let mut w = f.writer();
        append_all(&mut w, 0..80, |i| 50 + i);
    }
    // Simulate a reboot: the state file is derived data and may be anything.
    std::fs::write(f.dir.join(STATE_FILE), b"stale").unwrap();
    let mut r = f.reader();
    assert_eq!(drain(&mut r, 1000), ((0..80).collect(), 0));
}

#[test]
fn reader_follows_writers_that_come_and_go() {
    let f = fixture();
    let mut r = f.reader();
    let mut w = f.writer();
    append_all(&mut w, 0..5, |_| 100);
    assert_eq!(drain(&mut r, usize::MAX).0, vec![0, 1, 2, 3, 4]);
    append_all(&mut w, 5..8, |_| 100);
    drop(w); // the ingest worker dies after a flush
    assert_eq!(drain(&mut r, usize::MAX).0, vec![5, 6, 7]);
    {
        let mut w = f.writer(); // a new life appends and dies
        append_all(&mut w, 8..40, |_| 100);
    }
    assert_eq!(drain(&mut r, usize::MAX).0, (8..40).collect::<Vec<_>>());
    let w = f.writer();
    assert_eq!(w.next_seq(), 40);
    assert!(w.is_drained());
}

#[test]
fn writer_continues_at_the_checkpoint_when_a_power_cut_lost_delivered_data() {
    let f = fixture_with(1 << 20, u64::MAX);
    let delivered;
    {
        let mut w = f.writer();
        append_all(&mut w, 0..10, |_| 100);
        let mut r = f.reader();
        assert_eq!(drain(&mut r, usize::MAX).0.len(), 10);
        delivered = r.committed();
    }
    // The power cut: the segment's data never reached the disk, the checkpoint did.
    std::fs::OpenOptions::new()
        .write(true)
        .open(f.seg_path(0))
        .unwrap()
        .set_len(HDR)
        .unwrap();
    let mut w = f.writer();
    assert_eq!(w.end(), delivered);
    append_all(&mut w, 10..15, |_| 100);
    assert_eq!(f.segments(), vec![0, delivered]);
    let mut r = f.reader();
    assert_eq!(drain(&mut r, usize::MAX).0, (10..15).collect::<Vec<_>>());
    assert_eq!(f.segments(), vec![delivered]);
}

#[test]
fn sync_always_round_trips() {
    let mut f = fixture();
    f.opts.sync = SyncPolicy::Always;
    let mut w = f.writer();
    append_all(&mut w, 0..50, |_| 100);
    w.sync_if_due().unwrap();
    w.close().unwrap();
    let mut r = f.reader();
    assert_eq!(drain(&mut r, usize::MAX).0.len(), 50);
}

#[test]
fn payload_larger_than_a_segment_is_refused() {
    let f = fixture();
    let mut w = f.writer();
    let max = w.max_payload();
    assert_eq!(max as u64, SEG - HDR - 32);
    assert!(w.append(&meta(), &vec![b'a'; max]).unwrap());
    let e = w.append(&meta(), &vec![b'a'; max + 1]).unwrap_err();
    assert!(matches!(e, JournalError::PayloadTooLarge { .. }), "{e}");
    w.flush().unwrap();
    let mut r = f.reader();
    let mut out = Vec::new();
    let span = r.read(0, 1, &mut out).unwrap().unwrap();
    assert_eq!((span.records, out.len()), (1, max));
}

#[test]
fn read_position_outside_the_range_is_an_error() {
    let f = fixture();
    let mut w = f.writer();
    append_all(&mut w, 0..3, |_| 100);
    let mut r = f.reader();
    let mut out = Vec::new();
    let e = r.read(w.end() + 8, 100, &mut out).unwrap_err();
    assert!(matches!(e, JournalError::PositionOutOfRange { .. }), "{e}");
    assert!(r.read(4, 100, &mut out).is_err(), "unaligned");
    assert_eq!(r.read(w.end(), 100, &mut out).unwrap(), None::<ReadSpan>);
}

#[test]
fn unusable_spool_dir_is_an_error_naming_it() {
    let f = fixture();
    let file = f.dir.parent().unwrap().join("not-a-dir");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"x").unwrap();
    let dir = file.join("journal-udp-1");
    let e = JournalWriter::open(&dir, 1, f.budget.clone(), f.opts.clone())
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            JournalError::Directory { .. } | JournalError::SharedFile(_)
        ),
        "{e}"
    );
    assert!(e.to_string().contains("journal-udp-1"), "{e}");
}

#[test]
fn disk_full_errors_are_recognised_as_such() {
    let e = JournalError::Append {
        path: "x".into(),
        source: std::io::Error::from_raw_os_error(libc::ENOSPC),
    };
    assert!(e.is_disk_full() && e.is_retryable());
    let e = JournalError::Append {
        path: "x".into(),
        source: std::io::Error::from_raw_os_error(libc::EIO),
    };
    assert!(!e.is_disk_full() && !e.is_retryable());
}

#[test]
fn disk_budget_is_shared_through_its_file_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("budget");
    let a = DiskBudget::create(&path, 1000, 100).unwrap();
    let b = DiskBudget::open(&path).unwrap();
    assert!(a.try_reserve(800));
    assert_eq!(b.used(), 900);
    assert!(!b.try_reserve(101));
    assert!(b.try_reserve(100));
    b.release(5000);
    assert_eq!(a.used(), 0, "release saturates");
    b.set_limit(10);
    assert_eq!(a.limit(), 10);
    std::fs::write(tmp.path().join("other"), vec![0u8; 4096]).unwrap();
    let e = DiskBudget::open(&tmp.path().join("other")).unwrap_err();
    assert!(
        e.to_string().contains("not a sekoia-forwarder disk budget"),
        "{e}"
    );
}

#[test]
fn disk_budget_is_exact_under_contention() {
    let tmp = tempfile::tempdir().unwrap();
    let budget = DiskBudget::create(&tmp.path().join("budget"), 10_000, 0).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let b = DiskBudget::open(budget.path()).unwrap();
            std::thread::spawn(move || (0..10_000).filter(|_| b.try_reserve(1)).count())
        })
        .collect();
    let won: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!((won, budget.used()), (10_000, 10_000));
}

#[test]
fn journal_handles_can_move_to_another_thread() {
    fn is_send<T: Send>() {}
    is_send::<JournalWriter>();
    is_send::<JournalReader>();
    is_send::<DiskBudget>();
}

#[test]
fn golden_bytes_pin_the_segment_header() {
    let h = SegmentHeader {
        start: 0x0102_0304_0506_0708,
        capacity: 64 << 20,
        first_seq: 42,
        created_us: 0x1122_3344_5566_7788,
        intake_id: 0x0a0b,
    };
    #[rustfmt::skip]
    let golden: [u8; SEGMENT_HEADER_LEN] = [
        b'S', b'K', b'F', b'J', b'S', b'E', b'G', 0x00, // magic
        0x01, 0x00, 0x00, 0x00,                         // version 1
        0x40, 0x00, 0x00, 0x00,                         // header_len 64
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // start
        0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, // capacity 64 MiB
        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first_seq 42
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // created_us
        0x0b, 0x0a,                                     // intake_id
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // reserved
        0xce, 0x11, 0x64, 0xb9,                         // crc32c of bytes 0..60 (bitwise reference)
    ];
    let enc = h.encode();
    assert_eq!(enc, golden, "{enc:02x?}");
    assert_eq!(SegmentHeader::decode(&golden).unwrap(), h);
    assert_eq!(segment_file_name(4096), "00000000000000004096.seg");
}

#[test]
fn golden_bytes_pin_the_format_1_checkpoint_file() {
    let c = Checkpoint {
        position: 0x0000_0001_0000_0008,
        next_seq: 7,
        written_us: 0x1122_3344_5566_7788,
    };
    #[rustfmt::skip]
    let golden: [u8; CHECKPOINT_V1_LEN] = [
        b'S', b'K', b'F', b'J', b'C', b'K', b'P', b'T', // magic
        0x01, 0x00, 0x00, 0x00,                         // version 1
        0x60, 0x6e, 0x04, 0xc7,                         // crc32c of bytes 16..48 (bitwise reference)
        0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // position
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // next_seq
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // written_us
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // reserved
    ];
    assert_eq!(c.encode_v1(), golden);
    assert_eq!(Checkpoint::decode_v1(&golden).unwrap(), c);
    let mut bad = golden;
    bad[20] ^= 1;
    assert!(Checkpoint::decode_v1(&bad).is_err());
}

/// CRC-32C by the bit, to check the library's.
fn crc32c_bitwise(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn golden_bytes_pin_the_checkpoint_slot() {
    let c = Checkpoint {
        position: 0x0000_0001_0000_0008,
        next_seq: 7,
        written_us: 0x1122_3344_5566_7788,
    };
    let enc = c.encode_slot(5);
    let mut golden = [0u8; SLOT_LEN];
    golden[..8].copy_from_slice(b"SKFJCKP2");
    golden[8] = 2; // version
    golden[16] = 5; // seq
    golden[24..32].copy_from_slice(&[0x08, 0, 0, 0, 0x01, 0, 0, 0]); // position
    golden[32] = 7; // next_seq
    golden[40..48].copy_from_slice(&[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    let crc = crc32c_bitwise(&golden[16..]);
    golden[12..16].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(enc, golden, "{enc:02x?}");
    assert_eq!(Checkpoint::decode_slot(&golden).unwrap(), (5, c));
    let mut bad = golden;
    bad[30] ^= 1;
    assert!(Checkpoint::decode_slot(&bad)
        .unwrap_err()
        .contains("CRC-32C"));
}

fn ckpt(position: u64) -> Checkpoint {
    Checkpoint {
        position,
        next_seq: 0,
        written_us: 0,
    }
}

fn checkpoint_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap()
}

#[test]
fn checkpoint_slots_alternate_and_the_newer_valid_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut file, found) = CheckpointFile::open(dir).unwrap();
    assert_eq!(found, None);
    assert_eq!(
        checkpoint_bytes(dir),
        vec![0u8; CHECKPOINT_FILE_LEN as usize],
        "preallocated"
    );
    let ino = std::fs::metadata(dir.join(CHECKPOINT_FILE)).unwrap().ino();
    for pos in [8, 16, 24] {
        file.store(&ckpt(pos)).unwrap();
        assert_eq!(Checkpoint::load(dir).unwrap().unwrap().position, pos);
    }
    // Written in place: same inode, same size, no temporary file.
    let meta = std::fs::metadata(dir.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!((meta.ino(), meta.len()), (ino, CHECKPOINT_FILE_LEN));
    assert!(!dir.join(CHECKPOINT_TMP_FILE).exists());

    // Store 3 (position 24) is in slot 1, store 2 (position 16) in slot 0. A torn slot 1:
    // slot 0 wins.
    let mut bytes = checkpoint_bytes(dir);
    bytes[512 + 30] ^= 0xff;
    assert_eq!(decode_file(&bytes).unwrap().unwrap().1.position, 16);
    // A torn slot 0 instead: slot 1 wins.
    let mut bytes = checkpoint_bytes(dir);
    bytes[20] ^= 0xff;
    assert_eq!(decode_file(&bytes).unwrap().unwrap().1.position, 24);
    // Both bad: no checkpoint (the reader starts at the oldest segment).
    bytes[512 + 30] ^= 0xff;
    std::fs::write(dir.join(CHECKPOINT_FILE), &bytes).unwrap();
    assert!(decode_file(&bytes).is_err());
    assert_eq!(Checkpoint::load(dir).unwrap(), None);
}

#[test]
fn a_store_that_fails_half_way_leaves_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut file, _) = CheckpointFile::open(dir).unwrap();
    file.store(&ckpt(8)).unwrap(); // seq 1, slot 1
    file.store(&ckpt(16)).unwrap(); // seq 2, slot 0
                                    // The next store goes to slot 1; tear it as a crash would (half of it written).
    let mut bytes = checkpoint_bytes(dir);
    let half = ckpt(24).encode_slot(3);
    bytes[512..512 + 32].copy_from_slice(&half[..32]);
    std::fs::write(dir.join(CHECKPOINT_FILE), &bytes).unwrap();
    assert_eq!(Checkpoint::load(dir).unwrap().unwrap().position, 16);
}

#[test]
fn a_format_1_checkpoint_is_read_once_then_upgraded_in_place() {
    let f = fixture();
    {
        let mut w = f.writer();
        append_all(&mut w, 0..10, |_| 100);
    }
    let old = ckpt(3 * rec100());
    std::fs::write(f.dir.join(CHECKPOINT_FILE), old.encode_v1()).unwrap();
    std::fs::write(f.dir.join(CHECKPOINT_TMP_FILE), b"left by an older build").unwrap();
    {
        let r = f.reader();
        assert_eq!(r.committed(), old.position);
        // Upgraded in place: 1024 bytes, the old bytes still at 0 until the second store.
        let bytes = checkpoint_bytes(&f.dir);
        assert_eq!(bytes.len() as u64, CHECKPOINT_FILE_LEN);
        assert_eq!(
            decode_file(&bytes).unwrap().unwrap().1,
            old,
            "an interrupted upgrade reads format 1"
        );
        assert!(!f.dir.join(CHECKPOINT_TMP_FILE).exists());
    }
    let mut r = f.reader();
    assert_eq!(r.committed(), old.position);
    assert_eq!(drain(&mut r, usize::MAX).0, (3..10).collect::<Vec<_>>());
    r.sync_checkpoint().unwrap();
    let bytes = checkpoint_bytes(&f.dir);
    assert!(
        Checkpoint::decode_slot(&bytes[512..512 + SLOT_LEN]).is_ok(),
        "first store: slot 1"
    );
    assert_eq!(
        Checkpoint::load(&f.dir).unwrap().unwrap().position,
        r.committed()
    );
}

#[test]
fn the_writer_deletes_its_delivered_active_segment_when_the_budget_is_exhausted() {
    // A budget of one segment: the active segment is the only one, and once it is full and
    // delivered, only deleting it makes room.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let budget = DiskBudget::create(&tmp.path().join("budget"), SEG, 0).unwrap();
    let opts = JournalOptions {
        segment_bytes: SEG,
        checkpoint_interval: Duration::ZERO,
        ..JournalOptions::default()
    };
    let mut w = JournalWriter::open(&dir, 1, budget.clone(), opts.clone()).unwrap();
    let mut r = JournalReader::open(&dir, budget.clone(), opts).unwrap();
    let mut seq = 0usize;
    let mut delivered = Vec::new();
    for _round in 0..3 {
        let meta = RecordMeta {
            intake_id: 1,
            recv_time_us: 0,
            flags: 0,
        };
        // Fill until held back.
        while w.append(&meta, &event(seq, 100)).unwrap() {
            seq += 1;
        }
        w.flush().unwrap();
        assert_eq!(budget.used(), SEG, "one segment charged");
        delivered.extend(drain(&mut r, usize::MAX).0);
        r.sync_checkpoint().unwrap();
        // Delivered and durable: the next append deletes the active segment and rolls.
        assert!(
            w.append(&meta, &event(seq, 100)).unwrap(),
            "held back for good"
        );
        seq += 1;
    }
    w.flush().unwrap();
    delivered.extend(drain(&mut r, usize::MAX).0);
    assert_eq!(delivered, (0..seq).collect::<Vec<_>>());
    assert_eq!(budget.used(), SEG);
}

// ---- Positions and names that do not make sense (issue 8: no stuck states) ----

/// Bytes one `event(i, 100)` record occupies.
fn rec100() -> u64 {
    record_len(event(0, 100).len()) as u64
}

/// Records of `event(_, 100)` per segment of the default fixture.
fn per_seg() -> usize {
    ((SEG - HDR) / rec100()) as usize
}

fn plant_checkpoint(dir: &Path, position: u64) {
    ckpt(position).store(dir).unwrap();
}

fn quarantined(f: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(f.dir.join(QUARANTINE_DIR)) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Of 100 records, everything but the second segment's is read, that segment counts as one
/// corruption, and it is moved to quarantine.
fn assert_only_second_segment_lost_and_moved_aside(
    f: &Fixture,
    r: &mut JournalReader,
    second: u64,
) {
    let (events, corrupt) = drain_retrying(r, 500);
    let expected: Vec<usize> = (0..100)
        .filter(|&i| !(per_seg()..2 * per_seg()).contains(&i))
        .collect();
    assert_eq!((events, corrupt), (expected, 1));
    assert_eq!(quarantined(f), vec![segment_file_name(second)]);
}

/// Like `drain`, but a read error is retried (as the uplink does) up to 10 times in a row
/// at the same position before the journal is declared stuck.
fn drain_retrying(r: &mut JournalReader, max_bytes: usize) -> (Vec<usize>, u32) {
    let mut events = Vec::new();
    let mut corrupt = 0;
    let mut pos = r.committed();
    let mut out = Vec::new();
    let mut errors = 0;
    loop {
        match r.read(pos, max_bytes, &mut out) {
            Ok(Some(span)) => {
                errors = 0;
                assert_eq!(span.start, pos);
                events.extend(event_numbers(&out));
                out.clear();
                corrupt += span.corrupt_skipped;
                pos = span.end;
                r.commit(pos).unwrap();
            }
            Ok(None) => return (events, corrupt),
            Err(e) => {
                errors += 1;
                assert!(errors < 10, "stuck at {pos}: {e}");
            }
        }
    }
}

#[test]
fn misaligned_checkpoint_resends_the_record_it_falls_in() {
    let f = fixture();
    drop(f.writer_with_records(10));
    plant_checkpoint(&f.dir, 3 * rec100() + 4);
    let mut r = f.reader();
    assert_eq!(r.committed(), 3 * rec100());
    assert_eq!(drain_retrying(&mut r, 500), ((3..10).collect(), 0));
    drop(r);
    let c = Checkpoint::load(&f.dir).unwrap().unwrap();
    assert_eq!(
        c.position,
        10 * rec100(),
        "the repaired checkpoint moved on"
    );
}

#[test]
fn checkpoint_inside_a_record_resends_that_record() {
    let f = fixture();
    drop(f.writer_with_records(10));
    // 8-aligned, but 16 bytes into the 4th record: not a record boundary.
    plant_checkpoint(&f.dir, 3 * rec100() + 16);
    let mut r = f.reader();
    assert_eq!(r.committed(), 3 * rec100());
    assert_eq!(drain_retrying(&mut r, 500), ((3..10).collect(), 0));
}

#[test]
fn checkpoint_inside_a_record_of_a_later_segment_resends_that_record() {
    let f = fixture();
    drop(f.writer_with_records(100));
    let segs = f.segments();
    plant_checkpoint(&f.dir, segs[2] + 2 * rec100() + 40);
    let mut r = f.reader();
    assert_eq!(r.committed(), segs[2] + 2 * rec100());
    let first = 2 * per_seg() + 2;
    assert_eq!(drain_retrying(&mut r, 500), ((first..100).collect(), 0));
}

#[test]
fn checkpoint_beyond_the_files_restarts_at_the_oldest_segment() {
    let f = fixture();
    drop(f.writer_with_records(100));
    let segs = f.segments();
    plant_checkpoint(&f.dir, 1 << 30);
    let mut r = f.reader();
    assert_eq!(r.committed(), 0);
    assert_eq!(
        f.segments(),
        segs,
        "nothing deleted on the bad checkpoint's word"
    );
    assert_eq!(drain_retrying(&mut r, 500), ((0..100).collect(), 0));
    drop(r);
    // The writer continues after the data, not at the bad checkpoint.
    let mut w = f.writer();
    append_all(&mut w, 100..110, |_| 100);
    let mut r = f.reader();
    assert_eq!(drain_retrying(&mut r, 500), ((100..110).collect(), 0));
}

#[test]
fn checkpoint_near_u64_max_is_ignored_by_reader_and_writer() {
    for position in [u64::MAX - 7, u64::MAX, 1 << 63] {
        let f = fixture();
        drop(f.writer_with_records(40));
        plant_checkpoint(&f.dir, position);
        let mut r = f.reader();
        assert_eq!(r.committed(), 0, "{position}");
        let mut w = f.writer();
        append_all(&mut w, 40..45, |_| 100);
        assert_eq!(drain_retrying(&mut r, 500), ((0..45).collect(), 0));
        assert!(w.end() < 1 << 20, "{position}: writer end {}", w.end());
    }
}

#[test]
fn checkpoint_in_an_empty_journal_is_rounded_up_to_a_record_boundary() {
    let f = fixture();
    std::fs::create_dir_all(&f.dir).unwrap();
    plant_checkpoint(&f.dir, 4100);
    let mut r = f.reader();
    assert_eq!(r.committed(), 4104);
    let mut w = f.writer();
    assert_eq!(w.end(), 4104);
    append_all(&mut w, 0..5, |_| 100);
    assert_eq!(drain_retrying(&mut r, 500), ((0..5).collect(), 0));
}

#[test]
fn misaligned_segment_name_is_moved_to_quarantine_and_reading_goes_on() {
    let f = fixture();
    drop(f.writer_with_records(100));
    let segs = f.segments();
    let bad = segment_file_name(segs[1] + 4);
    std::fs::rename(f.seg_path(segs[1]), f.dir.join(&bad)).unwrap();
    let mut r = f.reader();
    let (events, corrupt) = drain_retrying(&mut r, 500);
    let expected: Vec<usize> = (0..100)
        .filter(|&i| !(per_seg()..2 * per_seg()).contains(&i))
        .collect();
    assert_eq!((events, corrupt), (expected, 0));
    assert_eq!(quarantined(&f), vec![bad]);
    let mut out = Vec::new();
    assert_eq!(r.read(r.committed(), 500, &mut out).unwrap(), None);
}

#[test]
fn segment_named_near_u64_max_is_moved_to_quarantine() {
    for start in [u64::MAX - 7, u64::MAX - 4095, 1 << 63] {
        let f = fixture();
        drop(f.writer_with_records(40));
        let bad = segment_file_name(start);
        std::fs::copy(f.seg_path(0), f.dir.join(&bad)).unwrap();
        let mut r = f.reader();
        assert_eq!(drain_retrying(&mut r, 500), ((0..40).collect(), 0));
        let mut w = f.writer();
        append_all(&mut w, 40..45, |_| 100);
        assert_eq!(drain_retrying(&mut r, 500), ((40..45).collect(), 0));
        assert_eq!(quarantined(&f), vec![bad], "{start}");
    }
}

#[test]
fn writer_alone_moves_an_absurd_newest_segment_aside() {
    let f = fixture();
    drop(f.writer_with_records(10));
    let bad = segment_file_name(u64::MAX - 7);
    std::fs::copy(f.seg_path(0), f.dir.join(&bad)).unwrap();
    let mut w = f.writer();
    assert_eq!(w.end(), 10 * rec100());
    append_all(&mut w, 10..12, |_| 100);
    assert_eq!(quarantined(&f), vec![bad]);
    let mut r = f.reader();
    assert_eq!(drain_retrying(&mut r, 500), ((0..12).collect(), 0));
}

#[test]
fn segment_overlapping_the_records_of_the_previous_one_is_moved_to_quarantine() {
    let f = fixture();
    drop(f.writer_with_records(100));
    let segs = f.segments();
    // A copy of segment 2 under a name that lies inside segment 0's records.
    let bad = segment_file_name(5 * rec100());
    std::fs::copy(f.seg_path(segs[2]), f.dir.join(&bad)).unwrap();
    let mut r = f.reader();
    assert_eq!(drain_retrying(&mut r, 500), ((0..100).collect(), 0));
    assert_eq!(quarantined(&f), vec![bad]);
}

#[test]
fn segment_longer_than_its_records_does_not_push_its_successor_aside() {
    let f = fixture();
    drop(f.writer_with_records(100));
    let segs = f.segments();
    // Zeros appended to a sealed segment (a damaged file system): they overlap the next
    // segment's range but hold no record, so the next segment keeps its place.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(f.seg_path(segs[0]))
        .unwrap();
    file.set_len(SEG + 512).unwrap();
    let mut r = f.reader();
    let (events, _) = drain_retrying(&mut r, 500);
    assert_eq!(events, (0..100).collect::<Vec<_>>());
    assert!(quarantined(&f).is_empty());
}

#[test]
fn gap_between_segments_is_jumped_over() {
    let f = fixture();
    drop(f.writer_with_records(100));
    let segs = f.segments();
    let last = *segs.last().unwrap();
    std::fs::rename(f.seg_path(last), f.seg_path(last + 8192)).unwrap();
    let mut r = f.reader();
    assert_eq!(drain_retrying(&mut r, 500), ((0..100).collect(), 0));
    assert!(quarantined(&f).is_empty());
}

#[test]
fn unknown_version_of_a_sealed_segment_is_moved_aside_and_reading_goes_on() {
    let f = fixture();
    drop(f.writer_with_records(100));
    let segs = f.segments();
    let h = SegmentHeader {
        start: segs[1],
        capacity: SEG,
        first_seq: 0,
        created_us: 0,
        intake_id: 7,
    };
    let mut raw = h.encode();
    raw[8] = 9;
    let crc = crc32c::crc32c(&raw[..60]);
    raw[60..].copy_from_slice(&crc.to_le_bytes());
    patch(&f.seg_path(segs[1]), 0, &raw);
    let mut r = f.reader();
    assert_only_second_segment_lost_and_moved_aside(&f, &mut r, segs[1]);
}

#[test]
fn unreadable_sealed_segment_is_moved_aside_after_repeated_failures() {
    let f = fixture();
    drop(f.writer_with_records(100));
    let segs = f.segments();
    let mut r = f.reader();
    // After the listing, the segment becomes something that cannot be read (EISDIR stands
    // in for a bad sector: an error that every retry meets again).
    std::fs::remove_file(f.seg_path(segs[1])).unwrap();
    std::fs::create_dir(f.seg_path(segs[1])).unwrap();
    assert_only_second_segment_lost_and_moved_aside(&f, &mut r, segs[1]);
}

#[test]
fn checkpoint_decode_refuses_absurd_positions_and_keeps_misaligned_ones() {
    let decode = |c: Checkpoint| Checkpoint::decode_slot(&c.encode_slot(1)).map(|(_, c)| c);
    let e = decode(ckpt(MAX_POSITION + 8)).unwrap_err();
    assert!(e.contains("beyond"), "{e}");
    assert_eq!(decode(ckpt(12)).unwrap().position, 12);
    assert_eq!(decode(ckpt(MAX_POSITION)).unwrap().position, MAX_POSITION);
}

/// `cargo test --release -p sekoia-shared --lib journal_bench -- --ignored --nocapture`
#[test]
#[ignore]
fn journal_bench() {
    fn rss_bytes() -> u64 {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = s
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }
    const N: usize = 1_000_000;
    for (name, sync) in [
        ("batch", SyncPolicy::default()),
        ("always", SyncPolicy::Always),
    ] {
        let tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let budget = DiskBudget::create(&tmp.path().join("budget"), u64::MAX, 0).unwrap();
        let dir = tmp.path().join("journal-tcp-1");
        let opts = JournalOptions {
            sync,
            ..JournalOptions::default()
        };
        let ev = event(0, 300 - 4);
        assert_eq!(ev.len(), 300);
        let rss0 = rss_bytes();
        let mut w = JournalWriter::open(&dir, 1, budget.clone(), opts.clone()).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..N {
            assert!(w.append(&meta(), &ev).unwrap());
        }
        w.sync().unwrap();
        let append = t.elapsed();
        let rss1 = rss_bytes();
        let mut r = JournalReader::open(&dir, budget.clone(), opts).unwrap();
        let t = std::time::Instant::now();
        let mut out = Vec::with_capacity(1 << 20);
        let (mut pos, mut n) = (r.committed(), 0usize);
        while let Some(span) = r.read(pos, 1 << 20, &mut out).unwrap() {
            n += span.records as usize;
            pos = span.end;
            out.clear();
            r.commit(pos).unwrap();
        }
        r.sync_checkpoint().unwrap();
        let drain = t.elapsed();
        assert_eq!(n, N);
        let rate = |d: Duration| N as f64 / d.as_secs_f64();
        println!(
            "journal_bench[{name}]: {N} events of 300 B ({} B on disk each): append {:.0} msg/s ({:.0} MB/s), drain+commit {:.0} msg/s ({:.0} MB/s)",
            record_len(300),
            rate(append),
            rate(append) * 300.0 / 1e6,
            rate(drain),
            rate(drain) * 300.0 / 1e6,
        );
        println!(
            "journal_bench[{name}]: RSS grew {} bytes while {N} events were queued: {:.3} bytes of RAM per queued event",
            rss1.saturating_sub(rss0),
            rss1.saturating_sub(rss0) as f64 / N as f64
        );
    }
}

#[test]
fn the_budget_in_force_is_the_smaller_of_disk_space_and_the_file_system_room() {
    let tmp = tempfile::tempdir().unwrap();
    let room = FsRoom::of(tmp.path()).unwrap();
    assert!(room.reserve <= 256 << 20 && room.reserve <= room.size / 32);
    // DISK_SPACE far beyond the disk: the file system's room is in force.
    let huge = DiskBudget::create(&tmp.path().join("a"), u64::MAX / 4, 4096).unwrap();
    huge.apply_fs(tmp.path()).unwrap();
    let f = huge.figures();
    assert_eq!((f.configured, f.used), (u64::MAX / 4, 4096));
    let expected = FsRoom::of(tmp.path()).unwrap().room_for_journals(4096);
    // Other processes write to this disk meanwhile: the same figure within a few MiB.
    assert!(
        f.in_force.abs_diff(expected) < 64 << 20,
        "{f:?} vs {expected}"
    );
    assert!(!huge.try_reserve(f.in_force.saturating_sub(4096) + 1));
    // DISK_SPACE smaller than the disk: DISK_SPACE is in force.
    let small = DiskBudget::create(&tmp.path().join("b"), 1 << 20, 0).unwrap();
    small.apply_fs(tmp.path()).unwrap();
    assert_eq!(small.figures().in_force, 1 << 20);
    // A missing spool directory is measured on its nearest existing parent (`check`).
    assert!(FsRoom::of(&tmp.path().join("not/yet")).is_ok());
}
