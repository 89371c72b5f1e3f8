//! The client side, for `sekoia-ctl`: one request, one answer, plain blocking I/O with timeouts,
//! and errors that say what to do.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{codec, Request, Response, ResponseBody, MAX_LINE, PROTOCOL_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the forwarder is not running (no one answers on {0}); start it, or pass --control-socket / CONTROL_SOCKET if it uses another path")]
    NotRunning(PathBuf),
    #[error("not permitted to use {0}: run as the forwarder's user or a member of its group")]
    PermissionDenied(PathBuf),
    #[error("the forwarder speaks control protocol version {theirs}, this sekoia-ctl version {ours}: use the sekoia-ctl installed with the running forwarder")]
    VersionMismatch { ours: u32, theirs: u64 },
    #[error("the forwarder refused the request: {0}")]
    Refused(String),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Sends `request` to the supervisor at `path` and returns its answer.
pub fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let io_err = |source: io::Error| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(path.to_path_buf())
        }
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_path_buf()),
        _ => io_err(e),
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    stream
        .write_all(&codec::encode(request).map_err(io_err)?)
        .map_err(io_err)?;
    let mut line = Vec::new();
    BufReader::new(io::Read::take(stream, MAX_LINE as u64))
        .read_until(b'\n', &mut line)
        .map_err(io_err)?;
    let value: serde_json::Value = codec::decode(&line).map_err(io_err)?;
    let theirs = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if theirs != u64::from(PROTOCOL_VERSION) {
        return Err(ClientError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    let response: Response = serde_json::from_value(value)
        .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    match response.body {
        ResponseBody::Error { message } => Err(ClientError::Refused(message)),
        _ => Ok(response),
    }
}
