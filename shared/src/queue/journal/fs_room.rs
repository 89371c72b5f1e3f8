//! What the spool's file system can hold, so the disk budget in force is never more than the
//! disk really has (`DISK_SPACE` may be sized by hand, or the disk shared with other data).
//!
//! Room for the journals = what they are charged now + what the file system has free for
//! unprivileged users (`statvfs`: `f_bavail × f_frsize`) − a reserve. The reserve is 1/32 of
//! the file system, at most 256 MiB: it keeps room for the small files that are not charged
//! (state and checkpoint files, a few KiB per intake), for logs and for whatever else shares
//! the disk. The figure over-counts by the unwritten tail of each active segment (charged
//! whole, not yet on disk): at most one segment per journal, and a write that then meets a
//! full disk is held back and retried like any other (`docs/journal.md`, "When the disk fills").

use std::path::Path;

/// The reserve's share of the file system (1/32) ...
const RESERVE_DIVISOR: u64 = 32;
/// ... and its cap.
const RESERVE_MAX: u64 = 256 << 20;

/// The spool file system's figures, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsRoom {
    /// Size of the file system.
    pub size: u64,
    /// Free for unprivileged users.
    pub available: u64,
    /// Kept free: see the module doc.
    pub reserve: u64,
}

impl FsRoom {
    /// `statvfs` of the file system holding `path` (or its nearest existing ancestor, so
    /// `check` can answer before the spool directory exists).
    pub fn of(path: &Path) -> std::io::Result<FsRoom> {
        let mut at = path;
        let st = loop {
            match nix::sys::statvfs::statvfs(at) {
                Ok(st) => break st,
                Err(nix::errno::Errno::ENOENT) => match at.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                    _ => return Err(std::io::ErrorKind::NotFound.into()),
                },
                Err(e) => return Err(e.into()),
            }
        };
        let frsize = st.fragment_size() as u64;
        let size = (st.blocks() as u64).saturating_mul(frsize);
        Ok(FsRoom {
            size,
            available: (st.blocks_available() as u64).saturating_mul(frsize),
            reserve: (size / RESERVE_DIVISOR).min(RESERVE_MAX),
        })
    }

    /// Bytes the journals may be charged, given they are charged `used` now.
    pub fn room_for_journals(&self, used: u64) -> u64 {
        used.saturating_add(self.available)
            .saturating_sub(self.reserve)
    }
}
