//! The benchmark's intake: a TLS listener (or plain TCP with `--plain`, to measure the
//! generator's ceiling) that reads octet-counted (or LF) frames, finds each event's stamp,
//! and checks every sequence number once: unique, duplicate, malformed (no stamp), out of
//! range. Latency is now (CLOCK_MONOTONIC) minus the stamp's send time.
//!
//! The count ends when the sink decides (complete, idle, timeout): bytes read after that are
//! not counted, only reported as `after_stop_bytes`. The sink's connection threads notice the
//! decision one after the other (each within its 100 ms read timeout); a forwarder with a
//! pool of connections (ours: 2) sees the first one close and, correctly, re-sends the batches
//! that connection had not confirmed yet (the last ~100 ms, its `ack_grace`) on another one,
//! which the sink has not closed yet. Counting those would report duplicates that only the
//! sink's own teardown caused (the "duplicates at low rate" of the first full run).
//!
//! Protocol with the driver: the first stdout line is `{"port": N}`. Then the sink waits
//! for `expect N` on stdin (or `--expect N`); it finishes when N distinct events arrived,
//! or when nothing new arrived for `--idle-ms` after that, or at `--timeout-s`, or when stdin
//! closes; then it prints one JSON summary line and exits 0.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bench::histogram::Histogram;
use bench::{mono_ns, parse_stamp};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "TLS syslog sink that checks every stamped event")]
struct Args {
    /// Port on 127.0.0.1 (0: the kernel chooses; the first stdout line tells).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, required_unless_present = "plain")]
    cert: Option<PathBuf>,
    #[arg(long, required_unless_present = "plain")]
    key: Option<PathBuf>,
    /// Plain TCP instead of TLS.
    #[arg(long)]
    plain: bool,
    /// Frames end at LF instead of being octet-counted.
    #[arg(long)]
    lf: bool,
    #[arg(long)]
    expect: Option<u64>,
    /// After `expect` is known, give up when nothing new arrived for this long.
    #[arg(long, default_value_t = 5000)]
    idle_ms: u64,
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
    /// Highest sequence number tracked (a bit per number).
    #[arg(long, default_value_t = 1 << 28)]
    max_seq: u64,
}

/// Counters every connection thread adds to, and the set of sequence numbers seen.
struct Tally {
    seen: Vec<AtomicU64>,
    unique: AtomicU64,
    duplicates: AtomicU64,
    malformed: AtomicU64,
    out_of_range: AtomicU64,
    framing_errors: AtomicU64,
    bytes: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    connections: AtomicU64,
    latency: Mutex<Histogram>,
    /// The first duplicated sequence numbers, for whoever investigates.
    dup_examples: Mutex<Vec<u64>>,
    /// Set when the sink decided the run is over; nothing read afterwards is counted.
    stop: AtomicBool,
    /// Bytes read after `stop` (re-sends caused by the sink closing its connections).
    after_stop_bytes: AtomicU64,
}

impl Tally {
    fn new(max_seq: u64) -> Self {
        Self {
            seen: (0..max_seq.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            out_of_range: AtomicU64::new(0),
            framing_errors: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            latency: Mutex::new(Histogram::default()),
            dup_examples: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            after_stop_bytes: AtomicU64::new(0),
        }
    }
}

/// One connection's frame parser and local counters (published after every read).
struct Reader<'a> {
    tally: &'a Tally,
    lf: bool,
    buf: Vec<u8>,
    hist: Histogram,
    /// Connection number (accept order), for the duplicate report.
    id: u64,
    /// The last sequence number this connection carried.
    prev_seq: Option<u64>,
}

