//! Segment files: their header, their names, listing a journal directory, and the record
//! walker that recovery (writer), end-finding and reading (reader) all share.
//!
//! A segment is named after the logical position of its first data byte, as 20 zero-padded
//! decimal digits (`00000000000000004096.seg`), so names sort in stream order. Segment `S`
//! holds positions `S.start .. S.start + file_len - 64`; the next segment starts at or after
//! that (a gap is allowed: the writer starts a new segment at the checkpoint when a power cut
//! lost data the reader had already delivered).
//!
//! ```text
//! struct SegmentHeader {          // changing a field means a new SEGMENT_VERSION
//!     magic:      [u8; 8],  //  0  b"SKFJSEG\0"
//!     version:    u32,      //  8  SEGMENT_VERSION = 1
//!     header_len: u32,      // 12  64 (records start here, 8-aligned)
//!     start:      u64,      // 16  logical position of the first record (= the file name)
//!     capacity:   u64,      // 24  segment_bytes when created: its budget charge while active
//!     first_seq:  u64,      // 32  seq the first record was to get (seq continuity)
//!     created_us: i64,      // 40  µs since the Unix epoch
//!     intake_id:  u16,      // 48
//!     reserved:   [u8; 10], // 50  0 when written, ignored when read
//!     crc:        u32,      // 60  CRC-32C (Castagnoli) of bytes 0..60
//! }                         // 64  records (record.rs), back to back, each 8-aligned
//! ```
//!
//! The walker never trusts a length it has not checked against the limit it was given, and
//! every step moves forward by at least 8 bytes, so a walk over any bytes terminates. Its
//! position arithmetic is checked: a sum that would overflow reads as "not there".
//!
//! Names come from outside the process (a damaged disk, a hand edit, an older build), so
//! [`list_segments`] keeps only names that can be part of the stream and moves the others to
//! `quarantine/` (never deletes them), logging the path, the fault and where it went:
//! - a name that is not 8-aligned or lies beyond [`super::MAX_POSITION`] (a pure function of the
//!   name, so the writer and the reader always agree on it);
//! - a segment whose name lies inside the *verified records* of the segment before it (an
//!   overlap). The earlier segment keeps its place: its records were checked one by one, the
//!   later name is what contradicts them. Bytes past a segment's last valid record (zeros
//!   after a crash, junk) prove nothing, so a name inside them is kept and the earlier
//!   segment is read only up to it, as before.
//!
//! A gap between segments (the next one starts after the previous one's data ends) is normal
//! and left alone: the writer makes one after a power cut lost data that was already delivered.

use crate::queue::shared_file::{open_private_file, Create, PrivateDir};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::queue::record::{decode_header, verify, RecordHeader, RecordKind, RECORD_HEADER_LEN};

use super::{
    sync_dir, CHECKPOINT_FILE, CHECKPOINT_TMP_FILE, MAX_POSITION, QUARANTINE_DIR, SEGMENT_EXT,
    STATE_FILE,
};

/// Size of the segment file header; the first record starts at this file offset.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// The only segment header version this build reads and writes.
pub const SEGMENT_VERSION: u32 = 1;
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"SKFJSEG\0";
pub(crate) const HDR: u64 = SEGMENT_HEADER_LEN as u64;
const REC_HDR: u64 = RECORD_HEADER_LEN as u64;

/// The file name of the segment whose first record is at logical position `start`.
pub fn segment_file_name(start: u64) -> String {
    format!("{start:020}.{SEGMENT_EXT}")
}

/// Parses a segment file name back into its start position.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub start: u64,
    pub capacity: u64,
    pub first_seq: u64,
    pub created_us: i64,
    pub intake_id: u16,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0..8].copy_from_slice(&SEGMENT_MAGIC);
        h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.start.to_le_bytes());
        h[24..32].copy_from_slice(&self.capacity.to_le_bytes());
        h[32..40].copy_from_slice(&self.first_seq.to_le_bytes());
        h[40..48].copy_from_slice(&self.created_us.to_le_bytes());
        h[48..50].copy_from_slice(&self.intake_id.to_le_bytes());
        let crc = crc32c::crc32c(&h[..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks a header. `Err(Unsupported)` is a format this build must not touch
    /// (a newer version); `Err(Damaged)` is a header that is simply broken.
    pub(crate) fn decode(h: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
        if h.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderProblem::Damaged(format!(
                "file is {} bytes, shorter than the {SEGMENT_HEADER_LEN}-byte header",
                h.len()
            )));
        }
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(b)
        };
        if h[0..8] != SEGMENT_MAGIC {
            return Err(HeaderProblem::Damaged(format!(
                "magic {:02x?} is not a sekoia-forwarder segment's",
                &h[0..8]
            )));
        }
        if crc32c::crc32c(&h[..60]) != u32_at(60) {
            return Err(HeaderProblem::Damaged("header CRC-32C mismatch".into()));
        }
        let version = u32_at(8);
        if version != SEGMENT_VERSION {
            return Err(HeaderProblem::Unsupported(format!(
                "segment format version {version}, this build understands only version {SEGMENT_VERSION}"
            )));
        }
        if u32_at(12) as usize != SEGMENT_HEADER_LEN {
            return Err(HeaderProblem::Unsupported(format!(
                "header length {}, expected {SEGMENT_HEADER_LEN}",
                u32_at(12)
            )));
        }
        Ok(SegmentHeader {
            start: u64_at(16),
            capacity: u64_at(24),
            first_seq: u64_at(32),
            created_us: u64_at(40) as i64,
            intake_id: u16::from_le_bytes([h[48], h[49]]),
        })
    }
}

