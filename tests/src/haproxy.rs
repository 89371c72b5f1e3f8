//! HAProxy (Debian package `haproxy`) as a test's own process on loopback: TCP mode, one
//! frontend per way of talking to the forwarders (PROXY v2, v1), health checks, and a stats
//! socket the test reads to know which servers HAProxy sees up.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

/// The haproxy binary, if installed (`/usr/sbin` is not on every user's PATH).
pub fn binary() -> Option<PathBuf> {
    let known = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"].map(PathBuf::from);
    if let Some(path) = known.into_iter().find(|p| p.is_file()) {
        return Some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
}

/// One frontend on `port` and its backend: each connection goes to the server with the
/// fewest (`leastconn`); every server gets `server_options` (e.g. `send-proxy-v2`) and is
/// checked every 200 ms.
pub struct Frontend<'a> {
    pub name: &'a str,
    pub port: u16,
    pub server_options: &'a str,
    pub servers: &'a [u16],
}

/// A running HAProxy; stopped (SIGKILL: it holds nothing worth saving) when dropped.
pub struct Haproxy {
    child: Child,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts `binary` with `frontends` and waits until each frontend accepts connections.
    pub fn start(binary: &Path, frontends: &[Frontend<'_>]) -> Self {
        let dir = tempfile::tempdir().expect("haproxy dir");
        let config = dir.path().join("haproxy.cfg");
        fs::write(
            &config,
            config_text(&dir.path().join("stats.sock"), frontends),
        )
        .expect("write haproxy.cfg");
        let log = fs::File::create(dir.path().join("haproxy.log")).expect("haproxy log");
        let child = Command::new(binary)
            .arg("-db") // foreground, no daemon: the test owns the process
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let haproxy = Self { child, dir };
        for f in frontends {
            let up = wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", f.port)).is_ok()
            });
            assert!(
                up,
                "haproxy frontend {} did not listen\n{}",
                f.name,
                haproxy.log()
            );
        }
        haproxy
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// Whether HAProxy's health checks see `server` of `backend` up (`show stat`).
    pub fn server_up(&self, backend: &str, server: &str) -> bool {
        let Ok(mut socket) = UnixStream::connect(self.dir.path().join("stats.sock")) else {
            return false;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
        let mut csv = String::new();
        if socket.write_all(b"show stat\n").is_err() || socket.read_to_string(&mut csv).is_err() {
            return false;
        }
        // # pxname,svname,...; the status is the 18th column.
        csv.lines().any(|line| {
            let cols: Vec<&str> = line.split(',').collect();
            cols.len() > 17 && cols[0] == backend && cols[1] == server && cols[17] == "UP"
        })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration: TCP mode; a connection refused by a dead server is retried and sent
/// to another (`retries`, `option redispatch`); checks every 200 ms, down after 1 failure.
fn config_text(stats: &Path, frontends: &[Frontend<'_>]) -> String {
    let mut text = format!(
        "global\n    maxconn 4096\n    stats socket {} mode 600 level admin\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 5m\n    timeout server 5m\n\
         \x20   retries 3\n    option redispatch\n",
        stats.display()
    );
    for f in frontends {
        text.push_str(&format!(
            "frontend {name}\n    bind 127.0.0.1:{port}\n    default_backend {name}_servers\n\
             backend {name}_servers\n    balance leastconn\n\
             \x20   default-server check inter 200ms fall 1 rise 1 {options}\n",
            name = f.name,
            port = f.port,
            options = f.server_options
        ));
        for (i, port) in f.servers.iter().enumerate() {
            text.push_str(&format!("    server f{} 127.0.0.1:{port}\n", i + 1));
        }
    }
    text
}
