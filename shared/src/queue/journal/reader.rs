//! The reader side of a journal: the uplink copies whole records out, commits what was
//! delivered, and deletes the segments it has fully passed.
//!
//! The end it reads up to is the writer's published end while a writer holds the
//! "published" lock; otherwise (no writer alive: the ingest worker died, or after a restart)
//! it is found by walking the newest segment, exactly as writer recovery would, and found
//! again whenever a new writer life (state `generation`) has come and gone.
//!
//! Walking from a record boundary `pos`, within segment `S`, up to
//! `lim = min(end, data end of S, start of the next segment)`:
//! - a record that is whole below `lim` and whose CRC-32C verifies: its payload is copied;
//! - anything else (bad CRC, impossible header, a record cut by a torn file): one corrupt
//!   stretch is counted and the walk resyncs: it probes every 8-byte boundary after `pos`
//!   for a record that verifies, and continues there, or at `lim` if there is none;
//! - at the end of a segment's data it continues at the next segment's start.
//!
//! Every step advances by at least 8 bytes and never past `end`, so a read terminates and
//! never returns unpublished bytes, whatever the files contain. The data end of a segment is
//! its file length rounded *up* to 8, so positions stay 8-aligned even after a truncation at
//! an odd byte. Memory: one read window (`read_window`, default 1 MiB) plus the caller's
//! `out`; a multi-GB backlog is never loaded.
//!
//! Nothing read from the files is trusted before it is checked (`docs/journal.md`, "Bad
//! positions and names"): the listing moves misnamed and overlapping segment files to
//! `quarantine/` (`segment::list_segments`); the checkpoint's position is checked against the
//! segments at open and, where it is not a record boundary the files hold, moved *back* to
//! one (a record may be sent twice, none is skipped: we prefer re-sending, because a
//! checkpoint is only ever written at a delivered boundary, so one that is not a boundary is
//! damaged and what precedes it may never have been delivered); a segment that cannot be
//! opened or read is retried, then moved aside, so no error that comes from the files is
//! returned for ever. A read that meets a fault after reading something hands that out
//! first; `out` never keeps bytes of a failed read.
//!
//! Commit: `commit(pos)` stores `pos` in the state file at once (the writer's `is_drained`
//! sees it) and persists the checkpoint at most every `checkpoint_interval`, and always when
//! the oldest segment is fully passed; segments are deleted only after the checkpoint that
//! passes them is durable, and their bytes go back to the [`DiskBudget`].

use crate::queue::shared_file::{open_private_file, Create};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::budget::DiskBudget;
use super::checkpoint::{Checkpoint, CheckpointFile};
use super::segment::{
    list_segments, open_segment, quarantine, segment_file_name, warn_foreign, SegmentCursor,
};
use super::state::{LockByte, SharedState};
use super::{JournalError, JournalOptions};
use crate::log_limit::{Repeating, Report};
use crate::queue::record::RecordKind;
use crate::queue::ReadSpan;

const MAX_READ_SEQS: usize = 4096;
/// Reads in a row that may fail on the same segment (an I/O error) before it is moved aside.
const STRIKES_BEFORE_QUARANTINE: u32 = 3;

/// Consecutive failed reads of one segment.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    start: u64,
    count: u32,
}

/// A read in progress, carried from segment to segment.
struct Walk {
    pos: u64,
    end: u64,
    max_bytes: usize,
    span: ReadSpan,
    next_seq: Option<u64>,
    relisted: bool,
}

/// Why a read stopped before its end.
enum Stop {
    /// Segment `start` could not be opened or read (see `JournalReader::segment_fault`).
    Segment { start: u64, error: JournalError },
    /// Anything else (the directory cannot be listed): returned to the caller.
    Other(JournalError),
}

/// The end found by scanning while no writer was alive, and for which writer life.
#[derive(Debug, Clone, Copy)]
struct ScannedEnd {
    generation: u64,
    end: u64,
}