/// Why a segment header was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// Broken (torn at creation, overwritten): the file name stays authoritative.
    Damaged(String),
    /// A format this build does not know: refuse rather than misread it.
    Unsupported(String),
}

/// Why a well-formed segment name cannot be a segment start, if it cannot.
pub(crate) fn name_problem(start: u64) -> Option<&'static str> {
    if start > MAX_POSITION {
        Some("its start position is beyond 2^62, which no writer reaches")
    } else if !start.is_multiple_of(8) {
        Some("its start position is not a multiple of 8, so no record can start there")
    } else {
        None
    }
}

/// What a directory listing found.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Segment start positions, sorted.
    pub segments: Vec<u64>,
    /// Entries that are not part of a journal (warned about by the caller).
    pub foreign: Vec<PathBuf>,
    /// Files with a segment's name that no segment can have, and why.
    pub misnamed: Vec<(PathBuf, &'static str)>,
}

/// Lists the segments of a journal directory and the entries that do not belong there.
pub(crate) fn list_dir(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let known = match name.to_str() {
            Some(STATE_FILE) | Some(CHECKPOINT_FILE) | Some(CHECKPOINT_TMP_FILE) => true,
            Some(QUARANTINE_DIR) => entry.file_type().is_ok_and(|t| t.is_dir()),
            Some(n) => match parse_segment_name(n) {
                Some(start) if entry.file_type().is_ok_and(|t| t.is_file()) => {
                    match name_problem(start) {
                        None => listing.segments.push(start),
                        Some(why) => listing.misnamed.push((entry.path(), why)),
                    }
                    true
                }
                _ => false,
            },
            None => false,
        };
        if !known {
            listing.foreign.push(entry.path());
        }
    }
    listing.segments.sort_unstable();
    Ok(listing)
}

/// Lists a journal directory for the writer or the reader: misnamed segment files and
/// segments that overlap the records of the one before are moved to `quarantine/` (see the
/// module doc) and left out of `segments`.
pub(crate) fn list_segments(dir: &Path, window: usize) -> std::io::Result<Listing> {
    let mut listing = list_dir(dir)?;
    for (path, why) in std::mem::take(&mut listing.misnamed) {
        quarantine(dir, &path, why);
    }
    settle_overlaps(dir, &mut listing.segments, window);
    Ok(listing)
}

/// Drops from `segments` (and moves aside) every segment whose start lies inside the verified
/// records of the segment kept before it.
fn settle_overlaps(dir: &Path, segments: &mut Vec<u64>, window: usize) {
    let mut kept: Vec<u64> = Vec::with_capacity(segments.len());
    for &start in segments.iter() {
        if let Some(valid_end) = kept
            .last()
            .and_then(|&prev| records_past(dir, prev, start, window))
        {
            let why = format!(
                "its start {start} lies inside the records of the segment before it, which run to {valid_end}"
            );
            quarantine(dir, &dir.join(segment_file_name(start)), &why);
            continue;
        }
        kept.push(start);
    }
    *segments = kept;
}

/// Where the verified records of segment `prev` end, if that is past `next` (an overlap).
/// Costs one `stat` unless the file reaches past `next`; then one walk of `prev`. A segment
/// that cannot be read here proves nothing (the reader meets and handles it later).
fn records_past(dir: &Path, prev: u64, next: u64, window: usize) -> Option<u64> {
    let path = dir.join(segment_file_name(prev));
    let data_len = std::fs::metadata(&path).ok()?.len().saturating_sub(HDR);
    let data_end = prev.checked_add(data_len)?;
    if data_end <= next {
        return None;
    }
    let file = open_private_file(&path, Create::ReadOnly).ok()?;
    let scan = SegmentCursor::new(prev, path, file, window)
        .scan(prev, data_end)
        .ok()?;
    (scan.valid_end > next).then_some(scan.valid_end)
}

