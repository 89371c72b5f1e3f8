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
//! Commit: `commit(pos)` stores `pos` in the state file at once (the writer's `is_drained`
//! sees it) and persists the checkpoint at most every `checkpoint_interval`, and always when
//! the oldest segment is fully passed; segments are deleted only after the checkpoint that
//! passes them is durable, and their bytes go back to the [`DiskBudget`].

use crate::queue::shared_file::{open_private_file, Create};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::budget::DiskBudget;
use super::checkpoint::Checkpoint;
use super::segment::{list_dir, open_segment, segment_file_name, warn_foreign, SegmentCursor};
use super::state::{LockByte, SharedState};
use super::{JournalError, JournalOptions};
use crate::queue::record::{pad8, RecordKind};
use crate::queue::ReadSpan;

const MAX_READ_SEQS: usize = 4096;

/// The end found by scanning while no writer was alive, and for which writer life.
#[derive(Debug, Clone, Copy)]
struct ScannedEnd {
    generation: u64,
    end: u64,
}

/// The single reader of one journal (the uplink worker).
pub struct JournalReader {
    dir: PathBuf,
    opts: JournalOptions,
    budget: DiskBudget,
    state: SharedState,
    /// Known segment starts, sorted (refreshed when a read runs past the newest one).
    segments: Vec<u64>,
    cursor: Option<SegmentCursor>,
    end: u64,
    scanned: Option<ScannedEnd>,
    committed: u64,
    /// Position of the durable checkpoint.
    persisted: u64,
    last_persist: Instant,
    /// `(end, seq after its last record)` of recent reads, oldest first, for the checkpoint's
    /// `next_seq` (bounded: the uplink reads ahead of what it commits).
    read_seqs: VecDeque<(u64, u64)>,
    committed_next_seq: u64,
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
    /// checkpoint (or the oldest segment when there is none). Segments the checkpoint has
    /// already passed (a crash between checkpoint and deletion) are deleted now.
    pub fn open(
        dir: &Path,
        budget: DiskBudget,
        opts: JournalOptions,
    ) -> Result<Self, JournalError> {
        opts.validate()?;
        let state = SharedState::open(dir)?;
        state.lock(LockByte::Reader, "reader")?;
        let listing = list_dir(dir).map_err(|e| super::dir_error(dir, e))?;
        warn_foreign(dir, &listing.foreign);
        let ckpt = Checkpoint::load(dir)?;
        let first = listing.segments.first().copied().unwrap_or(0);
        let (committed, persisted) = match ckpt {
            Some(c) => (c.position.max(first), c.position),
            None => (first, 0),
        };
        state.store_committed(committed);
        let mut r = JournalReader {
            dir: dir.to_path_buf(),
            opts,
            budget,
            state,
            segments: listing.segments,
            cursor: None,
            end: committed,
            scanned: None,
            committed,
            persisted,
            last_persist: Instant::now(),
            read_seqs: VecDeque::new(),
            committed_next_seq: ckpt.map_or(0, |c| c.next_seq),
        };
        r.delete_passed()?;
        r.refresh_end()?;
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

    fn scan_end(&mut self) -> Result<u64, JournalError> {
        self.refresh_listing()?;
        let Some(&start) = self.segments.last() else {
            return Ok(self.committed);
        };
        let Some(cursor) = self.cursor_for(start)? else {
            return Ok(self.committed);
        };
        let data_len = cursor.data_len().map_err(read_err(&cursor.path))?;
        let scan = cursor
            .scan(start, start + data_len)
            .map_err(read_err(&cursor.path))?;
        Ok(scan.valid_end)
    }

    fn refresh_listing(&mut self) -> Result<(), JournalError> {
        let listing = list_dir(&self.dir).map_err(|e| super::dir_error(&self.dir, e))?;
        self.segments = listing.segments;
        Ok(())
    }

    /// The open cursor on segment `start`, opening it if needed; `None` if its file is gone.
    fn cursor_for(&mut self, start: u64) -> Result<Option<&mut SegmentCursor>, JournalError> {
        if self.cursor.as_ref().is_none_or(|c| c.start != start) {
            self.cursor = None;
            let path = self.dir.join(segment_file_name(start));
            let file = match open_private_file(&path, Create::No) {
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
        let mut span = ReadSpan {
            start: from,
            end: from,
            ..ReadSpan::default()
        };
        let mut pos = from;
        let mut relisted = false;
        let mut next_seq = None;
        'segments: while pos < end {
            // The segment holding `pos`, or the first one after it (a gap).
            let idx = self.segments.partition_point(|&s| s <= pos);
            if idx == 0 {
                match self.segments.first() {
                    Some(&first) if first <= end => {
                        pos = first;
                        continue;
                    }
                    _ if !relisted => {
                        relisted = true;
                        self.refresh_listing()?;
                        continue;
                    }
                    _ => break,
                }
            }
            let start = self.segments[idx - 1];
            let next = self.segments.get(idx).copied();
            let Some(cursor) = self.cursor_for(start)? else {
                // Deleted under us (cannot happen: only this reader deletes); re-list.
                if relisted {
                    break;
                }
                relisted = true;
                self.refresh_listing()?;
                continue;
            };
            let data_end =
                start + pad8(cursor.data_len().map_err(read_err(&cursor.path))? as usize) as u64;
            let seg_end = next.map_or(data_end, |n| data_end.min(n));
            let lim = seg_end.min(end);
            if pos >= lim {
                match next {
                    Some(n) if n <= end => pos = n,
                    Some(_) => break,
                    None if !relisted => {
                        relisted = true;
                        self.refresh_listing()?;
                    }
                    None => break, // `end` beyond the files (stale end): stop here
                }
                continue;
            }
            while pos < lim {
                let probed = cursor.probe(pos, lim).map_err(read_err(&cursor.path))?;
                match probed {
                    Some(h) => {
                        if h.kind == RecordKind::Data {
                            let len = h.len as usize;
                            if span.records > 0 && span.bytes + len as u64 > max_bytes as u64 {
                                break 'segments;
                            }
                            out.extend_from_slice(cursor.payload(pos, len));
                            span.records += 1;
                            span.bytes += len as u64;
                            next_seq = Some(h.seq + 1);
                        }
                        pos += h.record_len();
                    }
                    None => {
                        let to = cursor
                            .resync(pos + 8, lim)
                            .map_err(read_err(&cursor.path))?
                            .unwrap_or(lim);
                        tracing::warn!(
                            path = %cursor.path.display(),
                            from = pos,
                            to,
                            "journal: skipped a corrupt or torn stretch"
                        );
                        span.corrupt_skipped += 1;
                        pos = to;
                    }
                }
            }
        }
        span.end = pos;
        if let Some(s) = next_seq {
            if self.read_seqs.len() >= MAX_READ_SEQS {
                self.read_seqs.pop_front();
            }
            self.read_seqs.push_back((pos, s));
        }
        Ok((pos > from).then_some(span))
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
        self.state.store_committed(pos);
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
        Checkpoint {
            position: self.committed,
            next_seq: self.committed_next_seq,
            written_us: 0,
        }
        .store(&self.dir)?;
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

impl Drop for JournalReader {
    fn drop(&mut self) {
        if let Err(e) = self.sync_checkpoint() {
            tracing::error!(journal = %self.dir.display(), error = %e, "journal reader could not persist its last checkpoint (duplicates after restart, not loss)");
        }
    }
}
