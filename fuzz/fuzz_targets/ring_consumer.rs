//! The ring consumer (`queue::RingConsumer`) over arbitrary ring memory.
//!
//! Each input is a small program. Either the whole ring file is the fuzzer's bytes, or a
//! real ring is created (`Ring::create_or_open`), filled by the real producer, and then
//! damaged: bytes of the data area or header overwritten, records with valid CRCs planted at
//! chosen offsets (lying lengths, kinds, sequence numbers), `head` and `committed` set to
//! chosen values. A consumer attaches and reads to the end with chosen `until` and
//! `max_bytes`, committing as it goes, while the program keeps damaging the memory between
//! reads, as a broken or hostile producer could. Errors are fine; a panic, a read that does
//! not advance or breaks the read contract, or a read that never ends is a bug.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sekoia_fuzz::{scratch_dir, write_at, Choices};
use sekoia_shared::queue::record::encode_record;
use sekoia_shared::queue::{RecordMeta, Ring, RingConsumer, RingProducer};

/// The ring file format (shared/src/queue/ring/layout.rs): data after a 4096-byte header,
/// `head` and `committed` words in it.
const HEADER_LEN: u64 = 4096;
const OFF_HEAD: u64 = 128;
const OFF_COMMITTED: u64 = 256;
const MAX_READS: usize = 5_000;

const META: RecordMeta = RecordMeta {
    intake_id: 9,
    recv_time_us: 1_700_000_000_000_000,
    flags: 0,
};

fn fill(path: &Path, c: &mut Choices<'_>) {
    let Ok(mut p) = RingProducer::attach(path) else {
        return;
    };
    let count = c.u8() % 64;
    for i in 0..count {
        let len = usize::from(c.u8());
        let payload = vec![b'a' + i % 26; len];
        let _ = p.try_push(&META, &payload);
        if c.u8() % 4 == 0 {
            p.publish();
        }
    }
    p.publish();
}

/// A value near `base` (aligned or not) or anything at all.
fn near(base: u64, c: &mut Choices<'_>) -> u64 {
    let delta = i64::from(c.u16() as i16);
    match c.u8() % 4 {
        0 => base.wrapping_add_signed(delta * 8),
        1 => base.wrapping_add_signed(delta),
        2 => c.u64() & !7,
        _ => c.u64(),
    }
}

fn read_u64(path: &Path, off: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.read_exact_at(&mut b, off);
    }
    u64::from_le_bytes(b)
}

fn damage(path: &Path, capacity: u64, c: &mut Choices<'_>, steps: usize) {
    for _ in 0..steps {
        if c.is_empty() {
            return;
        }
        match c.u8() % 6 {
            0 => {
                let off = u64::from(c.u32()) % capacity;
                let bytes = c.bytes(64);
                let bytes = &bytes[..bytes.len().min((capacity - off) as usize)];
                write_at(path, HEADER_LEN + off, bytes);
            }
            1 => {
                let v = near(read_u64(path, OFF_HEAD), c);
                write_at(path, OFF_HEAD, &v.to_le_bytes());
            }
            2 => {
                let v = near(read_u64(path, OFF_COMMITTED), c);
                write_at(path, OFF_COMMITTED, &v.to_le_bytes());
            }
            3 => {
                let off = (u64::from(c.u32()) % capacity) & !7;
                let mut rec = Vec::new();
                let payload = c.bytes(300).to_vec();
                if encode_record(&META, c.u64(), &payload, &mut rec).is_ok() {
                    // Sometimes lie about the length or the kind, keeping the rest valid.
                    match c.u8() % 4 {
                        0 => rec[0..4].copy_from_slice(&c.u32().to_le_bytes()),
                        1 => rec[9] = c.u8(),
                        _ => {}
                    }
                    rec.truncate((capacity - off) as usize);
                    write_at(path, HEADER_LEN + off, &rec);
                }
            }
            4 => {
                let off = u64::from(c.u16()) % HEADER_LEN;
                let bytes = c.bytes(16);
                let bytes = &bytes[..bytes.len().min((HEADER_LEN - off) as usize)];
                write_at(path, off, bytes);
            }
            _ => {}
        }
    }
}

fn consume(path: &Path, capacity: u64, c: &mut Choices<'_>) {
    let Ok(mut consumer) = RingConsumer::attach(path) else {
        return;
    };
    let mut from = consumer.committed();
    let mut out = Vec::new();
    let mut idle = 0;
    for _ in 0..MAX_READS {
        let until = match c.u8() % 4 {
            1 => Some(from + u64::from(c.u16())),
            _ => None,
        };
        let max_bytes = usize::from(c.u16()) + 1;
        out.clear();
        match consumer.read(from, until, max_bytes, &mut out) {
            Ok(Some(span)) => {
                assert_eq!(span.start, from, "span does not start where asked");
                assert!(
                    span.end > from && span.end % 8 == 0,
                    "read did not advance to a boundary"
                );
                assert!(until.is_none_or(|u| span.end <= u), "read past `until`");
                assert_eq!(out.len() as u64, span.bytes, "payload bytes miscounted");
                from = span.end;
                if c.u8() % 2 == 0 {
                    consumer.commit(from);
                }
            }
            Ok(None) if idle < 3 && !c.is_empty() => idle += 1,
            Ok(None) | Err(_) => return,
        }
        if c.u8() % 4 == 0 {
            damage(path, capacity, c, 1);
        }
    }
    panic!("the consumer did not reach the end in {MAX_READS} reads");
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    let tmp = scratch_dir();
    let path = tmp.path().join("intake-tcp-514.ring");
    let mode = c.u8();
    if mode % 8 == 0 {
        // The whole file is the fuzzer's: validation on attach is under test.
        write_at(&path, 0, c.rest());
        let mut none = Choices::new(&[]);
        consume(&path, 256, &mut none);
        return;
    }
    let capacity = 256 + u64::from(c.u8()) * 8;
    let Ok(info) = Ring::create_or_open(&path, capacity, 9) else {
        return;
    };
    fill(&path, &mut c);
    damage(&path, info.capacity, &mut c, 8);
    consume(&path, info.capacity, &mut c);
});
