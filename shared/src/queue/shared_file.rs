//! The one way every file under `SHM_DIR` and `SPOOL_DIR` is created, opened, locked and
//! mapped: rings, the doorbell, journal segments, state and checkpoint, the disk budget, the
//! role locks and the configuration handed to the workers.
//!
//! These folders are reachable by other local users (`/dev/shm` is world-writable), and what
//! is found in them steers where every event goes. So nothing found there is trusted as is:
//! - folders are created 0700 and files 0600, whatever the umask (an explicit `fchmod`);
//! - a file is opened with `O_NOFOLLOW` relative to its already-checked folder (`openat`), so
//!   a planted symbolic link is refused and nothing is ever written through one; folders this
//!   module creates inside a checked folder are opened the same way. Only a configured root
//!   (`SPOOL_DIR`, `SHM_DIR` and their ancestors) may be reached through a link, and the
//!   folder it leads to is checked like any other;
//! - a folder or file owned by another user, or writable by group or others, is refused with
//!   an error naming the path and the fix; a file must be a regular file with one link. A
//!   file of ours that is merely readable by others (an older build's 0644) is tightened.
//!
//! [`open_for_creation`] adds the creation lock (`flock`) every shared file is initialised
//! under; [`SharedPage`] maps a small file of atomic words (doorbell, budget, journal state).

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use memmap2::{MmapMut, MmapOptions};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{geteuid, unlinkat, UnlinkatFlags};

use crate::queue::sync::{shm, Ordering};

/// Mode of every folder this module creates.
const DIR_MODE: u32 = 0o700;
/// Mode of every file this module creates.
const FILE_MODE: u32 = 0o600;
/// Group- or other-writable: refused.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// What can go wrong with a shared file; each message names the path and, where the
/// operator can do something, the fix.
#[derive(Debug, thiserror::Error)]
pub enum SharedFileError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is a symbolic link; it is not followed (remove it: the forwarder creates its own files)")]
    Symlink { path: PathBuf },
    #[error("{path} is owned by uid {owner}, not by this process's uid {ours}; fix: `chown {ours} {path}` if it is really ours, or remove it, or choose another folder")]
    ForeignOwner {
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    #[error("{path} is writable by group or others (mode {mode:04o}), so anyone could plant files in it; fix: `chmod go-w {path}`, or choose another folder")]
    WritableByOthers { path: PathBuf, mode: u32 },
    #[error("{path} is not a {expected}; remove it (the forwarder creates its own)")]
    WrongType {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{path} has {links} hard links; a private file has one (remove it)")]
    HardLinked { path: PathBuf, links: u64 },
    #[error("{name:?} is not a plain file name")]
    BadName { name: String },
}

impl SharedFileError {
    /// True for a missing file or folder (the caller may create it or wait for it).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SharedFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The underlying I/O error, if any (a full disk, a permission problem).
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            SharedFileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    fn io(op: &'static str, path: &Path, errno: Errno) -> Self {
        SharedFileError::Io {
            op,
            path: path.to_path_buf(),
            source: std::io::Error::from(errno),
        }
    }
}

/// Whether a missing entry is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Open only what exists.
    No,
    /// Create it (0600 / 0700) when missing.
    IfMissing,
    /// Create it; an existing entry is an error (`O_EXCL`).
    New,
    /// Open only what exists, for reading only: works on a read-only file system too.
    ReadOnly,
}

