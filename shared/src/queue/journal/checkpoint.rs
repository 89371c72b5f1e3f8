//! The reader's durable checkpoint: "everything before `position` was delivered".
//!
//! Written **in place**, so persisting it never needs a new disk block (a full disk must not
//! stop delivery): the file is created once, 1024 bytes of zeros written and synced (so its
//! block exists), and from then on every store overwrites one of two 64-byte slots and
//! `fdatasync`s. No temporary file, no rename, no size change.
//!
//! ```text
//! file `checkpoint` (format 2), 1024 bytes: slot 0 at offset 0, slot 1 at offset 512
//! struct Slot {               // changing a field means a new CHECKPOINT_VERSION
//!     magic:      [u8; 8],  //  0  b"SKFJCKP2"
//!     version:    u32,      //  8  CHECKPOINT_VERSION = 2
//!     crc:        u32,      // 12  CRC-32C (Castagnoli) of bytes 16..64
//!     seq:        u64,      // 16  store counter: the valid slot with the larger seq wins
//!     position:   u64,      // 24  logical position, a record boundary
//!     next_seq:   u64,      // 32  seq after the last record known delivered (0: unknown)
//!     written_us: i64,      // 40  µs since the Unix epoch
//!     reserved:   [u8; 16], // 48  0 when written, ignored when read
//! }
//! ```
//!
//! Store number `seq` goes to slot `seq % 2`, so a store never overwrites the newest valid
//! slot: a torn or failed write damages only the slot being written, and the other one
//! (the previous checkpoint) wins. The slots are 512 bytes apart, in different sectors.
//! Both slots bad means no checkpoint: reading restarts at the oldest segment (duplicates,
//! never loss), and the next store writes a good slot.
//!
//! **Format 1** (48 bytes, written through `checkpoint.tmp` and a rename by older builds) is
//! read for upgrades: [`CheckpointFile::prepare`] extends such a file in place to 1024 bytes,
//! keeping its bytes at offset 0, and the first store goes to slot 1; until a format-2 slot
//! is valid, bytes 0..48 are read as format 1, so an interrupted upgrade loses nothing.
//!
//! Decoding checks the file, not what its position means: a position beyond
//! [`super::MAX_POSITION`] is refused like a damaged slot; any other position is returned as
//! written and checked against the segments by the reader (`settle_position` below: it moves
//! back to a record boundary, never forward over data).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::reader::JournalReader;
use super::{unix_micros, JournalError, CHECKPOINT_FILE, CHECKPOINT_TMP_FILE, MAX_POSITION};
use crate::queue::shared_file::{open_for_creation, open_private_file, Create};

const MAGIC_V1: [u8; 8] = *b"SKFJCKPT";
const MAGIC: [u8; 8] = *b"SKFJCKP2";
const CHECKPOINT_VERSION: u32 = 2;
/// Size of a format-1 checkpoint file.
pub const CHECKPOINT_V1_LEN: usize = 48;
/// Size of one slot.
pub const SLOT_LEN: usize = 64;
/// Offset of slot 1 (slot 0 is at 0).
const SLOT1_AT: u64 = 512;
/// Size of the checkpoint file.
pub const CHECKPOINT_FILE_LEN: u64 = 1024;

/// A decoded checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Everything before this logical position was delivered.
    pub position: u64,
    /// Seq after the last record known delivered (0 when unknown); a floor for seq numbers.
    pub next_seq: u64,
    /// When it was written, µs since the Unix epoch.
    pub written_us: i64,
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(x)
}

fn check_position(position: u64) -> Result<u64, String> {
    match position > MAX_POSITION {
        true => Err(format!(
            "position {position} is beyond {MAX_POSITION}, which no writer reaches"
        )),
        false => Ok(position),
    }
}

