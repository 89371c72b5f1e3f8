//! The supervisor's side of the control socket: reads one bounded request per connection,
//! hands it to the supervisor's loop (which owns the state) and writes back its answer.

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{codec, Request, Response, CLIENT_TIMEOUT, MAX_CLIENTS, MAX_REQUEST, PROTOCOL_VERSION};

/// A request waiting for the supervisor's answer.
pub type Pending = (Request, oneshot::Sender<Response>);

/// Serves control clients forever; each valid request is sent on `to_supervisor`.
pub async fn serve(listener: UnixListener, to_supervisor: mpsc::Sender<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        // Past MAX_CLIENTS, new clients wait in the kernel's backlog, not in our memory.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "control socket accept failed");
                continue;
            }
        };
        let to_supervisor = to_supervisor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ =
                tokio::time::timeout(CLIENT_TIMEOUT * 2, serve_one(stream, to_supervisor)).await;
        });
    }
}

async fn serve_one(stream: UnixStream, to_supervisor: mpsc::Sender<Pending>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        CLIENT_TIMEOUT,
        codec::read_line(&mut reader, &mut line, MAX_REQUEST),
    )
    .await;
    let response = match read {
        Ok(Ok(true)) => answer(&line, &to_supervisor).await,
        Ok(Ok(false)) => return,
        Ok(Err(e)) => Response::error(format!("bad request: {e}")),
        Err(_) => Response::error("request not received in time"),
    };
    if let Ok(bytes) = codec::encode(&response) {
        let _ = write.write_all(&bytes).await;
    }
}

async fn answer(line: &[u8], to_supervisor: &mpsc::Sender<Pending>) -> Response {
    let value: serde_json::Value = match codec::decode(line) {
        Ok(v) => v,
        Err(e) => return Response::error(format!("bad request: {e}")),
    };
    let version = value.get("version").and_then(|v| v.as_u64());
    if version != Some(u64::from(PROTOCOL_VERSION)) {
        return Response::error(format!(
            "protocol version {version:?} not supported; this forwarder speaks version {PROTOCOL_VERSION}"
        ));
    }
    let request: Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => return Response::error(format!("bad request: {e}")),
    };
    let (tx, rx) = oneshot::channel();
    if to_supervisor.send((request, tx)).await.is_err() {
        return Response::error("the supervisor is stopping");
    }
    rx.await
        .unwrap_or_else(|_| Response::error("the supervisor is stopping"))
}

/// The supervisor's status, asked from inside its process (Prometheus, the monitoring task)
/// like a control client; None while it is stopping.
pub async fn ask_status(
    to_supervisor: &mpsc::Sender<Pending>,
) -> Option<crate::control::status::StatusReport> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let request = crate::control::Request::new(crate::control::Command::Status);
    to_supervisor.send((request, tx)).await.ok()?;
    match rx.await.ok()?.body {
        crate::control::ResponseBody::Status(s) => Some(*s),
        _ => None,
    }
}
