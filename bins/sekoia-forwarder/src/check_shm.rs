//! Is there room in `SHM_DIR`'s file system (`/dev/shm`, a tmpfs) for the rings this
//! configuration needs? Asked by `check` and once at start, before any ring is created.
//!
//! Why refuse rather than warn: a new ring reserves its whole file (`posix_fallocate`, see
//! `queue::ring`), so a too-small `/dev/shm` already fails there, but with a bare "No space
//! left on device". A ring reopened after a restart reserves nothing (its free part was given
//! back as holes), so a `/dev/shm` shrunk since (a container re-created with its 64 MB
//! default) would only show when the ring fills: its worker dies of SIGBUS while writing an
//! event it accepted. So the start refuses, naming the size needed and the fix.
//!
//! The figures: needed = the file of every ring (an existing ring keeps its size, a new one
//! is `ring_capacity(queue_size)` plus its header) plus a little for the instance's small
//! files; room = what the file system has free plus what our own existing ring files already
//! hold (they are counted in "needed" too). Files of other forwarders sharing `SHM_DIR`
//! count as used, as they are.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sekoia_shared::config::{ConfigErrors, ForwarderConfig, Problem};
use sekoia_shared::queue::layout::{InstanceDir, QueueKey};
use sekoia_shared::queue::{FsRoom, Ring};

use crate::instance::ring_capacity;

/// The instance's other files (configuration, doorbell, disk budget, locks): a few pages.
const SMALL_FILES: u64 = 256 << 10;
const SETTING: &str = "--shm-dir / SHM_DIR";

/// What the rings need and what the file system can give them, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmRoom {
    /// Every ring file, whole, plus the small files.
    pub needed: u64,
    /// Blocks our existing ring files already hold (part of `needed`, not of `free`).
    pub held: u64,
    /// Free in the file system for unprivileged users.
    pub free: u64,
    /// Size of the file system.
    pub size: u64,
}

impl ShmRoom {
    /// Bytes missing for every ring to be backed, if any.
    pub fn shortfall(&self) -> Option<u64> {
        let room = self.free.saturating_add(self.held);
        (self.needed > room).then(|| self.needed - room)
    }
}

/// A ring file the configuration needs: where, and how big it is or will be.
struct RingFile {
    path: PathBuf,
    queue_size: u64,
}

/// Measures `SHM_DIR` for `cfg`, creating nothing.
pub fn measure(cfg: &ForwarderConfig, shm_dir: &Path) -> std::io::Result<ShmRoom> {
    let fs = FsRoom::of(shm_dir)?;
    let instance = InstanceDir::path_of(shm_dir, &cfg.settings.spool_dir);
    let rings = cfg.intakes.iter().map(|intake| RingFile {
        path: InstanceDir::ring_path_in(&instance, QueueKey::of(intake)),
        queue_size: intake.queue_size,
    });
    let (mut needed, mut held) = (SMALL_FILES, 0u64);
    for ring in rings {
        // Never followed: a link planted there is not our ring (the start moves it aside).
        match std::fs::symlink_metadata(&ring.path) {
            Ok(meta) if meta.is_file() => {
                needed = needed.saturating_add(meta.len());
                held = held.saturating_add(meta.blocks().saturating_mul(512));
            }
            _ => needed = needed.saturating_add(Ring::file_len(ring_capacity(ring.queue_size))),
        }
    }
    Ok(ShmRoom {
        needed,
        held,
        free: fs.available,
        size: fs.size,
    })
}

/// The problem to list when `SHM_DIR` is too small for the rings; `Err` holds a warning
/// when the file system cannot be measured.
pub fn problem(cfg: &ForwarderConfig, shm_dir: &Path) -> Result<Option<Problem>, Problem> {
    let room = measure(cfg, shm_dir).map_err(|e| {
        Problem::setting(
            SETTING,
            format!(
                "cannot measure the file system of {}: {e}; the room for the rings is not checked",
                shm_dir.display()
            ),
            "make SHM_DIR (or its parent folder) readable",
        )
    })?;
    Ok(room
        .shortfall()
        .map(|missing| too_small(cfg, shm_dir, &room, missing)))
}

/// At start: refuses a configuration whose rings `SHM_DIR` cannot back (module doc); only
/// logs when the file system cannot be measured.
pub fn refuse_if_too_small(cfg: &ForwarderConfig, shm_dir: &Path) -> Result<(), ConfigErrors> {
    match problem(cfg, shm_dir) {
        Ok(None) => Ok(()),
        Ok(Some(problem)) => Err(ConfigErrors(vec![problem])),
        Err(warning) => {
            tracing::warn!("{warning}");
            Ok(())
        }
    }
}

fn too_small(cfg: &ForwarderConfig, shm_dir: &Path, room: &ShmRoom, missing: u64) -> Problem {
    // Docker's --shm-size is the size of the whole file system: today's plus what is missing.
    let suggest = room.size.saturating_add(missing).div_ceil(1 << 20);
    Problem::setting(
        SETTING,
        format!(
            "the memory queues (rings) of {} intake(s) need {} in {} and its file system \
             ({} in all) has {} free{}: a ring that cannot be backed would stop its worker \
             with SIGBUS, losing the events it holds",
            cfg.intakes.len(),
            human(room.needed),
            shm_dir.display(),
            human(room.size),
            human(room.free),
            if room.held > 0 {
                format!(" beside the {} our rings already hold", human(room.held))
            } else {
                String::new()
            },
        ),
        format!(
            "give it at least {suggest}m (Docker: `--shm-size={suggest}m`, docker-compose: \
             `shm_size: {suggest}m`; or mount a larger tmpfs at SHM_DIR), or lower \
             MEMORY_MESSAGES or the intakes' queue_size (a ring takes queue_size x 512 bytes \
             rounded up to a power of two, at least 1 MiB)"
        ),
    )
}

/// Bytes in MiB with one decimal (`64.0 MiB`).
fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(needed: u64, held: u64, free: u64) -> ShmRoom {
        ShmRoom {
            needed,
            held,
            free,
            size: 64 << 20,
        }
    }

    #[test]
    fn shortfall_counts_what_our_rings_already_hold_as_room() {
        assert_eq!(room(100, 0, 100).shortfall(), None);
        assert_eq!(room(100, 0, 99).shortfall(), Some(1));
        assert_eq!(room(100, 40, 60).shortfall(), None);
        assert_eq!(room(100, 40, 59).shortfall(), Some(1));
    }

    #[test]
    fn one_default_intake_does_not_fit_a_docker_default_shm() {
        // MEMORY_MESSAGES=100000 and one intake: a 64 MiB ring plus its header page.
        let needed = SMALL_FILES + Ring::file_len(ring_capacity(100_000));
        assert!(room(needed, 0, 64 << 20).shortfall().is_some());
        assert!(room(needed, 0, 65 << 20).shortfall().is_none());
    }
}