impl Checkpoint {
    /// The 64 bytes of a slot holding this checkpoint as store number `seq`.
    pub fn encode_slot(&self, seq: u64) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.position.to_le_bytes());
        b[32..40].copy_from_slice(&self.next_seq.to_le_bytes());
        b[40..48].copy_from_slice(&self.written_us.to_le_bytes());
        let crc = crc32c::crc32c(&b[16..]);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes one slot: `(seq, checkpoint)`, or the reason in words.
    pub fn decode_slot(b: &[u8]) -> Result<(u64, Checkpoint), String> {
        if b.len() != SLOT_LEN {
            return Err(format!("{} bytes, expected {SLOT_LEN}", b.len()));
        }
        if b[0..8] != MAGIC {
            return Err(format!(
                "magic {:02x?} is not a checkpoint slot's",
                &b[0..8]
            ));
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != CHECKPOINT_VERSION {
            return Err(format!(
                "format version {version}, this build writes version {CHECKPOINT_VERSION}"
            ));
        }
        let crc = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if crc != crc32c::crc32c(&b[16..]) {
            return Err("CRC-32C mismatch".into());
        }
        let c = Checkpoint {
            position: check_position(u64_at(b, 24))?,
            next_seq: u64_at(b, 32),
            written_us: u64_at(b, 40) as i64,
        };
        Ok((u64_at(b, 16), c))
    }

    /// Decodes a format-1 file (48 bytes: magic, version 1, CRC-32C of 16..48, position,
    /// next_seq, written_us, reserved), read once for upgrades.
    pub fn decode_v1(b: &[u8]) -> Result<Checkpoint, String> {
        if b.len() != CHECKPOINT_V1_LEN || b[0..8] != MAGIC_V1 {
            return Err("not a format-1 checkpoint".into());
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        let crc = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if version != 1 || crc != crc32c::crc32c(&b[16..]) {
            return Err("format-1 checkpoint with a bad version or CRC-32C".into());
        }
        Ok(Checkpoint {
            position: check_position(u64_at(b, 16))?,
            next_seq: u64_at(b, 24),
            written_us: u64_at(b, 32) as i64,
        })
    }

    /// The format-1 bytes (older builds' file; tests of the upgrade write it).
    #[cfg(test)]
    pub fn encode_v1(&self) -> [u8; CHECKPOINT_V1_LEN] {
        let mut b = [0u8; CHECKPOINT_V1_LEN];
        b[0..8].copy_from_slice(&MAGIC_V1);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[16..24].copy_from_slice(&self.position.to_le_bytes());
        b[24..32].copy_from_slice(&self.next_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.written_us.to_le_bytes());
        let crc = crc32c::crc32c(&b[16..]);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads `dir/checkpoint` (either format): `Ok(None)` when there is none or it is
    /// damaged (warned about, naming the file); an I/O error other than "not found" is an
    /// error.
    pub(crate) fn load(dir: &Path) -> Result<Option<Checkpoint>, JournalError> {
        let path = dir.join(CHECKPOINT_FILE);
        match read_file(&path)? {
            None | Some(Ok(None)) => Ok(None),
            Some(Ok(Some((_, c)))) => Ok(Some(c)),
            Some(Err(reason)) => {
                tracing::warn!(path = %path.display(), %reason, "damaged checkpoint ignored: reading restarts at the oldest segment (duplicates, not loss)");
                Ok(None)
            }
        }
    }

    /// The durable position, quietly (the writer asks while it is held back): 0 when there
    /// is no readable checkpoint.
    pub(crate) fn durable_position(dir: &Path) -> u64 {
        match read_file(&dir.join(CHECKPOINT_FILE)) {
            Ok(Some(Ok(Some((_, c))))) => c.position,
            _ => 0,
        }
    }

    /// Stores this checkpoint in `dir` (opening and preparing the file): for tests and
    /// one-off repairs; the reader keeps a [`CheckpointFile`] open instead.
    #[cfg(test)]
    pub(crate) fn store(&self, dir: &Path) -> Result<(), JournalError> {
        let mut file = CheckpointFile::new(dir);
        file.seq = match read_file(&file.path)? {
            Some(Ok(Some((seq, _)))) => seq,
            _ => 0,
        };
        file.store(self)
    }
}

/// A decoded file: `(seq, checkpoint)` of the winning slot, `None` for a file prepared and
/// never stored, or why there is none.
type Decoded = Result<Option<(u64, Checkpoint)>, String>;

/// Reads and decodes the checkpoint file at `path`: `None` when it does not exist, else
/// what [`decode_file`] says (seq 0 for format 1).
fn read_file(path: &Path) -> Result<Option<Decoded>, JournalError> {
    let file = match open_private_file(path, Create::ReadOnly) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let io = |source| JournalError::Checkpoint {
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    let mut bytes = vec![0u8; len.min(CHECKPOINT_FILE_LEN) as usize];
    file.read_exact_at(&mut bytes, 0).map_err(io)?;
    Ok(Some(decode_file(&bytes)))
}

/// The winning checkpoint of a file's bytes (see the module doc).
pub fn decode_file(bytes: &[u8]) -> Decoded {
    if bytes.len() == CHECKPOINT_V1_LEN {
        return Checkpoint::decode_v1(bytes).map(|c| Some((0, c)));
    }
    if bytes.len() as u64 != CHECKPOINT_FILE_LEN {
        return Err(format!(
            "{} bytes, expected {CHECKPOINT_FILE_LEN} (or {CHECKPOINT_V1_LEN}, format 1)",
            bytes.len()
        ));
    }
    let at = SLOT1_AT as usize;
    let slots = [
        Checkpoint::decode_slot(&bytes[..SLOT_LEN]),
        Checkpoint::decode_slot(&bytes[at..at + SLOT_LEN]),
    ];
    let zeros = |b: &[u8]| b.iter().all(|&x| x == 0);
    if zeros(&bytes[..SLOT_LEN]) && zeros(&bytes[at..at + SLOT_LEN]) {
        return Ok(None); // prepared, never stored
    }
    match slots {
        [Ok(a), Ok(b)] => Ok(Some(if b.0 > a.0 { b } else { a })),
        [Ok(a), Err(_)] => Ok(Some(a)),
        [Err(_), Ok(b)] => Ok(Some(b)),
        [Err(a), Err(b)] => match Checkpoint::decode_v1(&bytes[..CHECKPOINT_V1_LEN]) {
            Ok(c) => Ok(Some((0, c))), // an upgrade that stopped before its first store
            Err(_) => Err(format!(
                "both slots are unusable (slot 0: {a}; slot 1: {b})"
            )),
        },
    }
}

/// The checkpoint file as the reader writes it: opened and prepared once (see
/// [`CheckpointFile::prepare`]), then overwritten slot by slot.
pub(crate) struct CheckpointFile {
    path: PathBuf,
    file: Option<File>,
    /// The seq of the newest slot written (or found).
    seq: u64,
}

impl CheckpointFile {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(CHECKPOINT_FILE),
            file: None,
            seq: 0,
        }
    }

    /// Loads the checkpoint (either format) and prepares the file for in-place stores. A
    /// file that cannot be prepared now (a full or read-only disk) is warned about and
    /// prepared again at the next store; reading goes on.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Option<Checkpoint>), JournalError> {
        let mut file = Self::new(dir);
        let found = match read_file(&file.path) {
            Err(e) if !e.is_retryable() => {
                tracing::error!(path = %file.path.display(), error = %e, "journal: cannot read the checkpoint; reading starts at the oldest segment (duplicates, not loss)");
                None
            }
            other => other?,
        };
        let ckpt = match found {
            None | Some(Ok(None)) => None,
            Some(Ok(Some((seq, c)))) => {
                file.seq = seq;
                Some(c)
            }
            Some(Err(reason)) => {
                tracing::warn!(path = %file.path.display(), %reason, "damaged checkpoint ignored: reading restarts at the oldest segment (duplicates, not loss)");
                None
            }
        };
        if let Err(e) = file.prepare() {
            tracing::warn!(path = %file.path.display(), error = %e, "journal: cannot prepare the checkpoint file yet; retried at the next checkpoint");
        }
        let _ = std::fs::remove_file(dir.join(CHECKPOINT_TMP_FILE)); // format 1's leftover
        Ok((file, ckpt))
    }

    /// Makes the file 1024 bytes with its block allocated: zeros are written (and synced)
    /// wherever it is shorter, never over bytes that are there (a format-1 file keeps its
    /// 48 bytes at offset 0 until the second store). A file of any other length is damaged:
    /// its content was already ignored, and it is zeroed.
    fn prepare(&mut self) -> Result<&File, JournalError> {
        if self.file.is_none() {
            let io = |source| JournalError::Checkpoint {
                path: self.path.clone(),
                source,
            };
            let (file, _lock, len) = open_for_creation(&self.path)?;
            if len != CHECKPOINT_FILE_LEN {
                let keep = match len == CHECKPOINT_V1_LEN as u64 {
                    true => len,
                    false => 0,
                };
                let zeros = vec![0u8; (CHECKPOINT_FILE_LEN - keep) as usize];
                file.write_all_at(&zeros, keep).map_err(io)?;
                file.set_len(CHECKPOINT_FILE_LEN).map_err(io)?;
                file.sync_all().map_err(io)?;
                if len == 0 {
                    if let Some(dir) = self.path.parent() {
                        super::sync_dir(dir).map_err(io)?;
                    }
                }
            }
            self.file = Some(file);
        }
        Ok(self.file.as_ref().expect("just set"))
    }

    /// Writes `c` into the slot that does not hold the newest checkpoint, and syncs it.
    pub(crate) fn store(&mut self, c: &Checkpoint) -> Result<(), JournalError> {
        let seq = self.seq + 1;
        let c = Checkpoint {
            written_us: unix_micros(),
            ..*c
        };
        let at = if seq.is_multiple_of(2) { 0 } else { SLOT1_AT };
        let path = self.path.clone();
        let io = |source| JournalError::Checkpoint { path, source };
        let file = self.prepare()?;
        file.write_all_at(&c.encode_slot(seq), at)
            .and_then(|()| file.sync_data())
            .map_err(io)?;
        self.seq = seq;
        Ok(())
    }
}

