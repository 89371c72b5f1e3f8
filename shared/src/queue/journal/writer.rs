//! The writer side of a journal: the ingest worker appends records, flushes them with one
//! `pwrite`, and publishes the new end to the reader through the state file.
//!
//! Positions: `end()` is after the last appended record (buffered or written),
//! `published_end()` is what the reader may read; both only grow. Records go into the
//! active (newest) segment; when the next one does not fit, the writer *rolls*: it reserves a
//! whole new segment from the [`DiskBudget`] (if that fails, `append` returns `Ok(false)` and
//! nothing changes: back-pressure), creates it, then seals the old one (fdatasync, and the
//! unused part of its reservation is given back).
//!
//! Recovery at open (the writer lock is held, so nobody appends meanwhile): the newest segment
//! is walked from its start, verifying every CRC; corrupt stretches that valid records follow
//! are kept (the reader skips them), and whatever follows the last valid record (a torn write,
//! zeros after a power cut) is truncated, logged with the path and byte count. `seq` continues
//! from the last valid record (floored by the state file and the checkpoint). If the durable
//! checkpoint is *ahead* of the recovered end (a power cut lost data the reader had already
//! delivered), the next segment starts at the checkpoint (rounded up to 8), so the reader never
//! skips new data. Before that, the listing moves misnamed and overlapping segment files to
//! `quarantine/` (`segment::list_segments`, the same rule as the reader's), so the segment
//! recovered is one the reader reads too, and no position can overflow.
//!
//! Errors: an `Err` from `append` means *this* record was not taken; records buffered before
//! stay buffered. An `Err` from `flush` keeps every unwritten byte buffered (the retry writes
//! them again at the same offset); `is_disk_full()` says when to treat the journal as full.
//!
//! Full disk: when a roll finds the budget exhausted or a write fails with ENOSPC, and the
//! reader's durable checkpoint has passed everything written to the active segment, the
//! writer deletes that segment itself and continues in a new one where it ended
//! (`reclaim_active`): delivered space comes back even when it is the only segment. A budget
//! that cannot hold a whole segment gets a smaller one (`reserve_segment`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::budget::DiskBudget;
use super::checkpoint::Checkpoint;
use super::segment::{
    list_segments, segment_file_name, warn_foreign, HeaderProblem, SegmentCursor, SegmentHeader,
    HDR, SEGMENT_HEADER_LEN,
};
use super::state::{LockByte, SharedState};
use super::{sync_dir, unix_micros, JournalError, JournalOptions, SyncPolicy, MAX_POSITION};
use crate::queue::record::{encode_record, record_len};
use crate::queue::shared_file::{open_private_file, Create, SharedFileError};
use crate::queue::RecordMeta;

/// Segments smaller than `segment_bytes` (when the budget cannot hold a whole one) are sized
/// in steps of this.
const SMALL_SEGMENT_STEP: u64 = 64 << 10;

/// The segment records are appended to.
struct Active {
    start: u64,
    path: PathBuf,
    file: File,
    /// File length: header plus every byte written (published or not).
    written: u64,
    /// Bytes this segment may grow to (its budget charge while it is the newest).
    capacity: u64,
}

impl Active {
    /// Logical position after the last byte written to the file.
    fn written_end(&self) -> u64 {
        self.start + self.written - HDR
    }
}

/// The single writer of one journal (the intake's ingest worker).
pub struct JournalWriter {
    dir: PathBuf,
    intake_id: u16,
    opts: JournalOptions,
    budget: DiskBudget,
    state: SharedState,
    active: Option<Active>,
    buf: Vec<u8>,
    end: u64,
    published: u64,
    next_seq: u64,
    /// Records in `buf` (so a segment started under them gets the right `first_seq`).
    buffered_records: u64,
    max_payload: usize,
    last_sync: Instant,
    unsynced: bool,
}