/// Moves `path` into `dir/quarantine/` (under its own name, or `<name>.<n>` if that is taken)
/// and logs an error saying why and where it went. Returns false (logged) if it could not be
/// moved; the caller then leaves it out of the stream all the same.
pub(crate) fn quarantine(dir: &Path, path: &Path, why: &str) -> bool {
    let moved = move_aside(dir, path);
    match &moved {
        Ok(to) => tracing::error!(
            journal = %dir.display(),
            path = %path.display(),
            moved_to = %to.display(),
            reason = why,
            "journal: segment file cannot be part of the stream; moved aside, not deleted (its records are not delivered)"
        ),
        Err(e) => tracing::error!(
            journal = %dir.display(),
            path = %path.display(),
            reason = why,
            error = %e,
            "journal: segment file cannot be part of the stream and could not be moved aside; ignoring it"
        ),
    }
    moved.is_ok()
}

fn move_aside(dir: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let qdir = PrivateDir::open(dir)
        .and_then(|d| d.subdir(QUARANTINE_DIR, Create::IfMissing))
        .map_err(std::io::Error::other)?
        .path()
        .to_path_buf();
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut to = qdir.join(name);
    let mut n = 0u32;
    while std::fs::symlink_metadata(&to).is_ok() {
        n += 1;
        if n >= 1000 {
            return Err(std::io::ErrorKind::AlreadyExists.into());
        }
        let mut alt = name.to_os_string();
        alt.push(format!(".{n}"));
        to = qdir.join(alt);
    }
    std::fs::rename(path, &to)?;
    sync_dir(dir)?;
    sync_dir(&qdir)?;
    Ok(to)
}

/// Logs each foreign entry once, naming it.
pub(crate) fn warn_foreign(dir: &Path, foreign: &[PathBuf]) {
    for path in foreign {
        tracing::warn!(
            journal = %dir.display(),
            path = %path.display(),
            "ignoring a file that is not part of the journal"
        );
    }
}

/// Result of walking a segment to find where its valid records end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanResult {
    /// Position after the last record whose CRC verified (or the walk's start).
    pub valid_end: u64,
    /// Seq of the last verified DATA record, if any.
    pub last_seq: Option<u64>,
    /// Corrupt stretches skipped *before* `valid_end` (valid records follow them).
    pub corrupt: u32,
}

/// One open segment file with a read window: the only buffer a walk uses.
pub(crate) struct SegmentCursor {
    pub start: u64,
    pub path: PathBuf,
    file: File,
    win: Vec<u8>,
    /// File offset of `win[0]`.
    win_off: u64,
    /// Valid bytes in `win` (never past the limit given when they were read).
    win_len: usize,
    window: usize,
}

impl SegmentCursor {
    pub(crate) fn new(start: u64, path: PathBuf, file: File, window: usize) -> Self {
        SegmentCursor {
            start,
            path,
            file,
            win: Vec::new(),
            win_off: 0,
            win_len: 0,
            window,
        }
    }

