//! Test doubles for the uplink: an in-memory [`BatchSource`] whose commits can be checked
//! against what the test server really read, a condvar [`Wakeup`], a test PKI (rcgen CA + leaf), and a
//! real TLS syslog receiver on 127.0.0.1 that parses octet-counted frames.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::uplink::{
    BatchSource, ReadSpan, Uplink, UplinkConfig, UplinkCounters, UplinkError, Wakeup,
};

/// Lines the test server read, in arrival order, and how often each came.
#[derive(Default)]
pub struct Received {
    pub lines: Mutex<Vec<Vec<u8>>>,
    /// How often each line came, and when it first came.
    pub counts: Mutex<HashMap<Vec<u8>, (usize, Instant)>>,
    pub framing_errors: AtomicU64,
    /// Connections that ended with a TLS close_notify.
    pub clean_closes: AtomicU64,
}

impl Received {
    pub fn add(&self, line: &[u8]) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line.to_vec());
        }
        if let Ok(mut counts) = self.counts.lock() {
            counts.entry(line.to_vec()).or_insert((0, Instant::now())).0 += 1;
        }
    }

    pub fn count_of(&self, line: &[u8]) -> usize {
        self.counts.lock().unwrap().get(line).map_or(0, |c| c.0)
    }

    pub fn first_arrival(&self, line: &[u8]) -> Option<Instant> {
        self.counts.lock().unwrap().get(line).map(|c| c.1)
    }

    pub fn total(&self) -> usize {
        self.lines.lock().unwrap().len()
    }
}

/// One octet-counted event: `LEN SP LINE`, LINE ending in `\n`.
pub fn event(source: &str, seq: usize, pad: usize) -> (Vec<u8>, Vec<u8>) {
    let line = format!(
        "<134>1 2024-05-01T10:00:00.123456+00:00 fw01 filterlog {seq} LOG \
         [SEKOIA@53288 intake_key=\"{source}\"] seq={seq} {}\n",
        "x".repeat(pad)
    );
    let framed = format!("{} {line}", line.len());
    (framed.into_bytes(), line.into_bytes())
}

struct MemInner {
    /// Framed records; a position is an index in this list.
    framed: Vec<Vec<u8>>,
    lines: Vec<Vec<u8>>,
    committed: u64,
    commits: Vec<(u64, Instant)>,
    violations: Vec<String>,
    fail_reads: bool,
}

/// In-memory source; clones share the same state, so the test keeps a handle.
#[derive(Clone)]
pub struct MemSource {
    name: String,
    inner: Arc<Mutex<MemInner>>,
}

impl MemSource {
    pub fn new(name: &str, events: usize, pad: usize) -> Self {
        let (framed, lines) = (0..events).map(|seq| event(name, seq, pad)).unzip();
        Self {
            name: name.to_owned(),
            inner: Arc::new(Mutex::new(MemInner {
                framed,
                lines,
                committed: 0,
                commits: Vec::new(),
                violations: Vec::new(),
                fail_reads: false,
            })),
        }
    }

    pub fn boxed(&self) -> Box<dyn BatchSource> {
        Box::new(self.clone())
    }
    pub fn lines(&self) -> Vec<Vec<u8>> {
        self.inner.lock().unwrap().lines.clone()
    }
    pub fn len(&self) -> u64 {
        self.inner.lock().unwrap().framed.len() as u64
    }
    pub fn committed_pos(&self) -> u64 {
        self.inner.lock().unwrap().committed
    }
    pub fn commits(&self) -> Vec<u64> {
        self.inner
            .lock()
            .unwrap()
            .commits
            .iter()
            .map(|c| c.0)
            .collect()
    }

    /// Every event before each commit reached `received` by then (within `slack`: the TCP
    /// acknowledgement the rule relies on precedes the receiving process's read). A committed
    /// event that never arrives is a loss.
    pub fn late_or_lost_commits(&self, received: &Received, slack: Duration) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        let mut problems = Vec::new();
        let mut from = 0;
        for &(pos, at) in &inner.commits {
            for seq in from..pos {
                match received.first_arrival(&inner.lines[seq as usize]) {
                    Some(arrived) if arrived <= at + slack => {}
                    other => problems.push(format!(
                        "{}: event {seq} committed (at {pos}) but arrived {other:?} vs commit {at:?}",
                        self.name
                    )),
                }
            }
            from = from.max(pos);
        }
        problems
    }
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }
    pub fn set_fail_reads(&self, fail: bool) {
        self.inner.lock().unwrap().fail_reads = fail;
    }
}

