//! What idle TCP connections cost the ingest worker: starts the real forwarder (the binary
//! next to this one, or `SEKOIA_FORWARDER_BIN`) with one tcp intake and a local TLS sink,
//! opens connections in steps (each sends one event, then stays open and silent), and prints
//! the worker's resident memory at each step and the cost per connection above its baseline.
//!
//! `idleconns [tls] 1000 10000 limit` (the default steps): `limit` means as many as this
//! process's and the worker's open-file limits allow, minus a margin; `tls` measures a tls
//! intake instead of a tcp one. Connections come from 127.0.0.1,
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
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let tls = args.first().is_some_and(|a| a == "tls");
    if tls {
        args.remove(0);
    }
    let steps = parse_steps(args)?;
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let port = free_tcp_port();
    let protocol = if tls { "tls" } else { "tcp" };
    let yaml = format!(
        "intakes:\n- name: Idle\n  protocol: {protocol}\n  port: {port}\n  intake_key: {KEY}\n  \
         max_connections_per_source: {PER_ADDRESS}\n"
    );
    let fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .certs_dir(&certs.certs_dir())
        .start();
    let worker = fwd.worker_pids("ingest-worker");
    let worker = *worker.first().context("no ingest worker")?;
    let baseline = rss_kib(worker);
    println!("{protocol} ingest worker {worker}: baseline RSS {baseline} KiB");
    println!("connections  rss_kib  above_baseline_kib  bytes_per_connection");
    // Open client connections, kept silent until the end.
    let mut plain: Vec<TcpStream> = Vec::new();
    let mut secure: Vec<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> = Vec::new();
    let mut open = 0usize;
    for target in steps {
        while open < target {
            let n = open;
            let tcp = connect_from(n, port)
                .with_context(|| format!("connection {n} (lower the step?)"))?;
            let event = format!("<13>Jan  5 01:02:03 idle app: seq={n} hello\n");
            if tls {
                let name = "localhost".try_into()?;
                let conn = rustls::ClientConnection::new(certs.client_config(), name)?;
                let mut stream = rustls::StreamOwned::new(conn, tcp);
                stream.write_all(event.as_bytes())?;
                stream.flush()?;
                secure.push(stream);
            } else {
                let mut tcp = tcp;
                tcp.write_all(event.as_bytes())?;
                plain.push(tcp);
            }
            open += 1;
        }
        let all = wait_until(Duration::from_secs(300), || sink.count() >= open);
        if !all {
            bail!("only {} of {open} events arrived", sink.count());
        }
        // Let the last reads finish and buffers go back.
        std::thread::sleep(Duration::from_secs(2));
        let rss = rss_kib(worker);
        let above = rss.saturating_sub(baseline);
        let per = above * 1024 / open as u64;
        println!("{open:>11}  {rss:>7}  {above:>18}  {per:>20}");
    }
    println!(
        "({} clients held open until now)",
        plain.len() + secure.len()
    );
    Ok(())
}

fn parse_steps(mut args: Vec<String>) -> Result<Vec<usize>> {
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