impl Reader<'_> {
    /// Feeds decrypted bytes; false on a framing error (the connection is then dropped).
    fn feed(&mut self, data: &[u8]) -> bool {
        // SeqCst, like the store: anything another connection re-sent because the sink closed
        // it was read after that close, which followed the store.
        if self.tally.stop.load(Ordering::SeqCst) {
            self.tally
                .after_stop_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            return true;
        }
        let now = mono_ns();
        self.buf.extend_from_slice(data);
        let (mut pos, mut unique, mut dup, mut bad, mut oor) = (0usize, 0u64, 0u64, 0u64, 0u64);
        let mut ok = true;
        loop {
            let rest = &self.buf[pos..];
            let (line, used) = if self.lf {
                match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => (&rest[..i], i + 1),
                    None => break,
                }
            } else {
                let Some(sp) = rest.iter().take(11).position(|&b| b == b' ') else {
                    ok = rest.len() < 11;
                    break;
                };
                let len = std::str::from_utf8(&rest[..sp])
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok());
                let Some(len) = len.filter(|_| sp > 0) else {
                    ok = false;
                    break;
                };
                if rest.len() < sp + 1 + len {
                    break;
                }
                (&rest[sp + 1..sp + 1 + len], sp + 1 + len)
            };
            match parse_stamp(line) {
                None => bad += 1,
                Some((seq, t)) => {
                    let word = (seq / 64) as usize;
                    match self.tally.seen.get(word) {
                        None => oor += 1,
                        Some(w) => {
                            let bit = 1u64 << (seq % 64);
                            if w.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
                                unique += 1;
                            } else {
                                dup += 1;
                                if let Ok(mut ex) = self.tally.dup_examples.lock() {
                                    if ex.len() < 10 {
                                        ex.push(seq);
                                        eprintln!(
                                            "benchsink: duplicate s={seq} on connection {} \
                                             (previous on it: {:?})",
                                            self.id, self.prev_seq
                                        );
                                    }
                                }
                            }
                            self.hist.record(now.saturating_sub(t) / 1000);
                            self.prev_seq = Some(seq);
                        }
                    }
                }
            }
            pos += used;
        }
        self.buf.drain(..pos);
        let t = self.tally;
        t.unique.fetch_add(unique, Ordering::Relaxed);
        t.duplicates.fetch_add(dup, Ordering::Relaxed);
        t.malformed.fetch_add(bad, Ordering::Relaxed);
        t.out_of_range.fetch_add(oor, Ordering::Relaxed);
        t.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if unique + dup + bad + oor > 0 {
            t.first_ns.fetch_min(now, Ordering::Relaxed);
            t.last_ns.fetch_max(now, Ordering::Relaxed);
        }
        if !ok {
            t.framing_errors.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Ok(mut h) = self.tally.latency.lock() {
            h.merge(&self.hist);
        }
    }
}