impl BatchSource for MemSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn committed(&self) -> u64 {
        self.committed_pos()
    }

    fn read(
        &mut self,
        from: u64,
        until: Option<u64>,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> std::io::Result<Option<ReadSpan>> {
        let inner = self.inner.lock().unwrap();
        if inner.fail_reads {
            return Err(std::io::Error::other("injected read failure"));
        }
        let end = until.unwrap_or(u64::MAX).min(inner.framed.len() as u64);
        let (mut pos, mut bytes) = (from, 0usize);
        while pos < end && bytes < max_bytes {
            let record = &inner.framed[pos as usize];
            out.extend_from_slice(record);
            bytes += record.len();
            pos += 1;
        }
        Ok((pos > from).then_some(ReadSpan {
            start: from,
            end: pos,
            records: (pos - from) as u32,
            bytes: bytes as u64,
        }))
    }

    fn commit(&mut self, pos: u64) {
        let mut inner = self.inner.lock().unwrap();
        if pos < inner.committed {
            let msg = format!("commit went backwards: {} -> {pos}", inner.committed);
            inner.violations.push(msg);
        }
        inner.committed = pos.max(inner.committed);
        inner.commits.push((pos, Instant::now()));
    }
}

/// Condvar doorbell; a missed notify costs at most the wait timeout.
#[derive(Default)]
pub struct MemWake {
    seq: Mutex<u64>,
    cv: Condvar,
}

impl Wakeup for MemWake {
    fn wait(&self, timeout: Duration) {
        let guard = self.seq.lock().unwrap();
        let seen = *guard;
        let _ = self.cv.wait_timeout_while(guard, timeout, |s| *s == seen);
    }

    fn notify(&self) {
        *self.seq.lock().unwrap() += 1;
        self.cv.notify_all();
    }
}

/// A CA and a server certificate for `names`, signed by it; the CA is written to a PEM file.
pub struct TestPki {
    pub ca_file: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
    _dir: tempfile::TempDir,
}

pub fn pki(names: &[&str]) -> TestPki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    TestPki {
        ca_file,
        server: Arc::new(server),
        _dir: dir,
    }
}

/// A TLS syslog receiver. Aborting the returned task drops the listener and every connection
/// (unread data included), like a killed process.
pub fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    received: Arc<Received>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, received) = (acceptor.clone(), Arc::clone(&received));
            conns.spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    read_frames(stream, &received).await;
                }
            });
        }
    })
}

async fn read_frames<S: tokio::io::AsyncRead + Unpin>(mut stream: S, received: &Received) {
    let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => {
                received.clean_closes.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return,
        }
        let mut at = 0;
        while let Some(space) = buf[at..].iter().position(|&b| b == b' ') {
            let len: usize = match std::str::from_utf8(&buf[at..at + space])
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(len) => len,
                None => {
                    received.framing_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let line = at + space + 1;
            if buf.len() < line + len {
                break;
            }
            if buf[line + len - 1] != b'\n' {
                received.framing_errors.fetch_add(1, Ordering::Relaxed);
            }
            received.add(&buf[line..line + len]);
            at = line + len;
        }
        buf.drain(..at);
    }
}

/// Settings that keep every scenario within a few seconds.
pub fn fast_config(port: u16, ca_file: Option<PathBuf>) -> UplinkConfig {
    let ms = Duration::from_millis;
    let mut cfg = UplinkConfig::new("127.0.0.1", port);
    cfg.ca_file = ca_file;
    cfg.connect_timeout = ms(1_000);
    cfg.handshake_timeout = ms(500);
    cfg.write_timeout = ms(1_000);
    cfg.quantum_bytes = 16 * 1024;
    cfg.max_inflight_bytes = 512 * 1024;
    cfg.drain_timeout = ms(5_000);
    cfg.ack_poll_interval = ms(2);
    cfg.ack_grace = ms(100);
    cfg.backoff_initial = ms(20);
    cfg.backoff_max = ms(200);
    cfg.healthy_after = ms(1_000);
    cfg.idle_wait = ms(20);
    cfg
}

/// A running uplink and the handles to drive it.
pub struct Running {
    pub counters: Arc<UplinkCounters>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), UplinkError>>,
}

pub fn start(cfg: UplinkConfig, sources: &[MemSource]) -> Running {
    let counters = Arc::new(UplinkCounters::new());
    let (shutdown, rx) = watch::channel(false);
    let boxed = sources.iter().map(MemSource::boxed).collect();
    let wake: Arc<dyn Wakeup> = Arc::new(MemWake::default());
    let task = tokio::spawn(Uplink::run(cfg, boxed, wake, Arc::clone(&counters), rx));
    Running {
        counters,
        shutdown,
        task,
    }
}

impl Running {
    /// Fire shutdown and wait for `run` to return (bounded).
    pub async fn stop(self) -> Result<(), UplinkError> {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("uplink did not stop")
            .expect("uplink task panicked")
    }
}

/// Poll `cond` every 10 ms until it holds; panic with `what` after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}
