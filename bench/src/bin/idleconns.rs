//! What idle TCP connections cost the ingest worker: starts the real forwarder (the binary
//! next to this one, or `SEKOIA_FORWARDER_BIN`) with one tcp intake and a local TLS sink,
//! opens connections in steps (each sends one event, then stays open and silent), and prints
//! the worker's resident memory at each step and the cost per connection above its baseline.
//!
//! `idleconns 1000 10000 limit` (the default): `limit` means as many as this process's and
//! the worker's open-file limits allow, minus a margin. Connections come from 127.0.0.1,
//! 127.0.0.2, ... (20,000 each) so the ephemeral ports of one address never run out.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sekoia_tests::{free_tcp_port, wait_until, ForwarderBuilder, TestCerts, TlsSink};
use socket2::{Domain, Socket, Type};

const KEY: &str = "IdleConnsKey0123456789";
const PER_ADDRESS: usize = 20_000;
/// Descriptors kept free for the worker's own files and the sink.
const MARGIN: usize = 200;

fn main() -> Result<()> {
    let steps = parse_steps()?;
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let yaml = format!(
        "intakes:\n- name: Idle\n  protocol: tcp\n  port: {port}\n  intake_key: {KEY}\n  \
         max_connections_per_source: {PER_ADDRESS}\n"
    );
    let fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .start();
    let worker = fwd.worker_pids("ingest-worker");
    let worker = *worker.first().context("no ingest worker")?;
    let baseline = rss_kib(worker);
    println!("ingest worker {worker}: baseline RSS {baseline} KiB");
    println!("connections  rss_kib  above_baseline_kib  bytes_per_connection");
    let mut open: Vec<TcpStream> = Vec::new();
    for target in steps {
        while open.len() < target {
            let n = open.len();
            let mut c = connect_from(n, port)
                .with_context(|| format!("connection {n} (lower the step?)"))?;
            writeln!(c, "<13>Jan  5 01:02:03 idle app: seq={n} hello")?;
            open.push(c);
        }
        let all = wait_until(Duration::from_secs(300), || sink.count() >= open.len());
        if !all {
            bail!("only {} of {} events arrived", sink.count(), open.len());
        }
        // Let the last reads finish and buffers go back.
        std::thread::sleep(Duration::from_secs(2));
        let rss = rss_kib(worker);
        let above = rss.saturating_sub(baseline);
        let per = above * 1024 / open.len() as u64;
        println!("{:>11}  {rss:>7}  {above:>18}  {per:>20}", open.len());
    }
    Ok(())
}

fn parse_steps() -> Result<Vec<usize>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        args = ["1000", "10000", "limit"].map(String::from).to_vec();
    }
    let limit = open_file_limit()?.saturating_sub(MARGIN);
    args.iter()
        .map(|a| match a.as_str() {
            "limit" => Ok(limit),
            n => n.parse().with_context(|| format!("{n:?} is not a count")),
        })
        .collect()
}

/// The soft open-file limit, from `/proc/self/limits` ("Max open files  SOFT  HARD  files").
fn open_file_limit() -> Result<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-file limit in /proc/self/limits")?;
    let soft = line.split_whitespace().nth(3).context("no soft limit")?;
    soft.parse().with_context(|| format!("soft limit {soft:?}"))
}

/// Connection `n` comes from 127.0.0.(1 + n / PER_ADDRESS).
fn connect_from(n: usize, port: u16) -> std::io::Result<TcpStream> {
    let last = u8::try_from(1 + n / PER_ADDRESS).unwrap_or(u8::MAX);
    let local = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), 0);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&local.into())?;
    socket.connect(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into())?;
    Ok(socket.into())
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
