//! The RELP session against a scripted RELP server on 127.0.0.1 (TLS, rcgen certificates):
//! delivery and commits only after the answers, the window, and every way a server can be
//! wrong. The real peer (rsyslog's imrelp) is exercised in `tests/tests/relp.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::harness::{fast_config, listener, pki, start, wait_until, MemSource, Received};
use crate::config::Output;
use crate::relp::{encode, FrameReader};

/// How the scripted server behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Answers every command with 200, like imrelp.
    Answer,
    /// Its `open` answer offers no `syslog` command.
    NoSyslog,
    /// The first session sends bytes that are not a frame after this many events; later
    /// sessions answer normally.
    GarbageOnce(usize),
    /// The first session answers this many events, then one with `500`; later sessions answer.
    RefuseOnce(usize),
    /// The first session announces `serverclose` instead of answering event `after + 1`,
    /// then closes; later sessions answer.
    ServerCloseOnce(usize),
    /// Answers `open`, never a `syslog` command.
    Silent,
}

const OPEN_ANSWER: &[u8] = b"200 OK\nrelp_version=0\nrelp_software=scripted,1\ncommands=syslog\n";

/// A scripted RELP server on loopback: what it received, its task, its port, our CA file
/// (kept on disk while `_pki` lives).
struct Scripted {
    received: Arc<Received>,
    server: JoinHandle<()>,
    port: u16,
    ca_file: std::path::PathBuf,
    _pki: super::harness::TestPki,
}

async fn scripted(script: Script) -> Scripted {
    let pki = pki(&["127.0.0.1"]);
    let (l, port) = listener().await;
    let received = Arc::new(Received::default());
    let server = serve_relp(l, Arc::clone(&pki.server), Arc::clone(&received), script);
    Scripted {
        received,
        server,
        port,
        ca_file: pki.ca_file.clone(),
        _pki: pki,
    }
}

fn serve_relp(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    received: Arc<Received>,
    script: Script,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let misbehaved = Arc::new(AtomicBool::new(false));
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, received) = (acceptor.clone(), Arc::clone(&received));
            let misbehaved = Arc::clone(&misbehaved);
            conns.spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    let _ = session(stream, &received, script, &misbehaved).await;
                }
            });
        }
    })
}

async fn session<S>(
    mut stream: S,
    received: &Received,
    script: Script,
    misbehaved: &AtomicBool,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut reader, mut chunk, mut events) = (FrameReader::new(), vec![0u8; 64 * 1024], 0);
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        reader.feed(&chunk[..n]);
        let mut out = Vec::new();
        while let Some(frame) = reader.next_frame().map_err(std::io::Error::other)? {
            match frame.command.as_str() {
                "open" if script == Script::NoSyslog => encode(
                    &mut out,
                    frame.txnr,
                    "rsp",
                    b"200 OK\nrelp_version=0\ncommands=foo\n",
                ),
                "open" => encode(&mut out, frame.txnr, "rsp", OPEN_ANSWER),
                "close" => {
                    encode(&mut out, frame.txnr, "rsp", b"200 OK");
                    stream.write_all(&out).await?;
                    return stream.shutdown().await;
                }
                _ => {
                    events += 1;
                    match script {
                        Script::Silent => {
                            received.add(&frame.data);
                            continue;
                        }
                        Script::GarbageOnce(after)
                            if events > after && !misbehaved.swap(true, Ordering::SeqCst) =>
                        {
                            out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\n");
                        }
                        Script::RefuseOnce(after)
                            if events > after && !misbehaved.swap(true, Ordering::SeqCst) =>
                        {
                            encode(&mut out, frame.txnr, "rsp", b"500 queue full");
                        }
                        Script::ServerCloseOnce(after)
                            if events > after && !misbehaved.swap(true, Ordering::SeqCst) =>
                        {
                            encode(&mut out, 0, "serverclose", b"");
                            stream.write_all(&out).await?;
                            return stream.shutdown().await;
                        }
                        _ => {
                            received.add(&frame.data);
                            encode(&mut out, frame.txnr, "rsp", b"200 OK");
                        }
                    }
                }
            }
        }
        stream.write_all(&out).await?;
        stream.flush().await?;
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn relp_config(port: u16, ca: std::path::PathBuf, window: u32) -> crate::uplink::UplinkConfig {
    let mut cfg = fast_config(port, Some(ca));
    cfg.output = Output::Relp { window };
    cfg
}

fn all_arrived(received: &Received, sources: &[MemSource]) -> bool {
    let lines: Vec<_> = sources.iter().map(MemSource::lines).collect();
    let counts = received.counts.lock().unwrap();
    lines.iter().flatten().all(|l| counts.contains_key(l))
}

