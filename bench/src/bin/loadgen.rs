//! Load generator: syslog events over TCP (octet-counted or LF, plain or TLS) on N
//! connections, or UDP datagrams at a fixed rate, each event stamped with its sequence number
//! and send time (see the library's `Message`).
//!
//! Sequence numbers are global and dense: the events sent are exactly `0..sent`, so a sink
//! told `sent` can check every one. TCP connections are all established before the clock
//! starts. With `--spread`, client `i` binds 127.0.<i/250>.<i%250+1> before connecting.
//!
//! Prints one JSON object on stdout: `sent`, `start_ns`, `end_ns` (CLOCK_MONOTONIC),
//! `connections`, `errors`. Exits 1 when anything failed (a connection refused or reset, a
//! short send): the driver must not trust such a run.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::{mono_ns, spread_source, Message};
use clap::{Parser, ValueEnum};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::{Barrier, Semaphore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Framing {
    /// `LEN SP MSG` (RFC 6587 octet counting).
    Octet,
    /// `MSG LF`.
    Lf,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Stamped syslog load over TCP, TLS or UDP")]
struct Args {
    /// Where to send (127.0.0.0/8 only).
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, value_enum, default_value = "tcp")]
    proto: Proto,
    #[arg(long, value_enum, default_value = "octet")]
    framing: Framing,
    /// Speak TLS (server name `localhost`) trusting this CA: the generator straight to the
    /// sink, to measure the sink's ceiling.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// TCP connections (UDP: sockets).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Bytes of each message, framing excluded.
    #[arg(long, default_value_t = 300)]
    size: usize,
    /// Total events to send.
    #[arg(long, conflicts_with = "duration")]
    events: Option<u64>,
    /// Send for this many seconds instead.
    #[arg(long)]
    duration: Option<f64>,
    /// Total events per second (0: as fast as the peer takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Bind client i to 127.0.<i/250>.<i%250+1>.
    #[arg(long)]
    spread: bool,
    /// Bytes per write (TCP).
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// Connections being established at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
}

/// What every sender shares: the next sequence number and the stop condition.
struct Plan {
    next_seq: AtomicU64,
    limit: u64,
    deadline: Option<Instant>,
    per_conn_rate: f64,
}

impl Plan {
    /// Takes up to `k` sequence numbers; None when the run is over.
    fn take(&self, k: u64) -> Option<(u64, u64)> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let start = self.next_seq.fetch_add(k, Ordering::Relaxed);
        if start >= self.limit {
            return None;
        }
        Some((start, k.min(self.limit - start)))
    }
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            println!("{report}");
            if report["errors"].as_u64() != Some(0) {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<serde_json::Value> {
    if !matches!(args.target.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback()) {
        bail!("the target must be in 127.0.0.0/8");
    }
    if args.events.is_none() && args.duration.is_none() {
        bail!("give --events or --duration");
    }
    if args.connections == 0 || args.connections > 60_000 {
        bail!("--connections must be 1..=60000");
    }
    Message::new(args.size); // checks the size
    match args.proto {
        Proto::Udp => udp(args),
        Proto::Tcp => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(tcp(args)),
    }
}

fn plan(args: &Args) -> Plan {
    Plan {
        next_seq: AtomicU64::new(0),
        limit: args.events.unwrap_or(u64::MAX),
        deadline: None,
        per_conn_rate: args.rate as f64 / args.connections as f64,
    }
}

/// A client connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

async fn connect(args: &Args, i: usize) -> Result<Stream> {
    let socket = TcpSocket::new_v4()?;
    if args.spread {
        socket.bind(SocketAddr::new(spread_source(i).into(), 0))?;
    }
    socket.set_nodelay(true)?;
    let tcp = tokio::time::timeout(Duration::from_secs(10), socket.connect(args.target))
        .await
        .context("connect timed out")??;
    match &args.tls_ca {
        None => Ok(Box::new(tcp)),
        Some(ca) => {
            let config = bench::certs::client_config(ca)?;
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(Box::new(tls))
        }
    }
}

async fn tcp(args: &Args) -> Result<serde_json::Value> {
    let args = Arc::new(args.clone());
    let mut plan = plan(&args);
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let last_write_ns = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(args.connections + 1));
    let connecting = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (plan_tx, plan_rx) = tokio::sync::watch::channel::<Option<Arc<Plan>>>(None);
    let mut tasks = Vec::with_capacity(args.connections);
    let connect_began = mono_ns();
    for i in 0..args.connections {
        let last_write_ns = last_write_ns.clone();
        let (args, sent, errors, barrier, connecting, mut plan_rx) = (
            args.clone(),
            sent.clone(),
            errors.clone(),
            barrier.clone(),
            connecting.clone(),
            plan_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let stream = {
                let _permit = connecting.acquire().await;
                connect(&args, i).await
            };
            barrier.wait().await;
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    report_error(&errors, i, "connect", &e);
                    return;
                }
            };
            let plan = loop {
                if let Some(p) = plan_rx.borrow_and_update().clone() {
                    break p;
                }
                if plan_rx.changed().await.is_err() {
                    return;
                }
            };
            if let Err(e) = send_tcp(&args, &plan, &mut stream, &sent).await {
                report_error(&errors, i, "send", &e);
                return;
            }
            last_write_ns.fetch_max(mono_ns(), Ordering::Relaxed);
            // Close cleanly: wait for the peer's close, so that no unread byte (a TLS session
            // ticket) makes our close a reset that would discard what the peer has not read.
            let mut scrap = [0u8; 4096];
            let drained = tokio::time::timeout(Duration::from_secs(60), async {
                while let Ok(n) = stream.read(&mut scrap).await {
                    if n == 0 {
                        break;
                    }
                }
            });
            if drained.await.is_err() {
                eprintln!("loadgen: connection {i}: the peer did not close within 60 s");
            }
        }));
    }
    barrier.wait().await;
    let start_ns = mono_ns();
    eprintln!(
        "loadgen: {} connections in {:.2} s, {} failed",
        args.connections,
        start_ns.saturating_sub(connect_began) as f64 / 1e9,
        errors.load(Ordering::Relaxed)
    );
    plan.deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    plan_tx.send(Some(Arc::new(plan)))?;
    for t in tasks {
        t.await?;
    }
    let end_ns = last_write_ns.load(Ordering::Relaxed).max(start_ns);
    Ok(serde_json::json!({
        "sent": sent.load(Ordering::Relaxed),
        "start_ns": start_ns,
        "end_ns": end_ns,
        "connections": args.connections,
        "errors": errors.load(Ordering::Relaxed),
    }))
}

