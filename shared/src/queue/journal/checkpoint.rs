//! The reader's durable checkpoint: "everything before `position` was delivered".
//!
//! ```text
//! struct Checkpoint {             // changing a field means a new CHECKPOINT_VERSION
//!     magic:      [u8; 8],  //  0  b"SKFJCKPT"
//!     version:    u32,      //  8  CHECKPOINT_VERSION = 1
//!     crc:        u32,      // 12  CRC-32C (Castagnoli) of bytes 16..48
//!     position:   u64,      // 16  logical position, a record boundary
//!     next_seq:   u64,      // 24  seq after the last record known delivered (0: unknown)
//!     written_us: i64,      // 32  µs since the Unix epoch
//!     reserved:   u64,      // 40  0 when written, ignored when read
//! }                         // 48 bytes, the whole file
//! ```
//!
//! Written atomically: `checkpoint.tmp` is created, written, `fdatasync`ed, renamed over
//! `checkpoint`, and the directory is `fsync`ed. A reader therefore finds the old or the new
//! checkpoint, never a mix; the CRC catches anything else (a damaged checkpoint is treated as
//! missing: reading restarts at the oldest segment, which means duplicates, never loss).
//!
//! Decoding checks the file, not what its position means: a position beyond
//! [`super::MAX_POSITION`] is refused like a damaged file (no writer gets there, and keeping
//! positions below it keeps their arithmetic from overflowing); any other position, even one
//! not 8-aligned, is returned as written, and the reader checks it against the segments
//! (`JournalReader::open`: it moves back to a record boundary, never forward over data).

use std::io::Read;
use std::path::Path;

use super::{unix_micros, JournalError, CHECKPOINT_FILE, MAX_POSITION};
use crate::queue::shared_file::{open_private_file, Create, PrivateDir};

const MAGIC: [u8; 8] = *b"SKFJCKPT";
const CHECKPOINT_VERSION: u32 = 1;
/// Size of the checkpoint file.
pub const CHECKPOINT_LEN: usize = 48;

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

impl Checkpoint {
    /// The 48 bytes of the file.
    pub fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut b = [0u8; CHECKPOINT_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.position.to_le_bytes());
        b[24..32].copy_from_slice(&self.next_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.written_us.to_le_bytes());
        let crc = crc32c::crc32c(&b[16..]);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the file's bytes; `Err(reason)` in words.
    pub fn decode(b: &[u8]) -> Result<Checkpoint, String> {
        if b.len() != CHECKPOINT_LEN {
            return Err(format!("{} bytes, expected {CHECKPOINT_LEN}", b.len()));
        }
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        if b[0..8] != MAGIC {
            return Err(format!("magic {:02x?} is not a checkpoint's", &b[0..8]));
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != CHECKPOINT_VERSION {
            return Err(format!(
                "format version {version}, this build understands only version {CHECKPOINT_VERSION}"
            ));
        }
        let crc = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if crc != crc32c::crc32c(&b[16..]) {
            return Err("CRC-32C mismatch".into());
        }
        let position = u64_at(16);
        if position > MAX_POSITION {
            return Err(format!(
                "position {position} is beyond {MAX_POSITION}, which no writer reaches"
            ));
        }
        Ok(Checkpoint {
            position,
            next_seq: u64_at(24),
            written_us: u64_at(32) as i64,
        })
    }

    /// Reads `dir/checkpoint`: `Ok(None)` when there is none or it is damaged (warned about,
    /// naming the file); an I/O error other than "not found" is an error.
    pub(crate) fn load(dir: &Path) -> Result<Option<Checkpoint>, JournalError> {
        let path = dir.join(CHECKPOINT_FILE);
        let mut file = match open_private_file(&path, Create::No) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::with_capacity(CHECKPOINT_LEN);
        file.read_to_end(&mut bytes)
            .map_err(|source| JournalError::Checkpoint {
                path: path.clone(),
                source,
            })?;
        match Checkpoint::decode(&bytes) {
            Ok(c) => Ok(Some(c)),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "damaged checkpoint ignored: reading restarts at the oldest segment (duplicates, not loss)");
                Ok(None)
            }
        }
    }

    /// Writes `dir/checkpoint` atomically and durably (temp file, fdatasync, rename, fsync dir).
    pub(crate) fn store(&self, dir: &Path) -> Result<(), JournalError> {
        let mut c = *self;
        c.written_us = unix_micros();
        PrivateDir::open(dir)?.write_atomically(CHECKPOINT_FILE, &c.encode())?;
        Ok(())
    }
}
