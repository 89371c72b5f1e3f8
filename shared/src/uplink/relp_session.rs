//! A connection's session when the destination's output is RELP (`crate::relp`).
//!
//! After the TLS handshake, `relp_open` sends `open` and checks the answer (version 0, `syslog`
//! offered); a refusal is a failed connection attempt (logged, summarised when it repeats,
//! backoff). Then `relp_session` takes batches from the same work channel as the TLS output and
//! sends every output line of a batch as one `syslog` command (the line without its octet count), at most `window` commands
//! without an answer. A batch is delivered, and handed back to the dispatcher as confirmed
//! (which alone lets its source commit, freeing ring and journal space), once the server has
//! answered every command up to its last one with `200`. There is no TCP-level guess and no
//! grace window: the answer is the receiver's word that it has the event.
//!
//! Anything else from the server ends the session with an error naming the peer and what was
//! wrong: a malformed frame, an answer that is not `200`, an answer for a txnr nothing waits
//! for, a command a server may not send, or `serverclose`. So does a server that answers
//! nothing for `write_timeout` while events wait. Every batch not yet confirmed, including one
//! half written, goes back to the dispatcher and is sent again, in order, on the next session:
//! events the server had already answered in it are sent twice (counted in `resent_events`),
//! none is lost. On shutdown the session waits (at most `write_timeout`) for the answers, sends
//! `close`, waits for its answer, then closes TLS.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::{info, warn};

use crate::relp::{self, FrameReader, OctetLines, Offers, Response, Txnr, Window};
use crate::uplink::connection::{Connection, Established, SessionEnd};
use crate::uplink::dispatcher::{Batch, Outcome};
use crate::uplink::UplinkError;

/// Bytes of `syslog` commands written at once (at most a window's worth of events).
const MAX_WRITE: usize = 256 * 1024;
/// How often a session with unanswered events checks whether the server went quiet.
const STALL_CHECK: Duration = Duration::from_millis(100);

/// A batch being written, or written and waiting for its answers.
struct Sending {
    batch: Batch,
    /// Bytes of `batch.data` already sent as commands.
    offset: usize,
    /// Session rank of its last command (see `relp::Window::answered_through`).
    last_rank: u64,
}

/// The state of one RELP session.
struct Session<'a> {
    conn: &'a Connection,
    peer: SocketAddr,
    window: Window,
    txnr: Txnr,
    reader: FrameReader,
    /// Fully written batches, oldest first.
    written: VecDeque<Sending>,
    /// The batch whose commands are being written.
    current: Option<Sending>,
    out: Vec<u8>,
    /// Last answer, or when the window last went from empty to in use.
    last_progress: Instant,
    /// What this session added to `relp_window_in_use`.
    gauge: u64,
}

/// A RELP session the server accepted: what the session goes on with.
pub(crate) struct RelpOpened {
    offers: Offers,
    window: u32,
    txnr: Txnr,
    /// Bytes the server sent after its answer to `open`, if any.
    reader: FrameReader,
}

impl Connection {
    /// RELP's `open` on an established TLS connection (under `handshake_timeout`): our offers,
    /// then the server's answer, checked.
    pub(crate) async fn relp_open(
        &self,
        conn: &mut Established,
        window: u32,
    ) -> Result<RelpOpened, UplinkError> {
        let peer = conn.peer;
        let (mut rd, mut wr) = tokio::io::split(&mut conn.tls);
        let mut s = Session::new(self, peer, window, Txnr::new(), FrameReader::new());
        match timeout(self.cfg.handshake_timeout, s.open(&mut rd, &mut wr)).await {
            Err(_) => Err(s.problem(format!(
                "no answer to open within {:?}",
                self.cfg.handshake_timeout
            ))),
            Ok(Err(error)) => Err(error),
            Ok(Ok(offers)) => Ok(RelpOpened {
                offers,
                window,
                txnr: s.txnr,
                reader: std::mem::take(&mut s.reader),
            }),
        }
    }