/// A checked folder, held open: every file in it is opened relative to this descriptor, so
/// the folder cannot be swapped under us between the check and the open.
#[derive(Debug)]
pub struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl PrivateDir {
    /// A configured root (`SPOOL_DIR`, `SHM_DIR`, or a folder named by a path): its missing
    /// ancestors are created as usual, the folder itself 0700; then it is checked.
    pub fn create(path: &Path) -> Result<Self, SharedFileError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| SharedFileError::Io {
                op: "create folder",
                path: path.to_path_buf(),
                source,
            })?;
        }
        match mkdirat(AT_FDCWD, path, Mode::from_bits_truncate(DIR_MODE)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(SharedFileError::io("create folder", path, e)),
        }
        Self::open(path)
    }

    /// An existing root (see [`PrivateDir::create`]), checked, never created.
    pub fn open(path: &Path) -> Result<Self, SharedFileError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(AT_FDCWD, path, flags, Mode::empty())
            .map_err(|e| SharedFileError::io("open folder", path, e))?;
        check_owner_and_mode(&fd, path, SFlag::S_IFDIR, "folder")?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of an entry of this folder (for messages and for code that takes paths).
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A folder inside this one, created 0700 when asked, opened without following a link.
    pub fn subdir(&self, name: &str, create: Create) -> Result<Self, SharedFileError> {
        check_name(name)?;
        let path = self.join(name);
        if create != Create::No {
            match mkdirat(&self.fd, name, Mode::from_bits_truncate(DIR_MODE)) {
                Ok(()) => {}
                Err(Errno::EEXIST) if create == Create::IfMissing => {}
                Err(e) => return Err(SharedFileError::io("create folder", &path, e)),
            }
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, name, flags, Mode::empty())
            .map_err(|e| nofollow_error("open folder", &path, e))?;
        check_owner_and_mode(&fd, &path, SFlag::S_IFDIR, "folder")?;
        tighten(&fd, &path, DIR_MODE)?;
        Ok(Self { fd, path })
    }

    /// A file of this folder, read-write (read-only with [`Create::ReadOnly`]), never through
    /// a link; created 0600 when asked.
    pub fn file(&self, name: &str, create: Create) -> Result<File, SharedFileError> {
        check_name(name)?;
        let path = self.join(name);
        let mut flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        match create {
            Create::No => {}
            Create::ReadOnly => flags = (flags - OFlag::O_RDWR) | OFlag::O_RDONLY,
            Create::IfMissing => flags |= OFlag::O_CREAT,
            Create::New => flags |= OFlag::O_CREAT | OFlag::O_EXCL,
        }
        let fd = openat(&self.fd, name, flags, Mode::from_bits_truncate(FILE_MODE))
            .map_err(|e| nofollow_error("open", &path, e))?;
        let stat = check_owner_and_mode(&fd, &path, SFlag::S_IFREG, "regular file")?;
        if stat.st_nlink > 1 {
            return Err(SharedFileError::HardLinked {
                path,
                links: stat.st_nlink as u64,
            });
        }
        tighten(&fd, &path, FILE_MODE)?;
        // O_NONBLOCK only kept a planted FIFO from blocking the open; clear it.
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(|e| SharedFileError::io("set flags of", &path, e))?;
        Ok(File::from(fd))
    }

    /// Renames `from` to `to`, both in this folder (atomic; replaces `to`).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), SharedFileError> {
        check_name(from)?;
        check_name(to)?;
        renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| SharedFileError::io("rename", &self.join(from), e))
    }

    /// Removes a file of this folder (a link is removed, never followed).
    pub fn remove_file(&self, name: &str) -> Result<(), SharedFileError> {
        check_name(name)?;
        unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| SharedFileError::io("remove", &self.join(name), e))
    }

    /// `fsync` of the folder: makes creations, renames and removals in it durable.
    pub fn sync(&self) -> Result<(), SharedFileError> {
        nix::unistd::fsync(&self.fd).map_err(|e| SharedFileError::io("sync folder", &self.path, e))
    }

    /// Writes `bytes` to `name` atomically: a 0600 temporary file, fsync, rename over `name`,
    /// fsync of the folder. A reader finds the old or the new content, never a mix.
    pub fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<(), SharedFileError> {
        use std::io::Write;
        let tmp = format!("{name}.tmp");
        let write_err = |source| SharedFileError::Io {
            op: "write",
            path: self.join(&tmp),
            source,
        };
        let mut file = self.file(&tmp, Create::IfMissing)?;
        file.set_len(0).map_err(write_err)?;
        file.write_all(bytes).map_err(write_err)?;
        file.sync_data().map_err(write_err)?;
        self.rename(&tmp, name)?;
        self.sync()
    }
}

