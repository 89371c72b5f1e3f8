//! The journal reader (`queue::JournalReader`) over a damaged or hostile journal folder.
//!
//! Each input is a small program: write some records with the real writer (so the files
//! start out valid, whatever their format), maybe read and commit some (a real checkpoint),
//! then damage the folder: overwrite, truncate or delete files, plant segment files with
//! chosen names and bytes, a checkpoint of chosen bytes, foreign files, folders and symlinks
//! where files are expected; maybe let a writer recover the damage and append. Then the
//! reader opens it and reads everything, twice (a second open starts from its own
//! checkpoint). Only the public open/read/commit API is used, so the target survives format
//! changes. Errors are fine; a panic, a read that does not advance, a span that breaks the
//! read contract or a read that never ends is a bug.
#![no_main]

use std::path::{Path, PathBuf};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sekoia_fuzz::{scratch_dir, write_at, Choices};
use sekoia_shared::queue::journal::{segment_file_name, CHECKPOINT_FILE, STATE_FILE};
use sekoia_shared::queue::{
    DiskBudget, JournalOptions, JournalReader, JournalWriter, RecordMeta, SyncPolicy,
};

const META: RecordMeta = RecordMeta {
    intake_id: 3,
    recv_time_us: 1_700_000_000_000_000,
    flags: 0,
};
/// Reads per pass; a correct reader needs far fewer (each read advances at least 8 bytes).
const MAX_READS: usize = 5_000;

fn options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 4096,
        buffer_bytes: 512,
        sync: SyncPolicy::Batch {
            interval: Duration::from_secs(3600),
        },
        checkpoint_interval: Duration::ZERO,
        read_window: 4096,
    }
}

fn write_records(dir: &Path, budget: &DiskBudget, c: &mut Choices<'_>, count: u8) {
    let Ok(mut w) = JournalWriter::open(dir, 3, budget.clone(), options()) else {
        return;
    };
    for i in 0..count {
        let len = usize::from(c.u8()) * 5;
        let payload: Vec<u8> = (0..len)
            .map(|j| b'a' + ((i as usize + j) % 26) as u8)
            .collect();
        if !matches!(w.append(&META, &payload), Ok(true)) {
            break;
        }
    }
    let _ = w.flush();
    let _ = w.close();
}

/// Every entry of the folder, sorted, so a choice byte can name one.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn pick(dir: &Path, c: &mut Choices<'_>) -> Option<PathBuf> {
    let all = entries(dir);
    let i = usize::from(c.u8());
    (!all.is_empty()).then(|| all[i % all.len()].clone())
}

/// A segment position: small and aligned, near an existing one, or anything at all.
fn position(c: &mut Choices<'_>) -> u64 {
    match c.u8() % 3 {
        0 => u64::from(c.u16()) * 8,
        1 => u64::from(c.u16()),
        _ => c.u64(),
    }
}

fn damage(dir: &Path, c: &mut Choices<'_>) {
    for _ in 0..16 {
        if c.is_empty() {
            return;
        }
        match c.u8() % 8 {
            0 => {
                if let Some(p) = pick(dir, c) {
                    let off = u64::from(c.u16() % 8192);
                    let bytes = c.bytes(64);
                    if p.is_file() {
                        write_at(&p, off, bytes);
                    }
                }
            }
            1 => {
                if let Some(p) = pick(dir, c) {
                    let len = u64::from(c.u16() % 8192);
                    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) {
                        let _ = f.set_len(len);
                    }
                }
            }
            2 => {
                let _ = std::fs::remove_file(dir.join(CHECKPOINT_FILE));
                write_at(&dir.join(CHECKPOINT_FILE), 0, c.bytes(96));
            }
            3 => {
                let name = segment_file_name(position(c));
                write_at(&dir.join(name), 0, c.bytes(1024));
            }
            4 => {
                if let Some(p) = pick(dir, c) {
                    let _ = std::fs::remove_file(&p);
                }
            }
            5 => {
                let raw = c.bytes(24);
                let name: String = raw
                    .iter()
                    .map(|&b| {
                        if b.is_ascii_graphic() && b != b'/' {
                            b as char
                        } else {
                            '_'
                        }
                    })
                    .collect();
                if !name.is_empty() && name != "." && name != ".." {
                    write_at(&dir.join(name), 0, c.bytes(128));
                }
            }
            6 => {
                let _ = std::fs::create_dir(dir.join(segment_file_name(position(c))));
            }
            _ => {
                let target = pick(dir, c).unwrap_or_else(|| dir.join(STATE_FILE));
                let link = match c.u8() % 3 {
                    0 => dir.join(CHECKPOINT_FILE),
                    1 => dir.join(STATE_FILE),
                    _ => dir.join(segment_file_name(position(c))),
                };
                let _ = std::fs::remove_file(&link);
                let _ = std::os::unix::fs::symlink(target, link);
            }
        }
    }
}

/// Opens a reader and reads to the end, committing as it goes (every span, or never).
fn read_all(dir: &Path, budget: &DiskBudget, commit: bool, max_bytes: usize) {
    let Ok(mut r) = JournalReader::open(dir, budget.clone(), options()) else {
        return;
    };
    let mut from = r.committed();
    let mut out = Vec::new();
    for _ in 0..MAX_READS {
        out.clear();
        match r.read(from, max_bytes, &mut out) {
            Ok(Some(span)) => {
                assert_eq!(span.start, from, "span does not start where asked");
                assert!(
                    span.end > from && span.end % 8 == 0,
                    "read did not advance to a boundary"
                );
                assert!(span.end <= r.end(), "read past the end");
                assert_eq!(out.len() as u64, span.bytes, "payload bytes miscounted");
                assert!(span.records > 0 || span.bytes == 0, "bytes without records");
                from = span.end;
                if commit {
                    let _ = r.commit(from);
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
    panic!("the reader did not reach the end in {MAX_READS} reads");
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    let tmp = scratch_dir();
    let dir = tmp.path().join("journal-tcp-514");
    let Ok(budget) = DiskBudget::create(&tmp.path().join("shm").join("budget"), u64::MAX, 0) else {
        return;
    };
    let flags = c.u8();
    let count = c.u8() % 48;
    write_records(&dir, &budget, &mut c, count);
    if flags & 1 != 0 {
        read_all(&dir, &budget, true, usize::from(c.u16()) + 1);
    }
    damage(&dir, &mut c);
    if flags & 2 != 0 {
        write_records(&dir, &budget, &mut c, 3);
    }
    let max_bytes = if flags & 4 != 0 { 1 } else { 1 << 20 };
    read_all(&dir, &budget, flags & 8 != 0, max_bytes);
    read_all(&dir, &budget, true, max_bytes);
});
