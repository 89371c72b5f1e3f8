//! `STATS_FILE`: the local copy of the monitoring objects, one line each, as rsyslog's
//! impstats `log.file` writes them: `<ctime>: <json>` (`Tue Dec  1 01:23:37 2026: { ... }`,
//! local time). It is what operators read when the forwarder cannot send at all.
//!
//! Rotation: before a write that would take the file past `max_bytes` (10 MB in production,
//! [`ROTATE_AT`]), `FILE.1` becomes `FILE.2`, `FILE` becomes `FILE.1`, and a new `FILE` is
//! started, so at most [`FILES_KEPT`] files exist: `FILE`, `FILE.1`, `FILE.2`.
//!
//! The file is opened like the forwarder's private files (`queue::shared_file`): created
//! 0600 (a looser mode is tightened), never through a symbolic link (`O_NOFOLLOW`), and
//! refused when it is not a regular file, has other hard links, or belongs to another user,
//! so a link planted in a log folder cannot make the supervisor append to another file. A
//! missing folder is created 0700. Every failure is returned to the caller, which logs it
//! and goes on: the stats file never stops the forwarder.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Size at which the file is rotated in production.
pub const ROTATE_AT: u64 = 10_000_000;
/// Files kept: the current one and two rotated ones.
pub const FILES_KEPT: usize = 3;

/// The stats log, reopened after each rotation.
#[derive(Debug)]
pub struct StatsFile {
    path: PathBuf,
    max_bytes: u64,
    file: Option<(File, u64)>,
}

impl StatsFile {
    pub fn new(path: &Path, max_bytes: u64) -> Self {
        Self {
            path: path.to_path_buf(),
            max_bytes,
            file: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` (each without its newline) stamped with `stamp`, in one write,
    /// rotating first when they would take the file past the size limit.
    pub fn append(&mut self, stamp: &str, lines: &[String]) -> io::Result<()> {
        let mut text = String::new();
        for line in lines {
            text.push_str(stamp);
            text.push_str(": ");
            text.push_str(line);
            text.push('\n');
        }
        let size = match &self.file {
            Some((_, size)) => *size,
            None => self.open()?,
        };
        if size > 0 && size + text.len() as u64 > self.max_bytes {
            self.file = None;
            self.rotate()?;
            self.open()?;
        }
        let Some((file, size)) = self.file.as_mut() else {
            return Err(io::Error::other("stats file not open"));
        };
        if let Err(e) = file.write_all(text.as_bytes()) {
            // Reopen next time: the file may have been replaced or its disk remounted.
            self.file = None;
            return Err(e);
        }
        *size += text.len() as u64;
        Ok(())
    }

    /// Opens (creating) the file; returns its size.
    fn open(&mut self) -> io::Result<u64> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            // O_NONBLOCK: a FIFO planted here must not block the open; it is refused below.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&self.path)?;
        let meta = file.metadata()?;
        let refuse = |why: &str| {
            Err(io::Error::other(format!(
                "{} {why}; remove it or choose another STATS_FILE",
                self.path.display()
            )))
        };
        if !meta.is_file() {
            return refuse("is not a regular file");
        }
        if meta.nlink() > 1 {
            return refuse("has other hard links");
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return refuse("belongs to another user");
        }
        if meta.mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        let size = meta.len();
        self.file = Some((file, size));
        Ok(size)
    }

    /// `FILE.1` → `FILE.2`, `FILE` → `FILE.1` (renames move the names, never follow links).
    fn rotate(&self) -> io::Result<()> {
        for n in (1..FILES_KEPT).rev() {
            let from = if n == 1 {
                self.path.clone()
            } else {
                numbered(&self.path, n - 1)
            };
            match std::fs::rename(&from, numbered(&self.path, n)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `FILE.n`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The time stamp of a line: local time as `ctime()` writes it, without its newline.
pub fn ctime_stamp(now: chrono::DateTime<chrono::Local>) -> String {
    now.format("%a %b %e %H:%M:%S %Y").to_string()
}

#[cfg(test)]
mod tests;
