//! The disk side of each intake's queue, in `SPOOL_DIR`:
//!
//! ```text
//! SPOOL_DIR/journal-<proto>-<port>/   the ring's overflow (written by the ingest worker)
//! SPOOL_DIR/saved-<proto>-<port>/     the memory tier written out at an orderly stop
//!                                     (written by the supervisor, drained first at start)
//! ```
//! Both are journals (`queue::journal`: segments of CRC-32C records, a checkpoint). They
//! share one `DISK_SPACE` budget, a counter in the instance directory every process maps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sekoia_shared::config::ForwarderConfig;
use sekoia_shared::queue::{DiskBudget, JournalOptions, SyncPolicy};

/// Largest journal segment; smaller when `DISK_SPACE` is small, so the budget always holds a
/// few segments of every intake.
const MAX_SEGMENT: u64 = 64 << 20;
const MIN_SEGMENT: u64 = 64 << 10;

/// The intake key of a ring file (`intake-tcp-514.ring` → `tcp-514`).
pub fn key_of_ring(ring: &Path) -> Option<String> {
    let stem = ring.file_stem()?.to_str()?;
    stem.strip_prefix("intake-").map(str::to_string)
}

pub fn journal_dir(spool: &Path, key: &str) -> PathBuf {
    spool.join(format!("journal-{key}"))
}

pub fn saved_dir(spool: &Path, key: &str) -> PathBuf {
    spool.join(format!("saved-{key}"))
}

/// Keys of every journal or saved directory in the spool (intakes removed from the
/// configuration included: what they queued is still sent).
pub fn keys_on_disk(spool: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    if let Ok(entries) = std::fs::read_dir(spool) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let key = name
                .strip_prefix("journal-")
                .or_else(|| name.strip_prefix("saved-"));
            if let Some(key) = key {
                if e.path().is_dir() && !keys.iter().any(|k: &String| k == key) {
                    keys.push(key.to_string());
                }
            }
        }
    }
    keys.sort();
    keys
}

pub fn budget_path(state_dir: &Path) -> PathBuf {
    state_dir.join("disk.budget")
}

pub fn open_budget(state_dir: &Path) -> Result<DiskBudget> {
    let path = budget_path(state_dir);
    DiskBudget::open(&path).with_context(|| format!("cannot open disk budget {}", path.display()))
}

/// Journal settings for this configuration: segment size from the budget, fsync policy
/// from `JOURNAL_SYNC`.
pub fn options(cfg: &ForwarderConfig, sync_always: bool) -> JournalOptions {
    let journals = (cfg.intakes.len().max(1) as u64) * 2;
    let segment = (cfg.settings.disk_space / (4 * journals)).clamp(MIN_SEGMENT, MAX_SEGMENT) & !7;
    JournalOptions {
        segment_bytes: segment,
        sync: if sync_always {
            SyncPolicy::Always
        } else {
            SyncPolicy::Batch {
                interval: Duration::from_secs(1),
            }
        },
        ..JournalOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_file_names_give_intake_keys() {
        assert_eq!(
            key_of_ring(Path::new("/x/intake-tcp-514.ring")).as_deref(),
            Some("tcp-514")
        );
        assert_eq!(key_of_ring(Path::new("/x/other.ring")), None);
    }

    #[test]
    fn keys_on_disk_lists_journal_and_saved_dirs_once() {
        let dir = std::env::temp_dir().join(format!("sekoia-spool-{}", std::process::id()));
        for d in ["journal-tcp-1", "saved-tcp-1", "saved-udp-2", "unrelated"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        assert_eq!(
            keys_on_disk(&dir),
            vec!["tcp-1".to_string(), "udp-2".to_string()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