    /// Run one RELP session on a connection whose `open` the server accepted.
    pub(crate) async fn relp_session(&self, conn: Established, opened: RelpOpened) -> SessionEnd {
        let Established { tls, peer, .. } = conn;
        let RelpOpened {
            offers,
            window,
            txnr,
            reader,
        } = opened;
        self.counters.relp_sessions.fetch_add(1, Ordering::Relaxed);
        info!(connection = self.id, host = %self.cfg.host, peer = %peer,
              server = offers.software.as_deref().unwrap_or("-"), window, "RELP session open");
        let (mut rd, mut wr) = tokio::io::split(tls);
        let mut s = Session::new(self, peer, window, txnr, reader);
        let broken = s.run(&mut rd, &mut wr).await;
        let unconfirmed = s.hand_back();
        match broken {
            Some(error) => SessionEnd::Broken { error, unconfirmed },
            None => {
                s.close(&mut rd, &mut wr).await;
                SessionEnd::Stopped
            }
        }
    }
}

impl<'a> Session<'a> {
    fn new(
        conn: &'a Connection,
        peer: SocketAddr,
        window: u32,
        txnr: Txnr,
        reader: FrameReader,
    ) -> Self {
        Self {
            conn,
            peer,
            window: Window::new(window),
            txnr,
            reader,
            written: VecDeque::new(),
            current: None,
            out: Vec::new(),
            last_progress: Instant::now(),
            gauge: 0,
        }
    }

    fn problem(&self, problem: impl std::fmt::Display) -> UplinkError {
        UplinkError::Relp {
            host: self.conn.cfg.host.clone(),
            peer: self.peer,
            problem: problem.to_string(),
        }
    }