    /// Logical bytes currently in the file (`len - header`), from `fstat`.
    pub(crate) fn data_len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len().saturating_sub(HDR))
    }

    /// True when the file was deleted (its blocks are freed only once it is closed).
    pub(crate) fn is_unlinked(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    /// Bytes `pos .. pos + n` (logical positions) if all of them lie below `lim`, read through
    /// the window. Bytes at or past `lim` are never kept (they may be being written).
    fn get(&mut self, pos: u64, n: usize, lim: u64) -> std::io::Result<Option<&[u8]>> {
        let Some(off) = (pos.checked_sub(self.start)).and_then(|d| d.checked_add(HDR)) else {
            return Ok(None);
        };
        if pos.checked_add(n as u64).is_none_or(|e| e > lim) {
            return Ok(None);
        }
        // No overflow below: start <= pos <= pos + n <= lim, and the window lies inside the
        // file, whose offsets fit in an i64.
        let have = off >= self.win_off && off + n as u64 <= self.win_off + self.win_len as u64;
        if !have {
            let lim_off = lim - self.start + HDR;
            let want = (self.window.max(n) as u64).min(lim_off - off) as usize;
            if self.win.len() < want {
                self.win.resize(want, 0);
            }
            let mut got = 0;
            while got < want {
                match self
                    .file
                    .read_at(&mut self.win[got..want], off + got as u64)
                {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.win_len = 0;
                        return Err(e);
                    }
                }
            }
            self.win_off = off;
            self.win_len = got;
            if got < n {
                return Ok(None); // the file is shorter than it should be: torn
            }
        }
        let at = (off - self.win_off) as usize;
        Ok(Some(&self.win[at..at + n]))
    }

    /// The record at `pos` if it is whole below `lim` and its CRC verifies. After `Some`, its
    /// payload is available through [`SegmentCursor::payload`].
    pub(crate) fn probe(&mut self, pos: u64, lim: u64) -> std::io::Result<Option<RecordHeader>> {
        let mut raw = [0u8; RECORD_HEADER_LEN];
        match self.get(pos, RECORD_HEADER_LEN, lim)? {
            Some(b) => raw.copy_from_slice(b),
            None => return Ok(None),
        }
        let Ok(h) = decode_header(&raw) else {
            return Ok(None);
        };
        if pos.checked_add(h.record_len()).is_none_or(|e| e > lim) {
            return Ok(None);
        }
        let payload_len = match h.kind {
            RecordKind::Data => h.len as usize,
            RecordKind::Pad => 0,
        };
        let Some(rec) = self.get(pos, RECORD_HEADER_LEN + payload_len, lim)? else {
            return Ok(None);
        };
        Ok(verify(&raw, &rec[RECORD_HEADER_LEN..]).then_some(h))
    }

    /// Payload of the record just accepted by `probe(pos, ..)`.
    pub(crate) fn payload(&self, pos: u64, len: usize) -> &[u8] {
        let at = (pos - self.start + HDR - self.win_off) as usize + RECORD_HEADER_LEN;
        &self.win[at..at + len]
    }

    /// First position in `from..lim` (8-aligned steps) where a record verifies, if any.
    pub(crate) fn resync(&mut self, from: u64, lim: u64) -> std::io::Result<Option<u64>> {
        let mut pos = from;
        while pos.checked_add(REC_HDR).is_some_and(|e| e <= lim) {
            if self.probe(pos, lim)?.is_some() {
                return Ok(Some(pos));
            }
            pos += 8;
        }
        Ok(None)
    }

    /// Walks records from `from` to `lim`, skipping corrupt stretches that valid records
    /// follow, and reports where the valid records end (recovery and end-finding).
    pub(crate) fn scan(&mut self, from: u64, lim: u64) -> std::io::Result<ScanResult> {
        let mut res = ScanResult {
            valid_end: from,
            last_seq: None,
            corrupt: 0,
        };
        let mut pos = from;
        while pos < lim {
            if let Some(h) = self.probe(pos, lim)? {
                pos += h.record_len();
                res.valid_end = pos;
                if h.kind == RecordKind::Data {
                    res.last_seq = Some(h.seq);
                }
                continue;
            }
            match self.resync(pos.saturating_add(8), lim)? {
                Some(next) => {
                    res.corrupt += 1;
                    pos = next;
                }
                None => break,
            }
        }
        Ok(res)
    }

    /// The record boundary at or before `target` when walking from `from` (a boundary, the
    /// segment start) towards `lim`: `target` itself if a record or a corrupt stretch starts
    /// there, else the start of the record or corrupt stretch it falls in. Moving back to
    /// it means that record is sent again (a duplicate), never skipped.
    pub(crate) fn boundary_at_or_before(
        &mut self,
        from: u64,
        target: u64,
        lim: u64,
    ) -> std::io::Result<u64> {
        let mut pos = from;
        while pos < target {
            let next = match self.probe(pos, lim)? {
                Some(h) => pos + h.record_len(),
                None => match self.resync(pos.saturating_add(8), lim)? {
                    Some(next) => next,
                    None => return Ok(pos),
                },
            };
            if next > target {
                return Ok(pos);
            }
            pos = next;
        }
        Ok(pos)
    }
}

/// Opens the segment file at `path` read-only (reader) and checks its header. Returns the
/// cursor and the header (None when damaged: the name is then authoritative).
pub(crate) fn open_segment(
    start: u64,
    path: &Path,
    file: File,
    window: usize,
) -> Result<(SegmentCursor, Option<SegmentHeader>), super::JournalError> {
    let mut raw = [0u8; SEGMENT_HEADER_LEN];
    let mut got = 0;
    while got < raw.len() {
        match file.read_at(&mut raw[got..], got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(super::JournalError::ReadSegment {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let header = match SegmentHeader::decode(&raw[..got]) {
        Ok(h) if h.start == start => Some(h),
        Ok(h) => {
            tracing::warn!(path = %path.display(), header_start = h.start, "segment header start differs from its file name; the name wins");
            None
        }
        Err(HeaderProblem::Unsupported(reason)) => {
            return Err(super::JournalError::BadSegmentHeader {
                path: path.to_path_buf(),
                reason,
            })
        }
        Err(HeaderProblem::Damaged(reason)) => {
            tracing::warn!(path = %path.display(), %reason, "damaged segment header; reading its records anyway (each is CRC-checked)");
            None
        }
    };
    Ok((
        SegmentCursor::new(start, path.to_path_buf(), file, window),
        header,
    ))
}
