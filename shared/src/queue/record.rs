//! The record format shared by the shared-memory ring and the on-disk journal.
//!
//! Independent of where records are stored: this file only turns a header into bytes and
//! back, and checks a payload against its checksum. All integers are little-endian; every
//! record starts 8-byte aligned and occupies `record_len(len)` bytes.
//!
//! ```text
//! struct Record {                // changing a field means a new format version
//!     len:          u32,   //  0  payload bytes (DATA); filler bytes after the header (PAD)
//!     crc:          u32,   //  4  CRC-32C (Castagnoli) of bytes 8..32 of this header, then the
//!                          //     payload bytes (DATA only; never the zero padding or PAD filler)
//!     version:      u8,    //  8  RECORD_VERSION = 1
//!     kind:         u8,    //  9  DATA = 1, PAD = 2
//!     flags:        u16,   // 10  FLAG_TRUNCATED = 1
//!     intake_id:    u16,   // 12
//!     reserved:     u16,   // 14  0 when written, ignored when read
//!     seq:          u64,   // 16  per-queue record number, +1 per DATA record (PAD: next one)
//!     recv_time_us: i64,   // 24  reception time, microseconds since the Unix epoch
//!     payload:  [u8; len], // 32
//!     zero padding to the next multiple of 8
//! }
//! ```
//!
//! CRC-32C means the Castagnoli polynomial 0x1EDC6F41 (reflected 0x82F63B78), initial value
//! and final XOR 0xFFFFFFFF, as in iSCSI and ext4: `crc32c(b"123456789") == 0xE306_9283`.
//! It is *not* the zlib/Ethernet CRC-32. The `crc32c` crate uses the SSE 4.2 / ARMv8
//! instruction when the CPU has it.

use crate::queue::RecordMeta;

/// Size of the fixed record header in bytes.
pub const RECORD_HEADER_LEN: usize = 32;
/// The only record format version this code reads and writes.
pub const RECORD_VERSION: u8 = 1;
/// Records start at and are padded to multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Kind byte of a record carrying an event.
pub const KIND_DATA: u8 = 1;
/// Kind byte of filler (the ring's wrap padding); its `len` bytes after the header are skipped.
pub const KIND_PAD: u8 = 2;

/// Why a header or payload was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record format version {found} is not supported (this build reads version {RECORD_VERSION})")]
    UnknownVersion { found: u8 },
    #[error("record kind {found} is unknown (expected 1 = data or 2 = pad)")]
    UnknownKind { found: u8 },
    #[error("payload of {len} bytes does not fit the 32-bit length field")]
    PayloadTooLarge { len: usize },
}

/// Kind of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Carries one event.
    Data,
    /// Filler to be skipped (the ring pads to its end with it).
    Pad,
}

/// A decoded record header (the CRC is checked separately, with the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub len: u32,
    pub crc: u32,
    pub kind: RecordKind,
    pub flags: u16,
    pub intake_id: u16,
    pub seq: u64,
    pub recv_time_us: i64,
}

impl RecordHeader {
    /// Total bytes this record occupies, header and padding included.
    pub fn record_len(&self) -> u64 {
        record_len(self.len as usize) as u64
    }

    /// The metadata the producer passed in.
    pub fn meta(&self) -> RecordMeta {
        RecordMeta {
            intake_id: self.intake_id,
            recv_time_us: self.recv_time_us,
            flags: self.flags,
        }
    }
}

/// Bytes a record with `payload_len` payload bytes occupies: header + payload rounded up to 8.
pub const fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + pad8(payload_len)
}

/// `n` rounded up to a multiple of [`RECORD_ALIGN`].
pub const fn pad8(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

fn encode(len: u32, kind: u8, meta: &RecordMeta, seq: u64) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    // h[4..8] is the crc, filled by the caller.
    h[8] = RECORD_VERSION;
    h[9] = kind;
    h[10..12].copy_from_slice(&meta.flags.to_le_bytes());
    h[12..14].copy_from_slice(&meta.intake_id.to_le_bytes());
    // h[14..16] reserved, zero.
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&meta.recv_time_us.to_le_bytes());
    h
}

/// CRC-32C over the checksummed part of a header (bytes 8..32) followed by `payload`.
pub fn checksum(header: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[8..]), payload)
}

/// Header of a DATA record carrying `payload`, checksum included.
pub fn encode_data_header(
    meta: &RecordMeta,
    seq: u64,
    payload: &[u8],
) -> Result<[u8; RECORD_HEADER_LEN], RecordError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| RecordError::PayloadTooLarge { len: payload.len() })?;
    let mut h = encode(len, KIND_DATA, meta, seq);
    let crc = checksum(&h, payload);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(h)
}