/// Opens the file at `path` through its checked folder (see [`PrivateDir::open`] for how the
/// folder is reached). For callers that hold paths rather than folders.
pub fn open_private_file(path: &Path, create: Create) -> Result<File, SharedFileError> {
    let (dir, name) = split(path)?;
    dir.file(name, create)
}

/// The checked folder of `path` and the file name in it.
pub fn split(path: &Path) -> Result<(PrivateDir, &str), SharedFileError> {
    let name =
        path.file_name()
            .and_then(OsStr::to_str)
            .ok_or_else(|| SharedFileError::BadName {
                name: path.display().to_string(),
            })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((PrivateDir::open(parent)?, name))
}

fn check_name(name: &str) -> Result<(), SharedFileError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(SharedFileError::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// `O_NOFOLLOW` on a link fails with ELOOP (or ENOTDIR with `O_DIRECTORY`): say "link".
fn nofollow_error(op: &'static str, path: &Path, e: Errno) -> SharedFileError {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link && matches!(e, Errno::ELOOP | Errno::ENOTDIR) {
        SharedFileError::Symlink {
            path: path.to_path_buf(),
        }
    } else {
        SharedFileError::io(op, path, e)
    }
}

fn check_owner_and_mode(
    fd: &OwnedFd,
    path: &Path,
    kind: SFlag,
    expected: &'static str,
) -> Result<FileStat, SharedFileError> {
    let stat = fstat(fd).map_err(|e| SharedFileError::io("inspect", path, e))?;
    if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) != kind {
        return Err(SharedFileError::WrongType {
            path: path.to_path_buf(),
            expected,
        });
    }
    let ours = geteuid().as_raw();
    if stat.st_uid != ours {
        return Err(SharedFileError::ForeignOwner {
            path: path.to_path_buf(),
            owner: stat.st_uid,
            ours,
        });
    }
    let mode = stat.st_mode & 0o7777;
    if mode & WRITABLE_BY_OTHERS != 0 {
        return Err(SharedFileError::WritableByOthers {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(stat)
}

/// Sets the mode to exactly `mode` when it differs (a fresh file under a strict umask, or an
/// older build's 0644).
fn tighten(fd: &OwnedFd, path: &Path, mode: u32) -> Result<(), SharedFileError> {
    let stat = fstat(fd).map_err(|e| SharedFileError::io("inspect", path, e))?;
    if stat.st_mode & 0o7777 != mode {
        fchmod(fd, Mode::from_bits_truncate(mode))
            .map_err(|e| SharedFileError::io("set the mode of", path, e))?;
    }
    Ok(())
}

/// `flock(LOCK_EX)` held while a shared file is created or checked, released on drop. It is
/// taken and released through a duplicate descriptor: a mapping keeps the open file
/// description (and so an flock) alive after the `File` is closed, so closing alone would
/// not unlock.
#[derive(Debug)]
pub struct CreationLock(OwnedFd);

impl CreationLock {
    pub fn take(file: &File, path: &Path) -> Result<Self, SharedFileError> {
        let fd = file
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| SharedFileError::Io {
                op: "duplicate descriptor of",
                path: path.to_path_buf(),
                source,
            })?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(SharedFileError::Io {
                op: "lock",
                path: path.to_path_buf(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(CreationLock(fd))
    }
}

impl Drop for CreationLock {
    fn drop(&mut self) {
        // SAFETY: flock on the descriptor this guard owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Takes the OFD write lock on byte `byte` of `file` without waiting: `Ok(false)` when
/// another open file description (any process) holds it. The kernel drops it when the last
/// descriptor of ours closes, however the holder dies; `flock` locks are independent of it.
pub fn try_lock_byte(file: &File, byte: u8) -> std::io::Result<bool> {
    match ofd_lock(file, byte, libc::F_OFD_SETLK) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// True when another open file description holds the OFD lock on `byte` of `file`.
pub fn byte_locked_by_other(file: &File, byte: u8) -> std::io::Result<bool> {
    let fl = ofd_lock(file, byte, libc::F_OFD_GETLK)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

fn ofd_lock(file: &File, byte: u8, cmd: libc::c_int) -> std::io::Result<libc::flock> {
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::from(byte);
    fl.l_len = 1;
    // SAFETY: F_OFD_SETLK / F_OFD_GETLK read (and GETLK writes) the `flock` we pass by
    // pointer, valid and exclusively borrowed for the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    if rc == 0 {
        Ok(fl)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Opens a shared file for creation or reuse: checked and created if missing (0600, never
/// truncated), then its creation lock taken, then its current length read (0: fresh).
pub fn open_for_creation(path: &Path) -> Result<(File, CreationLock, u64), SharedFileError> {
    let file = open_private_file(path, Create::IfMissing)?;
    let lock = CreationLock::take(&file, path)?;
    let len = file
        .metadata()
        .map_err(|source| SharedFileError::Io {
            op: "inspect",
            path: path.to_path_buf(),
            source,
        })?
        .len();
    Ok((file, lock, len))
}

/// A small shared file mapped `MAP_SHARED` whose words every process touches only as
/// atomics (the doorbell, the disk budget, a journal's state), its 8-byte magic included.
pub(crate) struct SharedPage {
    base: NonNull<u8>,
    len: usize,
    path: PathBuf,
    _map: MmapMut,
}

// SAFETY: `base` points into `_map`, owned by this struct and mapped at one address until
// drop; through it only atomics are accessed, so
// moving or sharing the struct between threads is as safe as sharing the atomics.
unsafe impl Send for SharedPage {}
// SAFETY: as above; `&SharedPage` hands out only `&AtomicU64`/`&AtomicU32` and copies.
unsafe impl Sync for SharedPage {}

impl SharedPage {
    /// Maps the first `len` bytes of `file` (which must be at least that long).
    pub fn map(file: &File, len: u64, path: &Path) -> Result<Self, SharedFileError> {
        let io = |source| SharedFileError::Io {
            op: "map",
            path: path.to_path_buf(),
            source,
        };
        // SAFETY: MAP_SHARED of a shared file is the point: other processes store into it
        // while we have it mapped. We never create references to its bytes other than the
        // atomics of `u64_at`/`u32_at` (the magic is one of them). None of our files is
        // ever truncated while mapped (sizes are set under the creation lock, before mapping).
        let mut map = unsafe { MmapOptions::new().len(len as usize).map_mut(file) }.map_err(io)?;
        let base = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| io(std::io::Error::other("mapping returned a null address")))?;
        Ok(Self {
            base,
            len: len as usize,
            path: path.to_path_buf(),
            _map: map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The atomic u64 at byte `off` (8-aligned, inside the page).
    pub fn u64_at(&self, off: usize) -> &shm::AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: `off` is 8-aligned and inside the page-aligned mapping that lives as long as
        // `self`; AtomicU64 has u64's size and alignment; every process touches these words
        // only atomically.
        unsafe { &*(self.base.as_ptr().add(off) as *const shm::AtomicU64) }
    }

    /// The atomic u32 at byte `off` (4-aligned, inside the page).
    pub fn u32_at(&self, off: usize) -> &shm::AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: as in `u64_at`, for a 4-aligned u32 word.
        unsafe { &*(self.base.as_ptr().add(off) as *const shm::AtomicU32) }
    }

    /// The 8 bytes at offset 0, read as one atomic word (the magic of every shared page).
    pub fn magic(&self) -> [u8; 8] {
        self.u64_at(0).load(Ordering::Relaxed).to_le_bytes()
    }

    /// Stores the 8 bytes at offset 0 (under the file's creation lock, before the version word
    /// is published with Release; readers load the version with Acquire first).
    pub fn write_magic(&self, magic: [u8; 8]) {
        self.u64_at(0)
            .store(u64::from_le_bytes(magic), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