/// The single reader of one journal (the uplink worker).
pub struct JournalReader {
    pub(super) dir: PathBuf,
    opts: JournalOptions,
    budget: DiskBudget,
    pub(super) state: SharedState,
    pub(super) checkpoint: CheckpointFile,
    /// Known segment starts, sorted (refreshed when a read runs past the newest one).
    pub(super) segments: Vec<u64>,
    cursor: Option<SegmentCursor>,
    pub(super) end: u64,
    scanned: Option<ScannedEnd>,
    pub(super) committed: u64,
    /// Position of the durable checkpoint.
    pub(super) persisted: u64,
    last_persist: Instant,
    /// `(end, seq after its last record)` of recent reads, oldest first, for the checkpoint's
    /// `next_seq` (bounded: the uplink reads ahead of what it commits).
    read_seqs: VecDeque<(u64, u64)>,
    pub(super) committed_next_seq: u64,
    /// The segment that failed the last read(s), if any.
    strikes: Option<Strikes>,
    /// Segments taken out of the stream that could not be moved aside.
    ignored: Vec<u64>,
    /// Reads failing on a segment (a failing disk): logged by the rule of `log_limit`.
    read_failing: Repeating,
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::ReadSegment {
        path: path.to_path_buf(),
        source,
    }
}

impl JournalReader {
    /// Opens (creating if needed) the journal in `dir` as its only reader; a second reader
    /// is refused with `Locked`. Reading starts at [`JournalReader::committed`], the durable
    /// checkpoint, checked against the segments (`start_at_checkpoint`, in `checkpoint.rs`),
    /// or the oldest segment when there is none. Segments the checkpoint has already passed
    /// (a crash between checkpoint and deletion) are deleted now. Only what no retry can
    /// change is an error here (options, locks, the directory); a segment that cannot be
    /// read is met again, and handled, by `read`.
    pub fn open(
        dir: &Path,
        budget: DiskBudget,
        opts: JournalOptions,
    ) -> Result<Self, JournalError> {
        opts.validate()?;
        let state = SharedState::open(dir)?;
        state.lock(LockByte::Reader, "reader")?;
        let listing = list_segments(dir, opts.read_window).map_err(|e| super::dir_error(dir, e))?;
        warn_foreign(dir, &listing.foreign);
        let (checkpoint, ckpt) = CheckpointFile::open(dir)?;
        let mut r = JournalReader {
            dir: dir.to_path_buf(),
            opts,
            budget,
            state,
            checkpoint,
            segments: listing.segments,
            cursor: None,
            end: 0,
            scanned: None,
            committed: 0,
            persisted: 0,
            last_persist: Instant::now(),
            read_seqs: VecDeque::new(),
            committed_next_seq: ckpt.map_or(0, |c| c.next_seq),
            strikes: None,
            ignored: Vec::new(),
            read_failing: Repeating::default(),
        };
        r.start_at_checkpoint(ckpt);
        if let Err(e) = r.delete_passed() {
            tracing::warn!(journal = %dir.display(), error = %e, "journal: cannot delete a delivered segment; retried after the next checkpoint");
        }
        if let Err(e) = r.refresh_end() {
            if e.is_retryable() {
                return Err(e);
            }
            tracing::warn!(journal = %dir.display(), error = %e, "journal: cannot find the end of the newest segment yet; reads retry it");
        }
        Ok(r)
    }

    /// Position to start reading from: everything before it was delivered.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The end as last seen (reads refresh it when they reach it).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes of records (and their headers) between `committed` and `end`.
    pub fn backlog_bytes(&self) -> u64 {
        self.end - self.committed
    }

    /// Position of the durable checkpoint.
    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// Number of segment files known.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the end: the writer's published end if a writer is alive, else the end of
    /// the valid records of the newest segment (scanned again only after a new writer life).
    pub fn refresh_end(&mut self) -> Result<u64, JournalError> {
        let end = if self.state.is_locked_by_other(LockByte::Published)? {
            self.scanned = None;
            self.state.end()
        } else {
            let generation = self.state.generation();
            match self.scanned {
                Some(s) if s.generation == generation => s.end,
                _ => {
                    let end = self.scan_end()?;
                    self.scanned = Some(ScannedEnd { generation, end });
                    end
                }
            }
        };
        // Never below committed (a checkpoint ahead of data lost in a power cut) and never
        // backwards (a stale value must not make delivered positions readable again).
        self.end = end.max(self.committed).max(self.end);
        Ok(self.end)
    }