/// Where reading starts for a checkpoint: its position comes from a file, so it is checked
/// against the segments before anything trusts it (nothing is deleted on its word first).
impl JournalReader {
    /// Sets `committed` and `persisted` from the checkpoint. Where its position is not a
    /// record boundary the files hold, reading starts at one *before* it rather than after:
    /// a record may be sent twice, never lost.
    ///
    /// | checkpoint position                         | reading starts at                      |
    /// |---------------------------------------------|----------------------------------------|
    /// | a record boundary (the normal case)         | it                                     |
    /// | inside a record, or not 8-aligned           | the start of that record               |
    /// | inside a corrupt stretch                    | the start of the stretch (re-skipped)  |
    /// | past the newest segment's data              | the oldest segment's start             |
    /// | in a gap between segments, or no segments   | it, rounded up to 8 (nothing is there) |
    /// | before the oldest segment                   | the oldest segment's start             |
    /// | beyond `MAX_POSITION`                       | refused when decoded: the oldest start |
    ///
    /// A changed position is logged and written back, so the writer (which floors its end at
    /// the checkpoint) and the next open see the repaired value.
    pub(super) fn start_at_checkpoint(&mut self, ckpt: Option<Checkpoint>) {
        let first = self.segments.first().copied().unwrap_or(0);
        let persisted = match ckpt {
            None => 0,
            Some(c) => {
                let (settled, why) = self.settle_position(c.position);
                if let Some(why) = why {
                    self.store_repaired(c, settled, why);
                }
                settled
            }
        };
        self.committed = persisted.max(first);
        self.persisted = persisted;
        self.end = self.committed;
        // The checkpoint's seq describes its own position only; a settled one is unknown.
        let seq = match ckpt {
            Some(c) if c.position == self.committed => self.committed_next_seq,
            _ => 0,
        };
        self.state.store_committed(self.committed, seq);
    }

