//! Which written bytes are *surely received*.
//!
//! Syslog over TLS has no application acknowledgement, so the uplink uses the peer's TCP
//! acknowledgements. The rule:
//!
//! > A batch is confirmed once (1) it has been fully written and flushed to the socket,
//! > (2) the peer's TCP stack has acknowledged every raw byte written to the socket up to the
//! > end of that batch, and (3) the connection then stayed healthy for `ack_grace` (no read error,
//! > no EOF, no pending socket error) after that acknowledgement was observed.
//!
//! (2) is measured without any cooperation from the peer: [`CountingStream`], under the TLS
//! stream, counts every raw (encrypted) byte the TCP socket accepted, and `ioctl(SIOCOUTQ)` tells
//! how many of them the kernel still holds (unsent + unacknowledged); `acked = written - outq`.
//! The counter is read *before* the ioctl, so a write racing the two can only under-estimate
//! `acked`. (3) covers the receiving process dying with bytes its kernel acknowledged but it had
//! not read yet: if it dies within the grace window, the connection breaks before those bytes
//! are confirmed, and they are re-sent. (Measured: with `ack_grace = 0` the "receiver killed
//! mid-stream" test loses events every time; with 100 ms it never does.)
//!
//! What the rule cannot see: bytes the peer's kernel acknowledged and its process never read
//! because it died more than `ack_grace` after the acknowledgement. That is the limit of plain
//! TLS syslog; everywhere else duplicates are preferred to loss.
//!
//! Confirmation is in write order on one connection: the first pending batch is confirmed before
//! any later one. The tracker also measures how long the peer has made no progress, which is how
//! a peer that stopped reading is noticed.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::uplink::dispatcher::Batch;

/// Written but not yet confirmed batches of one connection, oldest first.
#[derive(Debug)]
pub(crate) struct DeliveryTracker {
    pending: VecDeque<InFlight>,
    grace: Duration,
    /// Payload bytes of the pending batches (the in-flight memory bound).
    payload_bytes: usize,
    last_acked: u64,
    /// Last time the peer acknowledged something new or a wait for acknowledgement started.
    last_progress: Instant,
}

#[derive(Debug)]
struct InFlight {
    batch: Batch,
    /// Raw socket byte count once this batch was flushed.
    end_offset: u64,
    /// When `acked >= end_offset` was first observed.
    acked_at: Option<Instant>,
}

