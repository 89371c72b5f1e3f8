//! Inter-process locks on ring (and doorbell) files.
//!
//! - [`CreationLock`]: `flock(LOCK_EX)` while a file is created or checked, so two creators
//!   (a supervisor and its restarted twin) never initialise the same file at once.
//! - [`lock_role`]: an OFD byte lock per attached role (byte 0 producer, byte 1 consumer),
//!   held as long as the attachment's descriptor is open. A second producer or consumer of
//!   the same ring is refused; the kernel drops the lock when its holder dies, however.
//!
//! `flock` and OFD (`fcntl`) locks are independent on Linux, so the two never interfere.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::queue::RingError;

/// Which side attaches; decides the OFD lock byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

/// `flock(LOCK_EX)` held while a file is created or checked, released on drop. It is taken
/// and released through a duplicate descriptor: a mapping keeps the open file description
/// (and so an flock) alive after the `File` is closed, so closing alone would not unlock.
pub(crate) struct CreationLock(std::os::fd::OwnedFd);

impl CreationLock {
    pub(crate) fn take(file: &File, path: &Path) -> Result<Self, RingError> {
        let fd = file
            .try_clone()
            .map_err(|e| RingError::io("duplicate descriptor of", path, e))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(RingError::io("lock", path, std::io::Error::last_os_error()));
        }
        Ok(CreationLock(fd.into()))
    }
}

impl Drop for CreationLock {
    fn drop(&mut self) {
        // SAFETY: flock on the descriptor this guard owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Opens a shared file for creation or reuse: created if missing (owner-only, never
/// truncated), then its creation lock taken, then its current length read (0: fresh). The
/// ring and the doorbell files start this way; `open_op` and `stat_op` name the steps in errors.
pub(crate) fn open_for_creation(
    path: &Path,
    open_op: &'static str,
    stat_op: &'static str,
) -> Result<(File, CreationLock, u64), RingError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| RingError::io(open_op, path, e))?;
    let lock = CreationLock::take(&file, path)?;
    let len = file
        .metadata()
        .map_err(|e| RingError::io(stat_op, path, e))?
        .len();
    Ok((file, lock, len))
}

/// Takes the OFD write lock on the role's byte, refusing a second attacher of that role.
pub(crate) fn lock_role(file: &File, path: &Path, role: Role) -> Result<(), RingError> {
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = match role {
        Role::Producer => 0,
        Role::Consumer => 1,
    };
    fl.l_len = 1;
    // SAFETY: F_OFD_SETLK reads the `flock` we pass by pointer, valid for the call.
    let rc = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_OFD_SETLK,
            &fl as *const libc::flock,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Err(RingError::AlreadyAttached {
            path: path.to_path_buf(),
            role: role.name(),
        }),
        _ => Err(RingError::io("lock ring role", path, e)),
    }
}
