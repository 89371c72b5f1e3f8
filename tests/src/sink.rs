//! A TLS listener that plays the Sekoia intake: accepts TLS, reads octet-counted frames
//! (`LEN SP LINE`), checks every LEN, and keeps every line it received, in arrival order.
//!
//! `stop` closes the listener and every connection abruptly (as a killed receiver would), and
//! a new sink can be started on the same port to play the intake coming back.

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{wait_until, TestCerts};

#[derive(Default)]
struct Shared {
    lines: Mutex<Vec<Vec<u8>>>,
    arrived: Condvar,
    framing_errors: Mutex<Vec<String>>,
    connections: AtomicUsize,
    streams: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

pub struct TlsSink {
    pub port: u16,
    ip: std::net::Ipv4Addr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl TlsSink {
    pub fn start(certs: &TestCerts) -> Self {
        Self::start_on(certs, 0)
    }

    /// Listens on 127.0.0.1:`port` (0: any), retrying while a previous sink's port drains.
    pub fn start_on(certs: &TestCerts, port: u16) -> Self {
        Self::start_at(certs, std::net::Ipv4Addr::LOCALHOST, port)
    }

    /// Listens on `ip`:`port`: a local address other than loopback, for a forwarder in a
    /// container (which reaches the host on its bridge's address).
    pub fn start_at(certs: &TestCerts, ip: std::net::Ipv4Addr, port: u16) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind((ip, port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("sink cannot bind port {port}: {e}"),
            }
        };
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        let config = certs.server_config();
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, config, shared))
        };
        Self {
            port,
            ip,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// Every line received so far (without the `LEN SP` prefix, with the final `\n`).
    pub fn lines(&self) -> Vec<Vec<u8>> {
        self.shared.lines.lock().expect("lines").clone()
    }

    pub fn count(&self) -> usize {
        self.shared.lines.lock().expect("lines").len()
    }

    /// Waits until at least `n` lines arrived (or `limit` passed) and returns all of them.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut lines = self.shared.lines.lock().expect("lines");
        while lines.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            lines = self
                .shared
                .arrived
                .wait_timeout(lines, left.min(Duration::from_millis(100)))
                .expect("wait")
                .0;
        }
        lines.clone()
    }

    /// The lines of test events tagged `tag` (`... {tag} seq=N ...`), in arrival order.
    pub fn tagged(&self, tag: &str) -> Vec<Vec<u8>> {
        let needle = format!(" {tag} seq=");
        self.lines()
            .into_iter()
            .filter(|l| String::from_utf8_lossy(l).contains(&needle))
            .collect()
    }

    /// Waits up to `limit` for `n` lines tagged `tag`; returns those that arrived.
    pub fn wait_tagged(&self, tag: &str, n: usize, limit: Duration) -> Vec<Vec<u8>> {
        wait_until(limit, || self.tagged(tag).len() >= n);
        self.tagged(tag)
    }

    pub fn framing_errors(&self) -> Vec<String> {
        self.shared.framing_errors.lock().expect("errors").clone()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Closes the listener and resets every connection, like a receiver that was killed.
    pub fn stop(mut self) -> Vec<Vec<u8>> {
        self.shutdown();
        self.lines()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.streams.lock().expect("streams").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

impl Drop for TlsSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, config: Arc<rustls::ServerConfig>, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                if let Ok(clone) = stream.try_clone() {
                    shared.streams.lock().expect("streams").push(clone);
                }
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                let config = config.clone();
                std::thread::spawn(move || serve(stream, config, shared));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve(stream: TcpStream, config: Arc<rustls::ServerConfig>, shared: Arc<Shared>) {
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut buf = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut consumed = 0;
        let mut parsed = Vec::new();
        while let Some((line, used)) = parse_frame(&buf[consumed..], &shared) {
            parsed.push(line);
            consumed += used;
        }
        buf.drain(..consumed);
        if !parsed.is_empty() {
            shared.lines.lock().expect("lines").extend(parsed);
            shared.arrived.notify_all();
        }
    }
}

/// One `LEN SP LINE` frame from the front of `buf`: the line and the bytes it used.
fn parse_frame(buf: &[u8], shared: &Shared) -> Option<(Vec<u8>, usize)> {
    let space = buf.iter().take(12).position(|&b| b == b' ')?;
    let len: usize = match std::str::from_utf8(&buf[..space])
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(len) => len,
        None => {
            shared.framing_errors.lock().expect("errors").push(format!(
                "bad octet count {:?}",
                String::from_utf8_lossy(&buf[..space.min(20)])
            ));
            return None;
        }
    };
    let end = space + 1 + len;
    if buf.len() < end {
        return None;
    }
    let line = buf[space + 1..end].to_vec();
    if line.last() != Some(&b'\n') {
        shared
            .framing_errors
            .lock()
            .expect("errors")
            .push(format!("frame of {len} bytes does not end with LF"));
    }
    Some((line, end))
}