impl DeliveryTracker {
    pub(crate) fn new(grace: Duration, now: Instant) -> Self {
        Self {
            pending: VecDeque::new(),
            grace,
            payload_bytes: 0,
            last_acked: 0,
            last_progress: now,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub(crate) fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// `batch` was flushed; the socket had taken `end_offset` raw bytes in total afterwards.
    pub(crate) fn written(&mut self, batch: Batch, end_offset: u64, now: Instant) {
        if self.pending.iter().all(|p| p.acked_at.is_some()) {
            // Nothing was waiting for the peer until now: the stall clock starts here.
            self.last_progress = now;
        }
        self.payload_bytes += batch.len;
        self.pending.push_back(InFlight {
            batch,
            end_offset,
            acked_at: None,
        });
    }

    /// The peer acknowledged `acked` raw bytes. Returns the batches confirmed now, in order.
    pub(crate) fn acked(&mut self, acked: u64, now: Instant) -> Vec<Batch> {
        if acked > self.last_acked {
            self.last_acked = acked;
            self.last_progress = now;
        }
        for p in self.pending.iter_mut() {
            if p.end_offset > self.last_acked {
                break;
            }
            p.acked_at.get_or_insert(now);
        }
        let mut confirmed = Vec::new();
        while let Some(front) = self.pending.front() {
            match front.acked_at {
                Some(at) if now.saturating_duration_since(at) >= self.grace => {}
                _ => break,
            }
            if let Some(done) = self.pending.pop_front() {
                self.payload_bytes -= done.batch.len;
                confirmed.push(done.batch);
            }
        }
        confirmed
    }

    /// How long the peer has acknowledged nothing while some pending bytes await its ack.
    pub(crate) fn stalled_for(&self, now: Instant) -> Option<Duration> {
        self.pending
            .iter()
            .any(|p| p.acked_at.is_none())
            .then(|| now.saturating_duration_since(self.last_progress))
    }

    /// The connection failed: every unconfirmed batch, oldest first, for re-sending.
    pub(crate) fn take_all(&mut self) -> Vec<Batch> {
        self.payload_bytes = 0;
        self.pending.drain(..).map(|p| p.batch).collect()
    }
}

/// Bytes the kernel still holds for this socket: not yet sent or sent but not acknowledged.
#[cfg(target_os = "linux")]
pub(crate) fn unacked_bytes(socket: &std::net::TcpStream) -> std::io::Result<u64> {
    let mut outq: libc::c_int = 0;
    // SAFETY: `socket` is a live, open TCP socket for the whole call (borrowed), and TIOCOUTQ
    // (== SIOCOUTQ) writes exactly one c_int through the pointer, which points to `outq`.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut outq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::try_from(outq).unwrap_or(0))
}

/// Without SIOCOUTQ, bytes count as acknowledged once written; the grace window still applies.
#[cfg(not(target_os = "linux"))]
pub(crate) fn unacked_bytes(socket: &std::net::TcpStream) -> std::io::Result<u64> {
    let _ = socket.as_raw_fd();
    Ok(0)
}

/// The TCP stream under TLS, counting every byte the socket accepted.
pub(crate) struct CountingStream {
    inner: TcpStream,
    written: Arc<AtomicU64>,
}

impl CountingStream {
    /// Wrap `inner`; the returned counter grows with every byte the socket accepts.
    pub(crate) fn new(inner: TcpStream) -> (Self, Arc<AtomicU64>) {
        let written = Arc::new(AtomicU64::new(0));
        let stream = Self {
            inner,
            written: Arc::clone(&written),
        };
        (stream, written)
    }

    fn count(&self, result: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = result {
            self.written.fetch_add(*n as u64, Ordering::Release);
        }
    }
}

impl AsyncRead for CountingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.count(&result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.count(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::ReadSpan;

    fn batch(start: u64, len: usize) -> Batch {
        Batch {
            source: 0,
            span: ReadSpan {
                start,
                end: start + 1,
                records: 1,
                bytes: len as u64,
            },
            data: vec![b'x'; len],
            len,
        }
    }

    fn starts(batches: &[Batch]) -> Vec<u64> {
        batches.iter().map(|b| b.span.start).collect()
    }

    #[test]
    fn batch_is_confirmed_only_after_ack_and_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_millis(100);
        let mut t = DeliveryTracker::new(grace, t0);
        t.written(batch(0, 10), 1_000, t0);
        t.written(batch(1, 10), 2_000, t0);
        assert_eq!(t.payload_bytes(), 20);
        assert!(t.acked(999, t0).is_empty(), "not fully acked yet");
        assert!(t.acked(1_500, t0).is_empty(), "acked but grace not over");
        let done = t.acked(1_500, t0 + grace);
        assert_eq!(starts(&done), [0]);
        assert_eq!(t.payload_bytes(), 10);
        assert!(
            t.acked(2_000, t0 + grace).is_empty(),
            "second batch acked later"
        );
        assert_eq!(starts(&t.acked(2_000, t0 + 2 * grace)), [1]);
        assert!(t.is_empty());
    }

    #[test]
    fn failure_hands_back_every_unconfirmed_batch_in_order() {
        let t0 = Instant::now();
        let mut t = DeliveryTracker::new(Duration::ZERO, t0);
        t.written(batch(0, 5), 100, t0);
        t.written(batch(1, 5), 200, t0);
        t.written(batch(2, 5), 300, t0);
        assert_eq!(starts(&t.acked(100, t0)), [0]);
        assert_eq!(starts(&t.take_all()), [1, 2]);
        assert_eq!(t.payload_bytes(), 0);
    }

    #[test]
    fn stall_clock_runs_only_while_bytes_await_acknowledgement() {
        let t0 = Instant::now();
        let grace = Duration::from_millis(50);
        let mut t = DeliveryTracker::new(grace, t0);
        assert_eq!(t.stalled_for(t0), None);
        let t1 = t0 + Duration::from_secs(5);
        t.written(batch(0, 5), 100, t1);
        assert_eq!(t.stalled_for(t1 + grace), Some(grace));
        t.acked(50, t1 + grace);
        assert_eq!(
            t.stalled_for(t1 + grace),
            Some(Duration::ZERO),
            "progress resets it"
        );
        t.acked(100, t1 + grace);
        assert_eq!(
            t.stalled_for(t1 + 3 * grace),
            None,
            "all acked, waiting for grace"
        );
    }

    #[test]
    fn outq_drains_to_zero_once_the_peer_reads() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(&[7u8; 4096]).unwrap();
        let mut buf = [0u8; 4096];
        server.read_exact(&mut buf).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while unacked_bytes(&client).unwrap() > 0 {
            assert!(Instant::now() < deadline, "loopback never acknowledged");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