/// Header of a PAD record followed by `filler` bytes to skip (its record spans
/// `RECORD_HEADER_LEN + filler` bytes; `filler` must be a multiple of 8).
pub fn encode_pad_header(filler: u32, intake_id: u16, next_seq: u64) -> [u8; RECORD_HEADER_LEN] {
    let meta = RecordMeta {
        intake_id,
        recv_time_us: 0,
        flags: 0,
    };
    let mut h = encode(filler, KIND_PAD, &meta, next_seq);
    let crc = checksum(&h, &[]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends one whole DATA record (header, payload, zero padding) to `out`.
pub fn encode_record(
    meta: &RecordMeta,
    seq: u64,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    let header = encode_data_header(meta, seq, payload)?;
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    out.resize(out.len() + pad8(payload.len()) - payload.len(), 0);
    Ok(())
}

/// Parses a header. Does not check the CRC (that needs the payload: see [`verify`]).
pub fn decode_header(h: &[u8; RECORD_HEADER_LEN]) -> Result<RecordHeader, RecordError> {
    let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[i..i + 8]);
        u64::from_le_bytes(b)
    };
    if h[8] != RECORD_VERSION {
        return Err(RecordError::UnknownVersion { found: h[8] });
    }
    let kind = match h[9] {
        KIND_DATA => RecordKind::Data,
        KIND_PAD => RecordKind::Pad,
        found => return Err(RecordError::UnknownKind { found }),
    };
    Ok(RecordHeader {
        len: u32_at(0),
        crc: u32_at(4),
        kind,
        flags: u16_at(10),
        intake_id: u16_at(12),
        seq: u64_at(16),
        recv_time_us: u64_at(24) as i64,
    })
}

/// True when `payload` (empty for PAD) matches the CRC stored in the raw header `h`.
pub fn verify(h: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> bool {
    let stored = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    stored == checksum(h, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RecordMeta {
        RecordMeta {
            intake_id: 0x0102,
            recv_time_us: 0x1122_3344_5566_7788,
            flags: crate::queue::FLAG_TRUNCATED,
        }
    }

    #[test]
    fn checksum_is_crc32c_castagnoli_not_crc32() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn golden_bytes_pin_the_record_encoding() {
        let mut out = Vec::new();
        encode_record(&meta(), 0x0807_0605_0403_0201, b"hello", &mut out).unwrap();
        #[rustfmt::skip]
        let golden: [u8; 40] = [
            0x05, 0x00, 0x00, 0x00,                         // len = 5
            0xd1, 0xac, 0x63, 0x43,                         // crc32c (checked with a bitwise reference)
            0x01, 0x01, 0x01, 0x00,                         // version, kind DATA, flags
            0x02, 0x01, 0x00, 0x00,                         // intake_id, reserved
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // seq
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // recv_time_us
            b'h', b'e', b'l', b'l', b'o', 0x00, 0x00, 0x00, // payload + zero padding
        ];
        assert_eq!(out, golden, "{out:02x?}");
    }

    #[test]
    fn decode_returns_what_encode_wrote_and_crc_verifies() {
        let h = encode_data_header(&meta(), 42, b"payload").unwrap();
        let d = decode_header(&h).unwrap();
        assert_eq!(d.kind, RecordKind::Data);
        assert_eq!(d.len, 7);
        assert_eq!(d.seq, 42);
        assert_eq!(d.meta(), meta());
        assert_eq!(d.record_len(), 40);
        assert!(verify(&h, b"payload"));
        assert!(!verify(&h, b"paylaod"));
    }

    #[test]
    fn flipped_header_bit_fails_the_crc() {
        let mut h = encode_data_header(&meta(), 42, b"x").unwrap();
        h[20] ^= 0x10;
        assert!(!verify(&h, b"x"));
    }

    #[test]
    fn pad_header_decodes_as_pad_and_verifies_without_payload() {
        let h = encode_pad_header(64, 3, 9);
        let d = decode_header(&h).unwrap();
        assert_eq!((d.kind, d.len, d.record_len()), (RecordKind::Pad, 64, 96));
        assert!(verify(&h, &[]));
    }

    #[test]
    fn unknown_version_and_kind_are_rejected_in_words() {
        let mut h = encode_data_header(&meta(), 1, b"").unwrap();
        h[8] = 7;
        let e = decode_header(&h).unwrap_err();
        assert_eq!(e, RecordError::UnknownVersion { found: 7 });
        assert!(e.to_string().contains("version 7 is not supported"));
        h[8] = RECORD_VERSION;
        h[9] = 0;
        assert_eq!(
            decode_header(&h),
            Err(RecordError::UnknownKind { found: 0 })
        );
    }

    #[test]
    fn record_len_rounds_payload_up_to_eight() {
        assert_eq!(record_len(0), 32);
        assert_eq!(record_len(1), 40);
        assert_eq!(record_len(8), 40);
        assert_eq!(record_len(9), 48);
    }
}