    /// Send `open` and check the server's answer.
    async fn open<R, W>(&mut self, rd: &mut R, wr: &mut W) -> Result<Offers, UplinkError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let txnr = self.txnr.take();
        self.out.clear();
        relp::encode(&mut self.out, txnr, relp::OPEN, &relp::client_offer());
        self.write_out(wr).await?;
        let frame = self.next_frame(rd).await?;
        if frame.command != relp::RSP || frame.txnr != txnr {
            return Err(self.problem(format!(
                "expected the answer to open (txnr {txnr}), got {} with txnr {}",
                frame.command, frame.txnr
            )));
        }
        let rsp = Response::parse(&frame.data).map_err(|e| self.problem(e))?;
        Offers::from_open_answer(&rsp).map_err(|e| self.problem(format!("open refused: {e}")))
    }

    /// Read until one whole frame is there.
    async fn next_frame<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<relp::Frame, UplinkError> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = self.reader.next_frame().map_err(|e| self.problem(e))? {
                return Ok(frame);
            }
            let n = self.read(rd, &mut chunk).await?;
            self.reader.feed(&chunk[..n]);
        }
    }

    async fn read<R: AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        chunk: &mut [u8],
    ) -> Result<usize, UplinkError> {
        let host = self.conn.cfg.host.clone();
        match rd.read(chunk).await {
            Ok(0) => Err(UplinkError::PeerClosed { host }),
            Ok(n) => Ok(n),
            Err(source) => Err(UplinkError::Read { host, source }),
        }
    }

    /// Take batches, send their commands within the window, absorb answers; returns `None`
    /// when told to stop and everything sent was answered (or the stop deadline passed).
    async fn run<R, W>(&mut self, rd: &mut R, wr: &mut W) -> Option<UplinkError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let cfg = std::sync::Arc::clone(&self.conn.cfg);
        let mut stop = self.conn.stop.clone();
        let mut stop_by = (*stop.borrow()).then(|| Instant::now() + cfg.write_timeout);
        let mut stall_check = tokio::time::interval(STALL_CHECK);
        let mut chunk = vec![0u8; 4096];
        loop {
            if let Some(deadline) = stop_by {
                let idle = self.current.is_none() && self.written.is_empty();
                if idle || Instant::now() >= deadline {
                    return None;
                }
            }
            // As soon as an answer frees a slot: holding commands back until more of the
            // window is free stalls on a librelp server, whose small answers wait (Nagle) for
            // the acknowledgement that our kernel delays (40 ms) while we send nothing
            // (measured: 5,300 instead of 25,800 events/s in the bench's RELP scenario).
            if self.current.is_some() && self.window.room() > 0 {
                if let Err(error) = self.send_commands(wr).await {
                    return Some(error);
                }
                continue;
            }
            let can_take = stop_by.is_none()
                && self.current.is_none()
                && self.window.room() > 0
                && self.written.iter().map(|s| s.batch.len).sum::<usize>() < cfg.max_inflight_bytes;
            tokio::select! {
                biased;
                read = self.read(rd, &mut chunk) => {
                    let absorbed = match read {
                        Ok(n) => self.absorb(&chunk[..n]),
                        Err(error) => Err(error),
                    };
                    if let Err(error) = absorbed {
                        return Some(error);
                    }
                }
                _ = stall_check.tick(), if !self.window.is_empty() => {
                    let quiet = self.last_progress.elapsed();
                    if quiet >= cfg.write_timeout {
                        return Some(UplinkError::RelpStalled {
                            host: cfg.host.clone(),
                            waiting: self.window.in_use(),
                            after: quiet,
                        });
                    }
                }
                _ = stop.changed(), if stop_by.is_none() => {
                    stop_by = Some(Instant::now() + cfg.write_timeout);
                }
                next = self.conn.work.recv(), if can_take => match next {
                    Ok(batch) => {
                        // A slot in the channel is free again.
                        self.conn.wake.notify();
                        self.current = Some(Sending { batch, offset: 0, last_rank: 0 });
                    }
                    Err(_closed) => stop_by = Some(Instant::now() + cfg.write_timeout),
                },
            }
        }
    }

    /// Write the next commands of the current batch, as many as the window allows.
    async fn send_commands<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
    ) -> Result<(), UplinkError> {
        let Some(mut sending) = self.current.take() else {
            return Ok(());
        };
        if self.window.is_empty() {
            self.last_progress = Instant::now();
        }
        self.out.clear();
        let mut lines = OctetLines::new(&sending.batch.data, sending.offset);
        while self.window.room() > 0 && self.out.len() < MAX_WRITE {
            match lines.next() {
                None => break,
                Some(Err(e)) => return Err(self.problem(format!("cannot frame the batch: {e}"))),
                Some(Ok((line, next))) => {
                    let txnr = self.txnr.take();
                    relp::encode(&mut self.out, txnr, relp::SYSLOG, line);
                    sending.last_rank = self.window.sent(txnr);
                    sending.offset = next;
                }
            }
        }
        self.sync_gauge();
        let done = sending.offset >= sending.batch.data.len();
        let result = self.write_out(wr).await;
        if done && result.is_ok() {
            // Written: the bytes stay in the source until committed, and a re-send reads
            // them from there; the buffer goes back now.
            let data = std::mem::take(&mut sending.batch.data);
            let _ = self.conn.outcomes.send(Outcome::Spent(data));
            self.written.push_back(sending);
            self.confirm();
        } else {
            self.current = Some(sending);
        }
        result
    }

    async fn write_out<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> Result<(), UplinkError> {
        let cfg = &self.conn.cfg;
        let io = async {
            wr.write_all(&self.out).await?;
            wr.flush().await
        };
        match timeout(cfg.write_timeout, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(UplinkError::Write {
                host: cfg.host.clone(),
                source,
            }),
            Err(_) => Err(UplinkError::WriteTimeout {
                host: cfg.host.clone(),
                after: cfg.write_timeout,
            }),
        }
    }

    /// Bytes from the server: apply every whole frame.
    fn absorb(&mut self, bytes: &[u8]) -> Result<(), UplinkError> {
        self.reader.feed(bytes);
        while let Some(frame) = self.reader.next_frame().map_err(|e| self.problem(e))? {
            match frame.command.as_str() {
                relp::RSP => self.answered(frame.txnr, &frame.data)?,
                relp::SERVERCLOSE => {
                    return Err(UplinkError::RelpServerClose {
                        host: self.conn.cfg.host.clone(),
                        peer: self.peer,
                    })
                }
                other => {
                    return Err(self.problem(format!(
                        "the server sent command {other:?} (txnr {}), which only clients send",
                        frame.txnr
                    )))
                }
            }
        }
        Ok(())
    }

    fn answered(&mut self, txnr: u32, data: &[u8]) -> Result<(), UplinkError> {
        let rsp = Response::parse(data).map_err(|e| self.problem(e))?;
        if !rsp.is_ok() {
            return Err(self.problem(format!("event txnr {txnr} refused: {rsp}")));
        }
        self.window.answered(txnr).map_err(|e| self.problem(e))?;
        self.last_progress = Instant::now();
        let counters = &self.conn.counters;
        counters.relp_acknowledged.fetch_add(1, Ordering::Relaxed);
        self.sync_gauge();
        self.confirm();
        Ok(())
    }

    /// Hand the batches whose every command is answered to the dispatcher.
    fn confirm(&mut self) {
        let through = self.window.answered_through();
        let mut any = false;
        while self.written.front().is_some_and(|s| s.last_rank <= through) {
            if let Some(done) = self.written.pop_front() {
                let _ = self.conn.outcomes.send(Outcome::Confirmed(done.batch));
                any = true;
            }
        }
        if any {
            self.conn.wake.notify();
        }
    }

    /// Keep `relp_window_in_use` equal to the sum of the sessions' windows.
    fn sync_gauge(&mut self) {
        let now = self.window.in_use() as u64;
        let gauge = &self.conn.counters.relp_window_in_use;
        if now > self.gauge {
            gauge.fetch_add(now - self.gauge, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(self.gauge - now, Ordering::Relaxed);
        }
        self.gauge = now;
    }

    /// The session is over: every unconfirmed batch goes back for re-sending, oldest first.
    /// Returns how many.
    fn hand_back(&mut self) -> usize {
        let gauge = &self.conn.counters.relp_window_in_use;
        gauge.fetch_sub(self.gauge, Ordering::Relaxed);
        self.gauge = 0;
        let mut unconfirmed: Vec<Batch> = self.written.drain(..).map(|s| s.batch).collect();
        unconfirmed.extend(self.current.take().map(|s| s.batch));
        let count = unconfirmed.len();
        if count > 0 {
            let _ = self.conn.outcomes.send(Outcome::Failed(unconfirmed));
            self.conn.wake.notify();
        }
        count
    }

    /// Orderly end: `close`, its answer (bounded), then TLS close_notify.
    async fn close<R, W>(&mut self, rd: &mut R, wr: &mut W)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (id, limit) = (self.conn.id, self.conn.cfg.handshake_timeout);
        let txnr = self.txnr.take();
        let closed = timeout(limit, async {
            self.out.clear();
            relp::encode(&mut self.out, txnr, relp::CLOSE, b"");
            self.write_out(wr).await?;
            loop {
                let frame = self.next_frame(rd).await?;
                if frame.command == relp::RSP && frame.txnr == txnr {
                    return Ok::<_, UplinkError>(());
                }
            }
        })
        .await;
        match closed {
            Ok(Ok(())) | Ok(Err(UplinkError::PeerClosed { .. })) => {}
            Ok(Err(e)) => warn!(connection = id, error = %e, "RELP close failed"),
            Err(_) => warn!(connection = id, "RELP close got no answer in time"),
        }
        match timeout(limit, wr.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(connection = id, error = %e, "uplink close failed"),
            Err(_) => warn!(connection = id, "uplink close timed out"),
        }
        info!(connection = id, host = %self.conn.cfg.host, "RELP session closed");
    }
}
