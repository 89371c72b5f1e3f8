//! systemd readiness (`Type=notify`): `READY=1` once every worker is started, `STOPPING=1`
//! when a stop begins, and `WATCHDOG=1` from the supervisor's loop when the unit sets
//! `WatchdogSec=`. A no-op outside systemd (no `NOTIFY_SOCKET`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use sekoia_shared::log_limit::{Repeating, Report, SUMMARY_EVERY};

/// Sends one sd_notify state line; failures are logged, never fatal.
pub fn notify(state: &str) {
    if let Err(e) = send(state) {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}

/// One state line to `NOTIFY_SOCKET` (nothing without it).
fn send(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(&path),
    }?;
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Keep-alive for systemd's watchdog. systemd passes the period as `WATCHDOG_USEC` (and
/// `WATCHDOG_PID`, the process it expects the keep-alive from); we send `WATCHDOG=1` every
/// half period, as sd_watchdog_enabled(3) advises, from the supervisor's loop only: a loop
/// that stops turning (stuck) stops the keep-alives, and systemd restarts the service.
pub struct Watchdog {
    every: Option<Duration>,
    next: Instant,
    failing: Repeating,
}

impl Watchdog {
    /// From the environment systemd set; inactive without `WatchdogSec=`.
    pub fn from_env() -> Self {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let every = keep_alive_every(usec.as_deref(), pid.as_deref(), std::process::id());
        if let Some(every) = every {
            tracing::info!(every = ?every, "systemd watchdog: keep-alive from the supervisor's loop");
        }
        Self {
            every,
            next: Instant::now(),
            failing: Repeating::new(SUMMARY_EVERY),
        }
    }

    /// Call at every turn of the supervisor's loop: sends `WATCHDOG=1` when due.
    pub fn tick(&mut self) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + every;
        match send("WATCHDOG=1") {
            Ok(()) => {
                if let Some(Report::Ended { total, .. }) = self.failing.cleared(now) {
                    tracing::info!(failures = total, "systemd watchdog keep-alive works again");
                }
            }
            Err(e) => match self.failing.occurred(now) {
                Some(Report::Started) => {
                    tracing::warn!(error = %e, "cannot send the systemd watchdog keep-alive")
                }
                Some(Report::Ongoing { count, .. }) => {
                    tracing::warn!(error = %e, count, "systemd watchdog keep-alive still failing")
                }
                _ => {}
            },
        }
    }
}

/// Half the watchdog period, when the watchdog is meant for this process: `WATCHDOG_USEC` a
/// positive number, `WATCHDOG_PID` absent or ours (a child must not answer for its parent).
fn keep_alive_every(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_is_half_the_period_for_this_process_only() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(keep_alive_every(Some("30000000"), None, 7), half);
        assert_eq!(keep_alive_every(Some("30000000"), Some("7"), 7), half);
        assert_eq!(keep_alive_every(Some("30000000"), Some("8"), 7), None);
        assert_eq!(keep_alive_every(Some("0"), None, 7), None);
        assert_eq!(keep_alive_every(Some("soon"), None, 7), None);
        assert_eq!(keep_alive_every(None, Some("7"), 7), None);
    }

    #[test]
    fn notify_sends_state_to_the_socket() {
        let dir = tempfile_dir();
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sekoia-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
