//! Creating the control socket: folder 0750 (when we create it), socket 0660, a stale socket
//! from a dead supervisor replaced, anything else at that path refused. Nothing is followed
//! through a symlink: the path is examined with `lstat`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Mode of the socket: the owner and its group (operators in the service's group) may connect.
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of a socket folder we create.
pub const DIR_MODE: u32 = 0o750;

#[derive(Debug, thiserror::Error)]
pub enum ControlSocketError {
    #[error("another forwarder answers on the control socket {0} (stop it, or set CONTROL_SOCKET to another path)")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket (remove it, or set CONTROL_SOCKET to another path)")]
    NotASocket(PathBuf),
    #[error("{0} is not a folder (the control socket's folder)")]
    NotAFolder(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ControlSocketError + '_ {
    move |source| ControlSocketError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Binds the control socket at `path`, ready for tokio.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, ControlSocketError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        ensure_folder(dir)?;
    }
    remove_stale(path)?;
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_at(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(io_at(path))?;
    listener.set_nonblocking(true).map_err(io_at(path))?;
    tokio::net::UnixListener::from_std(listener).map_err(io_at(path))
}

/// Creates the folder 0750 if missing; an existing one is used as it is (it may be /run).
fn ensure_folder(dir: &Path) -> Result<(), ControlSocketError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ControlSocketError::NotAFolder(dir.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_at(dir)),
        Err(e) => Err(io_at(dir)(e)),
    }
}

/// Removes a socket nobody answers on (a dead supervisor's); refuses a live one or a non-socket.
fn remove_stale(path: &Path) -> Result<(), ControlSocketError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ControlSocketError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ControlSocketError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(io_at(path))
        }
        Err(e) => Err(io_at(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_the_folder_and_socket_with_their_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/control.sock");
        let _listener = bind(&path).unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().unwrap()), DIR_MODE);
        assert_eq!(mode(&path), SOCKET_MODE);
    }

    #[tokio::test]
    async fn a_live_socket_is_refused_and_a_stale_one_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("control.sock");
        let live = bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(ControlSocketError::InUse(_))));
        drop(live);
        bind(&path).unwrap();
    }

    #[tokio::test]
    async fn a_file_or_symlink_in_its_place_is_refused_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("control.sock");
        fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            bind(&path),
            Err(ControlSocketError::NotASocket(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"not a socket");
        let link = tmp.path().join("link.sock");
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &link).unwrap();
        assert!(matches!(
            bind(&link),
            Err(ControlSocketError::NotASocket(_))
        ));
    }
}