/// Counts a failed connection; prints the first few (thousands of identical lines help nobody).
fn report_error(errors: &AtomicU64, i: usize, what: &str, e: &anyhow::Error) {
    let n = errors.fetch_add(1, Ordering::Relaxed);
    if n < 10 {
        eprintln!("loadgen: connection {i}: {what}: {e:#}");
    } else if n == 10 {
        eprintln!("loadgen: more connections failed (counted in `errors`)");
    }
}

async fn send_tcp(args: &Args, plan: &Plan, stream: &mut Stream, sent: &AtomicU64) -> Result<()> {
    let mut msg = Message::new(args.size);
    let framed = msg.len() + 8;
    let per_batch = (args.batch_bytes / framed).max(1) as u64;
    let mut buf = Vec::with_capacity(per_batch as usize * framed);
    let began = Instant::now();
    let mut mine = 0u64;
    loop {
        let mut k = per_batch;
        if plan.per_conn_rate > 0.0 {
            let due = (plan.per_conn_rate * began.elapsed().as_secs_f64()) as u64;
            if due <= mine {
                if plan.deadline.is_some_and(|d| Instant::now() >= d)
                    || plan.next_seq.load(Ordering::Relaxed) >= plan.limit
                {
                    break;
                }
                let wait = ((mine + 1 - due) as f64 / plan.per_conn_rate).clamp(0.001, 0.05);
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                continue;
            }
            k = k.min(due - mine);
        }
        let Some((start, k)) = plan.take(k) else {
            break;
        };
        buf.clear();
        let t = mono_ns();
        for seq in start..start + k {
            let m = msg.stamp(seq, t);
            match args.framing {
                Framing::Octet => {
                    buf.extend_from_slice(m.len().to_string().as_bytes());
                    buf.push(b' ');
                    buf.extend_from_slice(m);
                }
                Framing::Lf => {
                    buf.extend_from_slice(m);
                    buf.push(b'\n');
                }
            }
        }
        stream.write_all(&buf).await?;
        mine += k;
        sent.fetch_add(k, Ordering::Relaxed);
    }
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(())
}

/// UDP at a fixed rate (or as fast as possible), `sendmmsg` in batches of up to 64, paced
/// every millisecond.
fn udp(args: &Args) -> Result<serde_json::Value> {
    const BATCH: usize = 64;
    let mut sockets = Vec::new();
    for i in 0..args.connections {
        let src = if args.spread {
            spread_source(i)
        } else {
            std::net::Ipv4Addr::LOCALHOST
        };
        let s = UdpSocket::bind((src, 0))?;
        s.connect(args.target)?;
        sockets.push(s);
    }
    let plan = plan(args);
    let mut msgs: Vec<Message> = (0..BATCH).map(|_| Message::new(args.size)).collect();
    let start_ns = mono_ns();
    let began = Instant::now();
    let deadline = args.duration.map(|d| began + Duration::from_secs_f64(d));
    let (mut sent, mut errors, mut turn) = (0u64, 0u64, 0usize);
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) || sent >= plan.limit {
            break;
        }
        let due = if args.rate > 0 {
            ((args.rate as f64 * now.duration_since(began).as_secs_f64()) as u64).min(plan.limit)
        } else {
            (sent + BATCH as u64).min(plan.limit)
        };
        if due <= sent {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        let mut left = due - sent;
        while left > 0 {
            let n = left.min(BATCH as u64) as usize;
            let t = mono_ns();
            let mut iov: Vec<libc::iovec> = msgs[..n]
                .iter_mut()
                .enumerate()
                .map(|(j, m)| {
                    let bytes = m.stamp(sent + j as u64, t);
                    libc::iovec {
                        iov_base: bytes.as_ptr() as *mut libc::c_void,
                        iov_len: bytes.len(),
                    }
                })
                .collect();
            // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
            let mut hdrs: Vec<libc::mmsghdr> =
                (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
            for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
            }
            let sock = &sockets[turn % sockets.len()];
            turn += 1;
            let mut done = 0usize;
            while done < n {
                // SAFETY: hdrs[done..n] point into iov and msgs, alive for this call; the
                // socket is connected, so no destination address is needed.
                let r = unsafe {
                    libc::sendmmsg(
                        sock.as_raw_fd(),
                        hdrs[done..].as_mut_ptr(),
                        (n - done) as u32,
                        0,
                    )
                };
                if r < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    eprintln!("loadgen: sendmmsg: {e}");
                    errors += 1;
                    break;
                }
                done += r as usize;
            }
            sent += done as u64;
            left -= n as u64;
            if done < n {
                break;
            }
        }
        if errors > 0 {
            break;
        }
    }
    Ok(serde_json::json!({
        "sent": sent,
        "start_ns": start_ns,
        "end_ns": mono_ns(),
        "connections": args.connections,
        "errors": errors,
    }))
}