    /// Where reading starts for a checkpoint at `pos`, and why it differs, if it does.
    fn settle_position(&mut self, pos: u64) -> (u64, Option<&'static str>) {
        let idx = self.segments.partition_point(|&s| s <= pos);
        if idx == 0 {
            let up = pos.next_multiple_of(8);
            return match self.segments.is_empty() && up != pos {
                true => (up, Some("not 8-aligned (no segment holds it): rounded up")),
                false => (pos, None),
            };
        }
        let start = self.segments[idx - 1];
        let newest = idx == self.segments.len();
        let oldest = self.segments[0];
        const UNREADABLE: &str = "its segment cannot be read now: the segment is read again";
        let Ok(Some(cursor)) = self.cursor_for(start) else {
            return (start, Some(UNREADABLE));
        };
        let Ok(data_len) = cursor.data_len() else {
            return (start, Some(UNREADABLE));
        };
        let data_end = start.saturating_add(data_len.next_multiple_of(8));
        if pos >= data_end {
            return match (pos == data_end, newest) {
                (true, _) => (pos, None),
                (false, true) => (
                    oldest,
                    Some("beyond the data of every segment: everything is read again"),
                ),
                (false, false) if pos.is_multiple_of(8) => (pos, None),
                (false, false) => (
                    pos.next_multiple_of(8),
                    Some("not 8-aligned, in a gap between segments: rounded up"),
                ),
            };
        }
        let verifies = pos.is_multiple_of(8) && matches!(cursor.probe(pos, data_end), Ok(Some(_)));
        if pos == start || verifies {
            return (pos, None);
        }
        let back = cursor
            .boundary_at_or_before(start, pos, data_end)
            .unwrap_or(start);
        (
            back,
            Some("not a record boundary: moved back to the start of the record it falls in"),
        )
    }

    /// Logs a repaired checkpoint and stores it (best effort: a failure only means the repair
    /// is done again at the next open).
    fn store_repaired(&mut self, c: Checkpoint, position: u64, why: &'static str) {
        let path = self.dir.join(CHECKPOINT_FILE);
        tracing::warn!(
            path = %path.display(),
            checkpoint = c.position,
            position,
            reason = why,
            "journal: checkpoint position does not fit the segments; reading starts at `position`"
        );
        if let Err(e) = self.checkpoint.store(&Checkpoint { position, ..c }) {
            tracing::warn!(path = %path.display(), error = %e, "journal: cannot store the repaired checkpoint");
        }
    }
}