    /// The end of the valid records of the newest segment; one that cannot be read is
    /// handled by [`JournalReader::segment_fault`] (and the one before it scanned instead).
    fn scan_end(&mut self) -> Result<u64, JournalError> {
        self.refresh_listing()?;
        while let Some(&start) = self.segments.last() {
            match self.scan_segment_end(start) {
                Ok(end) => return Ok(end),
                Err(e) => self.segment_fault(start, e)?,
            }
        }
        Ok(self.committed)
    }

    fn scan_segment_end(&mut self, start: u64) -> Result<u64, JournalError> {
        let Some(cursor) = self.cursor_for(start)? else {
            return Ok(self.committed);
        };
        let data_len = cursor.data_len().map_err(read_err(&cursor.path))?;
        let scan = cursor
            .scan(start, start.saturating_add(data_len))
            .map_err(read_err(&cursor.path))?;
        Ok(scan.valid_end)
    }

    fn refresh_listing(&mut self) -> Result<(), JournalError> {
        let listing = list_segments(&self.dir, self.opts.read_window)
            .map_err(|e| super::dir_error(&self.dir, e))?;
        self.segments = listing.segments;
        self.segments.retain(|s| !self.ignored.contains(s));
        Ok(())
    }

    /// A segment that cannot be opened or read. An error that retrying may fix
    /// (`is_retryable`) is returned. Otherwise the segment is moved aside (`quarantine/`) and
    /// `Ok` says reading goes on without it: an unknown format version at once (the same
    /// bytes give the same answer), an I/O error after [`STRIKES_BEFORE_QUARANTINE`] reads
    /// in a row have failed on it. The newest segment is moved aside only while no writer
    /// is alive and nothing of it was handed out; otherwise the error is returned (a live
    /// writer rolls to a new segment, and the old one is then handled like any other).
    fn segment_fault(&mut self, start: u64, error: JournalError) -> Result<(), JournalError> {
        if error.is_retryable() {
            return Err(error);
        }
        let count = match self.strikes {
            Some(s) if s.start == start => s.count + 1,
            _ => 1,
        };
        self.strikes = Some(Strikes { start, count });
        let at_once = matches!(error, JournalError::BadSegmentHeader { .. });
        let newest = self.segments.last() == Some(&start);
        let writer_may_fill_it =
            newest && (self.end > start || self.state.is_locked_by_other(LockByte::Published)?);
        if (!at_once && count < STRIKES_BEFORE_QUARANTINE) || writer_may_fill_it {
            if let Some(report) = self.read_failing.occurred(Instant::now()) {
                let lasted_s = match report {
                    Report::Ongoing { lasted, .. } => lasted.as_secs(),
                    _ => 0,
                };
                tracing::warn!(journal = %self.dir.display(), segment = start, failures = count,
                    lasted_s, error = %error, "journal: cannot read a segment; retrying (summarised every 10 s)");
            }
            return Err(error);
        }
        let path = self.dir.join(segment_file_name(start));
        if !quarantine(&self.dir, &path, &error.to_string()) {
            self.ignored.push(start);
        }
        self.segments.retain(|&s| s != start);
        if self.cursor.as_ref().is_some_and(|c| c.start == start) {
            self.cursor = None;
        }
        self.strikes = None;
        Ok(())
    }

