//! Inter-process locks on ring files.
//!
//! - the creation lock (`shared_file::CreationLock`): `flock(LOCK_EX)` while a file is
//!   created or checked, so two creators (a supervisor and its restarted twin) never
//!   initialise the same file at once.
//! - [`lock_role`]: an OFD byte lock per attached role (byte 0 producer, byte 1 consumer),
//!   held as long as the attachment's descriptor is open. A second producer or consumer of
//!   the same ring is refused; the kernel drops the lock when its holder dies, however.
//!
//! `flock` and OFD (`fcntl`) locks are independent on Linux, so the two never interfere.

use std::fs::File;
use std::path::Path;

use crate::queue::shared_file::try_lock_byte;
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

/// Takes the OFD write lock on the role's byte, refusing a second attacher of that role.
pub(crate) fn lock_role(file: &File, path: &Path, role: Role) -> Result<(), RingError> {
    let byte = match role {
        Role::Producer => 0,
        Role::Consumer => 1,
    };
    match try_lock_byte(file, byte) {
        Ok(true) => Ok(()),
        Ok(false) => Err(RingError::AlreadyAttached {
            path: path.to_path_buf(),
            role: role.name(),
        }),
        Err(e) => Err(RingError::io("lock ring role", path, e)),
    }
}