fn serve(
    id: u64,
    mut sock: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    lf: bool,
    tally: &Tally,
) -> Result<()> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
    let mut reader = Reader {
        tally,
        lf,
        buf: Vec::with_capacity(1 << 20),
        hist: Histogram::default(),
        id,
        prev_seq: None,
    };
    let mut chunk = vec![0u8; 256 * 1024];
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let Some(config) = tls else {
        while !tally.stop.load(Ordering::Relaxed) {
            match sock.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if !reader.feed(&chunk[..n]) {
                        return Ok(());
                    }
                }
                Err(e) if timed_out(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(());
    };
    let mut conn = rustls::ServerConnection::new(config)?;
    while !tally.stop.load(Ordering::Relaxed) {
        match conn.read_tls(&mut sock) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if timed_out(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        conn.process_new_packets()?;
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        loop {
            match conn.reader().read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if !reader.feed(&chunk[..n]) {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("benchsink: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let tls = match (&args.cert, &args.key, args.plain) {
        (Some(c), Some(k), false) => Some(bench::certs::server_config(c, k)?),
        _ => None,
    };
    let listener = TcpListener::bind(("127.0.0.1", args.port)).context("bind")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::json!({ "port": port }))?;
        out.flush()?;
    }
    let tally: &'static Tally = Box::leak(Box::new(Tally::new(args.max_seq)));
    let expected = Arc::new(AtomicU64::new(args.expect.unwrap_or(u64::MAX)));
    let stdin_closed = Arc::new(AtomicBool::new(false));
    {
        let (expected, closed) = (expected.clone(), stdin_closed.clone());
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.trim().strip_prefix("expect ") {
                    if let Ok(n) = n.trim().parse() {
                        expected.store(n, Ordering::SeqCst);
                    }
                }
            }
            closed.store(true, Ordering::SeqCst);
        });
    }
    let began = Instant::now();
    let mut threads = Vec::new();
    let (mut last_unique, mut last_progress) = (0u64, Instant::now());
    let reason = loop {
        match listener.accept() {
            Ok((sock, _)) => {
                sock.set_nonblocking(false)?;
                let id = tally.connections.fetch_add(1, Ordering::Relaxed);
                let tls = tls.clone();
                let lf = args.lf;
                threads.push(std::thread::spawn(move || {
                    if let Err(e) = serve(id, sock, tls, lf, tally) {
                        eprintln!("benchsink: connection: {e:#}");
                    }
                }));
                continue;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => eprintln!("benchsink: accept: {e}"),
        }
        let unique = tally.unique.load(Ordering::Relaxed);
        if unique != last_unique {
            (last_unique, last_progress) = (unique, Instant::now());
        }
        let want = expected.load(Ordering::SeqCst);
        if unique >= want {
            break "complete";
        }
        if want != u64::MAX && last_progress.elapsed() >= Duration::from_millis(args.idle_ms) {
            break "idle";
        }
        if stdin_closed.load(Ordering::SeqCst) && args.expect.is_none() && want == u64::MAX {
            break "stdin closed";
        }
        if began.elapsed() >= Duration::from_secs(args.timeout_s) {
            break "timeout";
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    tally.stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    let hist = tally.latency.lock().expect("latency").clone();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let want = expected.load(Ordering::SeqCst);
    let summary = serde_json::json!({
        "reason": reason,
        "expected": (want != u64::MAX).then_some(want),
        "unique": get(&tally.unique),
        "duplicates": get(&tally.duplicates),
        "duplicate_examples": tally.dup_examples.lock().expect("dups").clone(),
        "malformed": get(&tally.malformed),
        "out_of_range": get(&tally.out_of_range),
        "framing_errors": get(&tally.framing_errors),
        "after_stop_bytes": get(&tally.after_stop_bytes),
        "bytes": get(&tally.bytes),
        "connections": get(&tally.connections),
        "first_ns": get(&tally.first_ns),
        "last_ns": get(&tally.last_ns),
        "latency_count": hist.count(),
        "p50_us": hist.quantile(0.50),
        "p99_us": hist.quantile(0.99),
        "max_us": hist.max(),
    });
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(tally: &Tally, id: u64) -> Reader<'_> {
        Reader {
            tally,
            lf: false,
            buf: Vec::new(),
            hist: Histogram::default(),
            id,
            prev_seq: None,
        }
    }

    fn framed(seq: u64) -> Vec<u8> {
        let mut m = bench::Message::new(300);
        let line = m.stamp(seq, mono_ns()).to_vec();
        let mut out = format!("{} ", line.len()).into_bytes();
        out.extend_from_slice(&line);
        out
    }

    /// The end of a run with two forwarder connections: the sink has every event and decides
    /// to stop; its first connection closes, and the forwarder re-sends what that connection
    /// had not confirmed on the second one, still open. That is not a duplicate of the run.
    #[test]
    fn resend_caused_by_the_sinks_own_close_is_not_counted() {
        let tally = Tally::new(1024);
        let (mut first, mut second) = (reader(&tally, 0), reader(&tally, 1));
        assert!(first.feed(&framed(7)));
        assert!(second.feed(&framed(8)));
        assert_eq!(tally.unique.load(Ordering::Relaxed), 2);
        tally.stop.store(true, Ordering::SeqCst);
        let resent = framed(7);
        assert!(second.feed(&resent));
        assert_eq!(tally.duplicates.load(Ordering::Relaxed), 0);
        assert_eq!(tally.unique.load(Ordering::Relaxed), 2);
        assert_eq!(
            tally.after_stop_bytes.load(Ordering::Relaxed),
            resent.len() as u64
        );
    }

    #[test]
    fn a_duplicate_during_the_run_is_counted() {
        let tally = Tally::new(1024);
        let (mut first, mut second) = (reader(&tally, 0), reader(&tally, 1));
        assert!(first.feed(&framed(7)));
        assert!(second.feed(&framed(7)));
        assert_eq!(tally.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(*tally.dup_examples.lock().unwrap(), vec![7]);
    }
}