    /// The open cursor on segment `start`, opening it if needed; `None` if its file is gone.
    pub(super) fn cursor_for(
        &mut self,
        start: u64,
    ) -> Result<Option<&mut SegmentCursor>, JournalError> {
        if self.cursor.as_ref().is_none_or(|c| c.start != start) {
            self.cursor = None;
            let path = self.dir.join(segment_file_name(start));
            let file = match open_private_file(&path, Create::ReadOnly) {
                Ok(f) => f,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let (cursor, _header) = open_segment(start, &path, file, self.opts.read_window)?;
            self.cursor = Some(cursor);
        }
        Ok(self.cursor.as_mut())
    }

    /// Appends to `out` the payloads of whole records starting at record boundary `from`,
    /// crossing segments, stopping before the record that would take the payload total past
    /// `max_bytes` (at least one record is returned if there is any) and never past `end`.
    /// `None`: nothing there yet. `from` must be `committed()` or an `end` returned earlier,
    /// else `PositionOutOfRange`. Corrupt records are skipped and counted, never returned.
    pub fn read(
        &mut self,
        from: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<ReadSpan>, JournalError> {
        self.read_until(from, None, max_bytes, out)
    }

    /// [`Self::read`], also stopping at `until` (a record boundary): how a span handed out
    /// earlier and not committed is read again, exactly, when it must be re-sent.
    pub fn read_until(
        &mut self,
        from: u64,
        until: Option<u64>,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<ReadSpan>, JournalError> {
        if from >= self.end {
            self.refresh_end()?;
        }
        let end = until.map_or(self.end, |u| u.min(self.end));
        if from < self.committed || from > end || !from.is_multiple_of(8) {
            return Err(JournalError::PositionOutOfRange {
                pos: from,
                committed: self.committed,
                end,
            });
        }
        let mut walk = Walk {
            pos: from,
            end,
            max_bytes,
            span: ReadSpan {
                start: from,
                end: from,
                ..ReadSpan::default()
            },
            next_seq: None,
            relisted: false,
        };
        let out_len = out.len();
        loop {
            match self.walk_segment(&mut walk, out) {
                Ok(true) => {}
                Ok(false) => break,
                // Hand out what was read; the next read meets the fault again, first.
                Err(_) if walk.pos > from => break,
                Err(Stop::Segment { start, error }) => match self.segment_fault(start, error) {
                    Ok(()) => walk.span.corrupt_skipped += 1,
                    Err(e) => {
                        out.truncate(out_len);
                        return Err(e);
                    }
                },
                Err(Stop::Other(e)) => {
                    out.truncate(out_len);
                    return Err(e);
                }
            }
        }
        if walk.pos == from && self.cursor.as_ref().is_some_and(SegmentCursor::is_unlinked) {
            // Caught up on a segment the writer deleted to make room: close it, or its
            // blocks stay taken on a full disk.
            self.cursor = None;
        }
        Ok(self.finish_read(from, walk))
    }

    fn finish_read(&mut self, from: u64, mut walk: Walk) -> Option<ReadSpan> {
        walk.span.end = walk.pos;
        if let Some(s) = walk.next_seq {
            if self.read_seqs.len() >= MAX_READ_SEQS {
                self.read_seqs.pop_front();
            }
            self.read_seqs.push_back((walk.pos, s));
        }
        if walk.pos > from {
            self.strikes = None;
            if let Some(Report::Ended { total, .. }) = self.read_failing.cleared(Instant::now()) {
                tracing::info!(journal = %self.dir.display(), failures = total, "journal: segments read again");
            }
        }
        (walk.pos > from).then_some(walk.span)
    }

    /// One step of a read: moves `w.pos` to the segment holding it (or the next one, over a
    /// gap) and copies that segment's records up to its end. `Ok(false)`: the read is done.
    fn walk_segment(&mut self, w: &mut Walk, out: &mut Vec<u8>) -> Result<bool, Stop> {
        if w.pos >= w.end {
            return Ok(false);
        }
        let idx = self.segments.partition_point(|&s| s <= w.pos);
        if idx == 0 {
            return match self.segments.first() {
                Some(&first) if first <= w.end => {
                    w.pos = first;
                    Ok(true)
                }
                _ => self.relist_once(w),
            };
        }
        let start = self.segments[idx - 1];
        let next = self.segments.get(idx).copied();
        let fault = |error| Stop::Segment { start, error };
        let Some(cursor) = self.cursor_for(start).map_err(fault)? else {
            // Deleted under us (cannot happen: only this reader deletes); re-list.
            return self.relist_once(w);
        };
        let data_len = cursor
            .data_len()
            .map_err(read_err(&cursor.path))
            .map_err(fault)?;
        let data_end = start.saturating_add(data_len.next_multiple_of(8));
        let lim = next.map_or(data_end, |n| data_end.min(n)).min(w.end);
        if w.pos < lim {
            return copy_records(cursor, w, lim, out).map_err(fault);
        }
        match next {
            Some(n) if n <= w.end => {
                w.pos = n;
                Ok(true)
            }
            Some(_) => Ok(false),
            // `end` beyond the files (stale end, or a newer segment not listed yet).
            None => self.relist_once(w),
        }
    }

    fn relist_once(&mut self, w: &mut Walk) -> Result<bool, Stop> {
        if w.relisted {
            return Ok(false);
        }
        w.relisted = true;
        self.refresh_listing().map_err(Stop::Other)?;
        Ok(true)
    }

    /// Records that everything before `pos` (an `end` returned by `read`) was delivered.
    /// A position behind `committed`, beyond `end` or unaligned is ignored with a warning.
    /// Persists the checkpoint when due and then deletes the segments it passed.
    pub fn commit(&mut self, pos: u64) -> Result<(), JournalError> {
        if pos <= self.committed {
            return Ok(());
        }
        if pos > self.end || !pos.is_multiple_of(8) {
            tracing::warn!(journal = %self.dir.display(), pos, committed = self.committed, end = self.end, "journal: ignoring commit outside the readable range");
            return Ok(());
        }
        self.committed = pos;
        while let Some(&(end, seq)) = self.read_seqs.front().filter(|(end, _)| *end <= pos) {
            self.read_seqs.pop_front();
            if end == pos {
                self.committed_next_seq = seq;
            }
        }
        self.state.store_committed(pos, self.committed_next_seq);
        let passes_segment = self.segments.get(1).is_some_and(|&s| s <= pos);
        if passes_segment || self.last_persist.elapsed() >= self.opts.checkpoint_interval {
            self.persist()?;
        }
        Ok(())
    }

    /// Persists the checkpoint now if it is behind `committed` (timer, shutdown), then deletes
    /// the segments it passed.
    pub fn sync_checkpoint(&mut self) -> Result<(), JournalError> {
        if self.committed > self.persisted {
            self.persist()?;
        }
        Ok(())
    }

    fn persist(&mut self) -> Result<(), JournalError> {
        self.checkpoint.store(&Checkpoint {
            position: self.committed,
            next_seq: self.committed_next_seq,
            written_us: 0,
        })?;
        self.persisted = self.committed;
        self.last_persist = Instant::now();
        self.delete_passed()
    }

    /// Deletes every segment the durable checkpoint has passed (never the newest one) and
    /// gives its bytes back to the budget.
    fn delete_passed(&mut self) -> Result<(), JournalError> {
        while self.segments.len() >= 2 && self.segments[1] <= self.persisted {
            let start = self.segments[0];
            let path = self.dir.join(segment_file_name(start));
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(source) => return Err(JournalError::DeleteSegment { path, source }),
            };
            if self.cursor.as_ref().is_some_and(|c| c.start == start) {
                self.cursor = None;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => self.budget.release(len),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(JournalError::DeleteSegment { path, source }),
            }
            self.segments.remove(0);
        }
        Ok(())
    }
}

/// Copies the payloads of the records of one segment from `w.pos` up to `lim` into `out`,
/// skipping and counting corrupt stretches. `Ok(false)`: `max_bytes` stopped it.
fn copy_records(
    cursor: &mut SegmentCursor,
    w: &mut Walk,
    lim: u64,
    out: &mut Vec<u8>,
) -> Result<bool, JournalError> {
    while w.pos < lim {
        let probed = cursor.probe(w.pos, lim).map_err(read_err(&cursor.path))?;
        let Some(h) = probed else {
            let to = cursor
                .resync(w.pos.saturating_add(8), lim)
                .map_err(read_err(&cursor.path))?
                .unwrap_or(lim);
            tracing::warn!(
                path = %cursor.path.display(),
                from = w.pos,
                to,
                "journal: skipped a corrupt or torn stretch"
            );
            w.span.corrupt_skipped += 1;
            w.pos = to;
            continue;
        };
        if h.kind == RecordKind::Data {
            let len = h.len as usize;
            if w.span.records > 0 && w.span.bytes + len as u64 > w.max_bytes as u64 {
                return Ok(false);
            }
            out.extend_from_slice(cursor.payload(w.pos, len));
            w.span.records += 1;
            w.span.bytes += len as u64;
            w.next_seq = Some(h.seq.saturating_add(1));
        }
        w.pos += h.record_len();
    }
    Ok(true)
}

impl Drop for JournalReader {
    fn drop(&mut self) {
        if let Err(e) = self.sync_checkpoint() {
            tracing::error!(journal = %self.dir.display(), error = %e, "journal reader could not persist its last checkpoint (duplicates after restart, not loss)");
        }
    }
}