fn open_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::OpenSegment {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates a segment file (never over an existing one) with its header written.
fn create_segment(path: &Path, header: &SegmentHeader) -> std::io::Result<File> {
    let file = open_private_file(path, Create::New).map_err(|e| match e {
        SharedFileError::Io { source, .. } => source,
        other => std::io::Error::other(other),
    })?;
    if let Err(e) = file.write_all_at(&header.encode(), 0) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

impl JournalWriter {
    /// Opens (creating if needed) the journal in `dir` as its only writer, recovering the
    /// newest segment. A second writer is refused with `Locked`; an unwritable directory is
    /// `Directory { path }`; a segment of an unknown format version is `BadSegmentHeader`.
    pub fn open(
        dir: &Path,
        intake_id: u16,
        budget: DiskBudget,
        opts: JournalOptions,
    ) -> Result<Self, JournalError> {
        opts.validate()?;
        let state = SharedState::open(dir)?;
        state.lock(LockByte::Writer, "writer")?;
        let listing = list_segments(dir, opts.read_window).map_err(|e| super::dir_error(dir, e))?;
        warn_foreign(dir, &listing.foreign);
        let ckpt = Checkpoint::load(dir)?.unwrap_or_default();
        let mut floor = ckpt.position;
        if state.is_locked_by_other(LockByte::Reader)? {
            floor = floor.max(state.committed());
        }
        // The checkpoint is at most MAX_POSITION (checked when decoded); the state file is
        // derived data. Round up: positions are 8-aligned, and new records must not land
        // below a position the reader may already consider delivered.
        let floor = floor.min(MAX_POSITION).next_multiple_of(8);
        let mut w = JournalWriter {
            dir: dir.to_path_buf(),
            intake_id,
            max_payload: opts.max_payload(),
            opts,
            budget,
            state,
            active: None,
            buf: Vec::new(),
            end: 0,
            published: 0,
            next_seq: 0,
            buffered_records: 0,
            last_sync: Instant::now(),
            unsynced: false,
        };
        w.buf.reserve(w.opts.buffer_bytes);
        let mut seq_floor = w.state.next_seq().max(ckpt.next_seq);
        if let Some(&start) = listing.segments.last() {
            let (active, next_seq) = w.recover(start)?;
            seq_floor = seq_floor.max(next_seq);
            w.end = active.written_end();
            w.active = Some(active);
        }
        if floor > w.end {
            tracing::warn!(
                journal = %dir.display(),
                checkpoint = floor,
                end = w.end,
                "checkpoint is ahead of the journal's data (lost in a power cut after delivery); continuing at the checkpoint"
            );
            w.end = floor;
        }
        w.next_seq = seq_floor;
        w.published = w.end;
        w.state.publish_end(w.end, w.next_seq);
        w.state.bump_generation();
        w.state.lock(LockByte::Published, "writer")?;
        Ok(w)
    }

    /// Walks the newest segment, truncates what follows its last valid record, returns it as
    /// the active segment and the seq its next record gets.
    fn recover(&mut self, start: u64) -> Result<(Active, u64), JournalError> {
        let path = self.dir.join(segment_file_name(start));
        let file = open_private_file(&path, Create::No)?;
        let len = file.metadata().map_err(open_err(&path))?.len();
        let mut raw = [0u8; SEGMENT_HEADER_LEN];
        let got = if len >= HDR {
            file.read_exact_at(&mut raw, 0).map_err(open_err(&path))?;
            SEGMENT_HEADER_LEN
        } else {
            0
        };
        let header = match SegmentHeader::decode(&raw[..got]) {
            Ok(h) if h.start == start => Some(h),
            Ok(_) | Err(HeaderProblem::Damaged(_)) => None,
            Err(HeaderProblem::Unsupported(reason)) => {
                return Err(JournalError::BadSegmentHeader { path, reason })
            }
        };
        let capacity = header.map_or(self.opts.segment_bytes, |h| h.capacity.max(HDR));
        let mut first_seq = header.map_or(self.state.next_seq(), |h| h.first_seq);
        let data_len = len.saturating_sub(HDR);
        let mut cursor = SegmentCursor::new(
            start,
            path.clone(),
            file.try_clone().map_err(open_err(&path))?,
            self.opts.read_window,
        );
        let scan =
            cursor
                .scan(start, start + data_len)
                .map_err(|source| JournalError::ReadSegment {
                    path: path.clone(),
                    source,
                })?;
        let keep = HDR + (scan.valid_end - start);
        if keep < len {
            tracing::warn!(
                path = %path.display(),
                cut_bytes = len - keep,
                kept_bytes = keep,
                "journal recovery: truncating a torn or corrupt tail after the last valid record"
            );
            file.set_len(keep).map_err(|source| JournalError::Append {
                path: path.clone(),
                source,
            })?;
        }
        if scan.corrupt > 0 {
            tracing::warn!(path = %path.display(), corrupt = scan.corrupt, "journal recovery: corrupt records inside the newest segment (the reader skips and counts them)");
        }
        if header.is_none() {
            if len > HDR {
                tracing::warn!(path = %path.display(), "journal recovery: rewriting a damaged segment header from the file name");
            }
            first_seq = first_seq.max(scan.last_seq.map_or(0, |s| s.saturating_add(1)));
            let h = SegmentHeader {
                start,
                capacity,
                first_seq,
                created_us: unix_micros(),
                intake_id: self.intake_id,
            };
            file.write_all_at(&h.encode(), 0)
                .map_err(|source| JournalError::Append {
                    path: path.clone(),
                    source,
                })?;
        }
        if keep < len || header.is_none() {
            file.sync_data().map_err(|source| JournalError::Sync {
                path: path.clone(),
                source,
            })?;
        }
        let next_seq = scan.last_seq.map_or(first_seq, |s| s.saturating_add(1));
        Ok((
            Active {
                start,
                path,
                file,
                written: keep,
                capacity,
            },
            next_seq,
        ))
    }

    /// Appends one record (buffered). `Ok(false)`: the disk budget cannot hold a new segment;
    /// nothing was taken, apply back-pressure and retry after the reader freed space.
    pub fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<bool, JournalError> {
        if payload.len() > self.max_payload {
            return Err(JournalError::PayloadTooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        let rec = record_len(payload.len()) as u64;
        let fits = self.active.as_ref().is_some_and(|a| {
            a.written_end() + self.buf.len() as u64 == self.end
                && a.written + self.buf.len() as u64 + rec <= a.capacity
        });
        if !fits && !self.roll(rec)? {
            return Ok(false);
        }
        if !self.buf.is_empty() && self.buf.len() + rec as usize > self.opts.buffer_bytes {
            self.flush()?;
        }
        encode_record(meta, self.next_seq, payload, &mut self.buf).map_err(|_| {
            JournalError::PayloadTooLarge {
                len: payload.len(),
                max: self.max_payload,
            }
        })?;
        self.next_seq = self.next_seq.saturating_add(1);
        self.buffered_records += 1;
        self.end += rec;
        Ok(true)
    }

    /// Starts a new segment at `end`. `Ok(false)` when the budget cannot hold it (after the
    /// budget was re-checked against the file system and a delivered active segment was
    /// given back: see [`Self::reclaim_active`]).
    fn roll(&mut self, rec: u64) -> Result<bool, JournalError> {
        self.flush()?;
        // The flush may have started a segment for what was buffered (after a reclaim).
        let end = self.end;
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.written_end() == end && a.written + rec <= a.capacity)
        {
            return Ok(true);
        }
        self.start_segment(self.end, HDR + rec)
    }

    /// Reserves a segment from the budget and creates it at `start`, sealing the active one;
    /// `need` is what it must hold (header and pending records). `Ok(false)`: the budget
    /// cannot hold it, nothing changed.
    fn start_segment(&mut self, start: u64, need: u64) -> Result<bool, JournalError> {
        self.budget.recheck_fs(&self.dir);
        let Some(capacity) = self
            .reserve_segment(need)
            .or_else(|| self.reclaim_active().then(|| self.reserve_segment(need))?)
            .or_else(|| self.reserve_for_accepted(need))
        else {
            return Ok(false);
        };
        let path = self.dir.join(segment_file_name(start));
        let header = SegmentHeader {
            start,
            capacity,
            first_seq: self.next_seq.saturating_sub(self.buffered_records),
            created_us: unix_micros(),
            intake_id: self.intake_id,
        };
        let file = match create_segment(&path, &header) {
            Ok(f) => f,
            Err(source) => {
                self.budget.release(capacity);
                return Err(JournalError::OpenSegment { path, source });
            }
        };
        if let Some(old) = self.active.take() {
            self.seal(old);
        }
        self.active = Some(Active {
            start,
            path,
            file,
            written: HDR,
            capacity,
        });
        self.unsynced = true;
        sync_dir(&self.dir).map_err(|e| super::dir_error(&self.dir, e))?;
        Ok(true)
    }

    /// Reserves a whole segment if the budget holds one, else a smaller one that holds
    /// `need` (a nearly full disk still takes events, in smaller segments); returns its
    /// capacity.
    fn reserve_segment(&self, need: u64) -> Option<u64> {
        let full = self.opts.segment_bytes.max(need);
        let small = need.next_multiple_of(SMALL_SEGMENT_STEP).min(full);
        [full, small, need]
            .into_iter()
            .find(|&bytes| self.budget.try_reserve(bytes))
    }

    /// Records already taken from senders (buffered here) may go into the file system's
    /// reserve when the budget in force refuses them but the disk has the room: at most one
    /// buffer (`buffer_bytes`) per journal beyond the budget, so that accepted events reach
    /// the disk instead of holding the intake back until someone else frees space.
    fn reserve_for_accepted(&self, need: u64) -> Option<u64> {
        let pending = HDR + self.buf.len() as u64;
        if self.buf.is_empty() || need > pending {
            return None;
        }
        let room = super::FsRoom::of(&self.dir).ok()?;
        (room.available >= need).then(|| {
            self.budget.force_reserve(need);
            need
        })
    }

    /// Seals a segment: its bytes are durable before newer segments exist on disk, and its
    /// charge becomes its real length.
    fn seal(&mut self, old: Active) {
        let synced = old.file.sync_data();
        self.budget
            .release(old.capacity.saturating_sub(old.written));
        if let Err(source) = synced {
            tracing::error!(path = %old.path.display(), error = %source, "fdatasync of a sealed segment failed");
        }
    }

    /// Deletes the active segment when the reader's **durable** checkpoint has passed every
    /// record written to it, and gives its charge back: how a full disk or budget makes room
    /// when the only segment left is the one being filled. The next write starts a new
    /// segment where this one ended (positions go on; the reader re-lists and finds it). Only
    /// the writer touches its active segment, so no one else deletes or extends it meanwhile.
    fn reclaim_active(&mut self) -> bool {
        let Some(a) = self.active.as_ref() else {
            return false;
        };
        if a.written <= HDR || Checkpoint::durable_position(&self.dir) < a.written_end() {
            return false;
        }
        match std::fs::remove_file(&a.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::debug!(path = %a.path.display(), error = %e, "cannot delete the delivered active segment");
                return false;
            }
        }
        let Some(a) = self.active.take() else {
            return false;
        };
        self.budget.release(a.capacity.max(a.written));
        let _ = sync_dir(&self.dir); // best effort: a resurrected delivered file is deleted again
        tracing::info!(path = %a.path.display(), bytes = a.written, "journal: deleted the delivered active segment to make room");
        true
    }

    /// Writes the buffered records with one `pwrite` (more only after a short write), syncs
    /// if the policy says so, then publishes the new end to the reader. When the disk is
    /// full, a delivered active segment is given back and the records go to a new one.
    pub fn flush(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let start = self.end - self.buf.len() as u64;
        let need = HDR + self.buf.len() as u64;
        if self.active.is_none() && !self.start_segment(start, need)? {
            return Err(JournalError::BudgetExhausted {
                path: self.dir.clone(),
            });
        }
        match self.write_buffer() {
            Err(e) if e.is_disk_full() && self.reclaim_active() => {
                if !self.start_segment(start, need)? {
                    return Err(e);
                }
                self.write_buffer()?;
            }
            other => other?,
        }
        let due = match self.opts.sync {
            SyncPolicy::Always => true,
            SyncPolicy::Batch { interval } => self.last_sync.elapsed() >= interval,
        };
        if due {
            self.sync_active()?;
        }
        self.published = self.end;
        self.state.publish_end(self.end, self.next_seq);
        Ok(())
    }

    /// Writes the whole buffer into the active segment. On error nothing is taken out of
    /// the buffer: the retry writes the same bytes at the same offset again (a partial
    /// record on disk is never published, and is overwritten or cut by recovery).
    fn write_buffer(&mut self) -> Result<(), JournalError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(()); // unreachable: `flush` started one
        };
        let mut done = 0usize;
        while done < self.buf.len() {
            let source = match a.file.write_at(&self.buf[done..], a.written + done as u64) {
                Ok(0) => std::io::ErrorKind::WriteZero.into(),
                Ok(k) => {
                    done += k;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            return Err(JournalError::Append {
                path: a.path.clone(),
                source,
            });
        }
        a.written += done as u64;
        self.buf.clear();
        self.buffered_records = 0;
        self.unsynced = true;
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), JournalError> {
        if let Some(a) = &self.active {
            if self.unsynced {
                a.file.sync_data().map_err(|source| JournalError::Sync {
                    path: a.path.clone(),
                    source,
                })?;
            }
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Flushes, then `fdatasync`s the active segment.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.flush()?;
        self.sync_active()
    }

    /// For a timer in `SyncPolicy::Batch`: flushes and syncs if the interval has passed since
    /// the last sync and something is unsynced. Cheap when nothing is due.
    pub fn sync_if_due(&mut self) -> Result<(), JournalError> {
        let interval = match self.opts.sync {
            SyncPolicy::Always => std::time::Duration::ZERO,
            SyncPolicy::Batch { interval } => interval,
        };
        if (self.unsynced || !self.buf.is_empty()) && self.last_sync.elapsed() >= interval {
            self.sync()?;
        }
        Ok(())
    }

    /// Flushes and syncs, reporting any error (dropping does the same but can only log).
    pub fn close(mut self) -> Result<(), JournalError> {
        self.sync()
    }

    /// Position after the last appended record, buffered ones included.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Position the reader can read up to (last flush).
    pub fn published_end(&self) -> u64 {
        self.published
    }

    /// The reader's delivered position, as it last published it in the state file.
    pub fn committed(&self) -> u64 {
        self.state.committed()
    }

    /// True when nothing is buffered and the reader has delivered everything: the ingest
    /// worker may go back to the ring.
    pub fn is_drained(&self) -> bool {
        self.buf.is_empty() && self.committed() >= self.end
    }

    /// `(records, bytes)` appended and not yet delivered by the reader (buffered ones
    /// included). Records are counted by seq, so a gap left by a crash counts as records.
    pub fn backlog(&self) -> (u64, u64) {
        let committed = self.committed();
        if committed >= self.end {
            return (0, 0);
        }
        let delivered_seq = self.state.committed_seq();
        (
            self.next_seq.saturating_sub(delivered_seq),
            self.end - committed,
        )
    }

    /// Bytes appended but not yet written.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Forgets the records appended and not written yet, for a caller that still holds them
    /// elsewhere (the stop-time save leaves them in the ring); returns their bytes.
    pub fn discard_buffered(&mut self) -> usize {
        let bytes = self.buf.len();
        self.end -= bytes as u64;
        self.next_seq = self.next_seq.saturating_sub(self.buffered_records);
        self.buf.clear();
        self.buffered_records = 0;
        bytes
    }

    /// Seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Largest payload `append` accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(
                journal = %self.dir.display(),
                error = %e,
                lost_bytes = self.buf.len(),
                "journal writer closed with unwritten records"
            );
        }
    }
}