/// A commit may only follow the server's answer, and the answer follows its receipt.
const NO_SLACK: Duration = Duration::ZERO;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_events_arrive_once_without_octet_count_and_commit_after_answers() {
    let Scripted {
        received,
        server,
        port,
        ca_file,
        _pki,
    } = scripted(Script::Answer).await;
    let sources = [
        MemSource::new("alpha", 2_000, 40),
        MemSource::new("beta", 300, 300),
    ];
    let up = start(relp_config(port, ca_file.clone(), 16), &sources);
    let counters = Arc::clone(&up.counters);
    up.stop().await.unwrap();

    assert_eq!(received.total(), 2_300, "every event exactly once");
    for s in &sources {
        assert!(s.lines().iter().all(|l| received.count_of(l) == 1));
        assert_eq!(s.committed_pos(), s.len());
        let late = s.late_or_lost_commits(&received, NO_SLACK);
        assert!(late.is_empty(), "{late:?}");
    }
    let snap = counters.snapshot();
    assert_eq!((snap.events_sent, snap.relp_acknowledged), (2_300, 2_300));
    assert_eq!((snap.resent_events, snap.relp_window_in_use), (0, 0));
    assert!(snap.relp_sessions >= 1);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_syslog_is_refused_at_open_and_nothing_is_committed() {
    let Scripted {
        received,
        server,
        port,
        ca_file,
        _pki,
    } = scripted(Script::NoSyslog).await;
    let sources = [MemSource::new("alpha", 50, 10)];
    let up = start(relp_config(port, ca_file.clone(), 16), &sources);
    let counters = Arc::clone(&up.counters);
    wait_until(secs(5), "refused open reported", || {
        counters.snapshot().last_error.is_some()
    })
    .await;
    let error = counters.snapshot().last_error.unwrap_or_default();
    assert!(
        error.contains("open refused: the server does not offer the syslog command")
            && error.contains("127.0.0.1"),
        "{error}"
    );
    assert_eq!(received.total(), 0);
    assert_eq!(sources[0].committed_pos(), 0);
    let snap = counters.snapshot();
    assert_eq!(snap.relp_sessions, 0);
    assert!(
        snap.connect_failures >= 1,
        "a refused open is a failed attempt"
    );
    assert_eq!(snap.write_failures, 0, "no session was ever up");
    let _ = up.stop().await;
    server.abort();
}

/// Runs `script` until every event arrived; returns the counters' last error.
async fn recovers_from(script: Script, expect_in_error: &str) {
    let Scripted {
        received,
        server,
        port,
        ca_file,
        _pki,
    } = scripted(script).await;
    let sources = [MemSource::new("alpha", 1_000, 40)];
    let mut cfg = relp_config(port, ca_file.clone(), 32);
    cfg.connections = 1;
    let up = start(cfg, &sources);
    let counters = Arc::clone(&up.counters);
    wait_until(secs(10), "every event", || all_arrived(&received, &sources)).await;
    up.stop().await.unwrap();
    let snap = counters.snapshot();
    let error = snap.last_error.unwrap_or_default();
    assert!(error.contains(expect_in_error), "{error}");
    assert!(error.contains("127.0.0.1:"), "names the peer: {error}");
    assert!(snap.write_failures >= 1 && snap.relp_sessions >= 2);
    assert!(
        snap.resent_events >= 1,
        "the unanswered events were sent again"
    );
    let duplicates = received.total() - 1_000;
    assert!(duplicates as u64 <= snap.resent_events);
    assert_eq!(sources[0].committed_pos(), sources[0].len());
    let late = sources[0].late_or_lost_commits(&received, NO_SLACK);
    assert!(late.is_empty(), "{late:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_ends_the_session_and_nothing_is_lost() {
    recovers_from(
        Script::GarbageOnce(100),
        "malformed frame: TXNR has a byte it may not hold (frame starts \"HTTP/1.1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_ends_the_session_and_is_sent_again() {
    recovers_from(Script::RefuseOnce(100), "refused: 500 queue full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serverclose_ends_the_session_and_the_unanswered_events_are_sent_again() {
    recovers_from(
        Script::ServerCloseOnce(100),
        "announced it closes the session (serverclose)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_fills_the_window_and_nothing_is_committed() {
    let Scripted {
        received,
        server,
        port,
        ca_file,
        _pki,
    } = scripted(Script::Silent).await;
    let sources = [MemSource::new("alpha", 1_000, 40)];
    let mut cfg = relp_config(port, ca_file.clone(), 8);
    cfg.connections = 1;
    cfg.write_timeout = secs(3);
    let up = start(cfg, &sources);
    let counters = Arc::clone(&up.counters);
    wait_until(secs(5), "a full window", || {
        counters.snapshot().relp_window_in_use == 8
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received.total(), 8, "the window bounds what is unanswered");
    assert_eq!(
        sources[0].committed_pos(),
        0,
        "nothing answered, nothing freed"
    );
    // After write_timeout without an answer the session ends; the events wait for the next.
    wait_until(secs(6), "the silence noticed", || {
        let error = counters.snapshot().last_error.unwrap_or_default();
        error.contains("answered none of 8 events for")
    })
    .await;
    assert_eq!(sources[0].committed_pos(), 0);
    let _ = up.stop().await;
    assert_eq!(sources[0].committed_pos(), 0);
    server.abort();
}
