//! One TLS connection of the pool, as a tokio task: resolve + connect (timeout), handshake
//! (timeout), then a session that takes batches from the shared work channel, writes each one
//! as a single buffer (`write_all` + `flush`, under the write timeout), and reports which
//! batches are surely received (see `delivery`). On any failure every unconfirmed batch goes back
//! to the dispatcher for re-sending, and the task reconnects after a backoff with jitter.
//!
//! While a session runs, the task also watches the read side: the intake never talks, so EOF
//! (orderly close) or a read error means the peer is gone. A peer that stops reading is noticed
//! by the write timeout (full socket buffers) or by acknowledgements making no progress for
//! `write_timeout`. DNS is resolved here, inside the task, never on the data path.
//!
//! Back-pressure: a connection takes a new batch only while its unconfirmed payload is below
//! `max_inflight_bytes`; while it is down it takes nothing, so batches wait for a live peer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, MissedTickBehavior};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::{info, warn};

use crate::config::Output;
use crate::log_limit::{Repeating, Report};
use crate::uplink::backoff::Backoff;
use crate::uplink::delivery::{unacked_bytes, CountingStream, DeliveryTracker};
use crate::uplink::dispatcher::{Batch, Outcome};
use crate::uplink::relp_session::RelpOpened;
use crate::uplink::{UplinkConfig, UplinkCounters, UplinkError, Wakeup};

/// TCP keepalive: finds a dead idle peer long before the kernel default (2 hours).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

pub(crate) struct Connection {
    pub id: usize,
    pub cfg: Arc<UplinkConfig>,
    pub tls: TlsConnector,
    pub server_name: ServerName<'static>,
    pub work: async_channel::Receiver<Batch>,
    pub outcomes: Sender<Outcome>,
    pub wake: Arc<dyn Wakeup>,
    pub counters: Arc<UplinkCounters>,
    /// Set by the dispatcher when no more work will come.
    pub stop: watch::Receiver<bool>,
}

/// A connected, handshaken session.
pub(crate) struct Established {
    pub tls: TlsStream<CountingStream>,
    /// A duplicate of the socket's descriptor, to ask the kernel about acknowledgements.
    pub probe: std::net::TcpStream,
    /// Raw bytes written to the socket so far (TLS records included).
    pub written: Arc<AtomicU64>,
    pub peer: SocketAddr,
}

pub(crate) enum SessionEnd {
    /// Told to stop; closed with close_notify.
    Stopped,
    Broken {
        error: UplinkError,
        unconfirmed: usize,
    },
}

impl Connection {
    /// The task body: connect, run a session, back off, repeat until told to stop.
    pub(crate) async fn run(self) {
        let cfg = Arc::clone(&self.cfg);
        let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max, cfg.healthy_after);
        let mut stop = self.stop.clone();
        // A destination that keeps refusing is logged once, then summarised (log_limit).
        let mut failing = Repeating::default();
        while !*stop.borrow() {
            let opened = tokio::select! {
                opened = self.open_session() => opened,
                _ = stop.wait_for(|s| *s) => break,
            };
            match opened {
                Err(error) => self.attempt_failed(&error, &mut failing),
                Ok((conn, relp)) => {
                    let up_since = Instant::now();
                    if let Some(Report::Ended { total, lasted }) = failing.cleared(up_since) {
                        info!(connection = self.id, host = %cfg.host, failed_attempts = total,
                              lasted_s = lasted.as_secs(), "uplink reachable again");
                    }
                    self.counters.connects.fetch_add(1, Ordering::Relaxed);
                    self.counters.connections_up.fetch_add(1, Ordering::Relaxed);
                    self.row(|c| c.set_up(true));
                    info!(connection = self.id, host = %cfg.host, port = cfg.port, peer = %conn.peer,
                          "uplink connected");
                    let end = match relp {
                        None => self.session(conn).await,
                        Some(opened) => self.relp_session(conn, opened).await,
                    };
                    self.counters.connections_up.fetch_sub(1, Ordering::Relaxed);
                    self.row(|c| c.set_up(false));
                    backoff.session_ended(up_since.elapsed());
                    match end {
                        SessionEnd::Stopped => break,
                        SessionEnd::Broken { error, unconfirmed } => {
                            self.session_broken(&error, unconfirmed)
                        }
                    }
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }

    fn attempt_failed(&self, error: &UplinkError, failing: &mut Repeating) {
        let counter = match error {
            UplinkError::TlsHandshake { .. } | UplinkError::HandshakeTimeout { .. } => {
                &self.counters.tls_failures
            }
            _ => &self.counters.connect_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        // A connection that never came up is down since its first failure.
        self.row(|c| {
            if c.since_ms.load(Ordering::Relaxed) == 0 {
                c.set_up(false);
            }
        });
        let (host, port) = (&self.cfg.host, self.cfg.port);
        match failing.occurred(Instant::now()) {
            Some(Report::Started) => warn!(connection = self.id, %host, port, error = %error,
                "uplink connection attempt failed, retrying (repeats are summarised every 10 s)"),
            Some(Report::Ongoing {
                count,
                total,
                lasted,
            }) => warn!(connection = self.id, %host,
                port, error = %error, failed_attempts = count, total, lasted_s = lasted.as_secs(),
                "uplink connection attempts still failing, retrying"),
            _ => {}
        }
        self.counters.connection_failed(
            self.id,
            format_args!("uplink connection {}: {error}", self.id),
        );
    }

    /// Updates this connection's row of the status, when the pool registered one.
    fn row(&self, f: impl FnOnce(&super::ConnectionCounters)) {
        if let Some(c) = self.counters.connection(self.id) {
            f(c);
        }
    }

    fn session_broken(&self, error: &UplinkError, unconfirmed: usize) {
        let orderly = matches!(
            error,
            UplinkError::PeerClosed { .. } | UplinkError::RelpServerClose { .. }
        );
        if unconfirmed == 0 && orderly {
            info!(connection = self.id, host = %self.cfg.host, reason = %error,
                  "intake closed an idle uplink connection, reconnecting");
            return;
        }
        self.counters.write_failures.fetch_add(1, Ordering::Relaxed);
        warn!(connection = self.id, host = %self.cfg.host, unconfirmed_batches = unconfirmed,
              error = %error, "uplink connection broke, re-sending what is unconfirmed");
        self.counters.connection_failed(
            self.id,
            format_args!("uplink connection {}: {error}", self.id),
        );
    }

    /// [`Connection::open`], then, for the RELP output, RELP's `open` exchange: a server that
    /// refuses it is a failed attempt, like a failed handshake.
    async fn open_session(&self) -> Result<(Established, Option<RelpOpened>), UplinkError> {
        let mut conn = self.open().await?;
        let relp = match self.cfg.output {
            Output::Tls => None,
            Output::Relp { window } => Some(self.relp_open(&mut conn, window).await?),
        };
        Ok((conn, relp))
    }

    /// Resolve, connect and handshake, each step under its timeout.
    async fn open(&self) -> Result<Established, UplinkError> {
        let (host, port) = (&self.cfg.host, self.cfg.port);
        let tcp = timeout(self.cfg.connect_timeout, self.connect_tcp())
            .await
            .map_err(|_| UplinkError::ConnectTimeout {
                host: host.clone(),
                port,
                after: self.cfg.connect_timeout,
            })??;
        let connect_error = |source| UplinkError::Connect {
            host: host.clone(),
            port,
            source,
        };
        let peer = tcp.peer_addr().map_err(connect_error)?;
        tcp.set_nodelay(true).map_err(connect_error)?;
        let socket = socket2::SockRef::from(&tcp);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL);
        socket
            .set_tcp_keepalive(&keepalive)
            .map_err(connect_error)?;
        let probe = std::net::TcpStream::from(socket.try_clone().map_err(connect_error)?);

        let (counting, written) = CountingStream::new(tcp);
        let handshake = self.tls.connect(self.server_name.clone(), counting);
        let tls = match timeout(self.cfg.handshake_timeout, handshake).await {
            Err(_) => {
                return Err(UplinkError::HandshakeTimeout {
                    host: host.clone(),
                    after: self.cfg.handshake_timeout,
                })
            }
            Ok(Err(source)) => {
                return Err(UplinkError::TlsHandshake {
                    host: host.clone(),
                    source,
                })
            }
            Ok(Ok(tls)) => tls,
        };
        Ok(Established {
            tls,
            probe,
            written,
            peer,
        })
    }

    /// Try every resolved address in turn (the whole step runs under `connect_timeout`).
    async fn connect_tcp(&self) -> Result<TcpStream, UplinkError> {
        let (host, port) = (&self.cfg.host, self.cfg.port);
        let addrs = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| UplinkError::Resolve {
                host: host.clone(),
                port,
                source,
            })?;
        let mut addrs: Vec<SocketAddr> = addrs.collect();
        // Connection k starts at the k-th address: the pool spreads over the intake's servers.
        if !addrs.is_empty() {
            let first = self.id % addrs.len();
            addrs.rotate_left(first);
        }
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address found");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = e,
            }
        }
        Err(UplinkError::Connect {
            host: host.clone(),
            port,
            source: last,
        })
    }

    /// Send batches until told to stop or the connection breaks.
    async fn session(&self, conn: Established) -> SessionEnd {
        let Established {
            tls,
            probe,
            written,
            ..
        } = conn;
        let cfg = &self.cfg;
        let (rd, mut wr) = tokio::io::split(tls);
        let peer_gone = watch_peer(rd, cfg.host.clone());
        tokio::pin!(peer_gone);
        let mut tracker = DeliveryTracker::new(cfg.ack_grace, Instant::now());
        let mut tick = tokio::time::interval(cfg.ack_poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stop = self.stop.clone();
        let mut stop_by: Option<Instant> =
            (*stop.borrow()).then(|| Instant::now() + cfg.write_timeout);

        let broken = loop {
            if let Some(deadline) = stop_by {
                if tracker.is_empty() || Instant::now() >= deadline {
                    break None;
                }
            }
            let can_take = stop_by.is_none() && tracker.payload_bytes() < cfg.max_inflight_bytes;
            tokio::select! {
                biased;
                error = &mut peer_gone => break Some(error),
                _ = tick.tick(), if !tracker.is_empty() => {
                    if let Err(error) = self.poll_acks(&mut tracker, &probe, &written) {
                        break Some(error);
                    }
                }
                _ = stop.changed(), if stop_by.is_none() => {
                    stop_by = Some(Instant::now() + cfg.write_timeout);
                }
                next = self.work.recv(), if can_take => match next {
                    Ok(mut batch) => {
                        // A slot in the channel is free again.
                        self.wake.notify();
                        let result = self.write(&mut wr, &batch).await;
                        if result.is_ok() {
                            // Written: the bytes are still in the source until committed, and
                            // a re-send reads them from there; the buffer goes back now.
                            let _ = self.outcomes.send(Outcome::Spent(std::mem::take(&mut batch.data)));
                        }
                        tracker.written(batch, written.load(Ordering::Acquire), Instant::now());
                        if let Err(error) = result {
                            break Some(error);
                        }
                    }
                    Err(_closed) => stop_by = Some(Instant::now() + cfg.write_timeout),
                },
            }
        };

        let unconfirmed = tracker.take_all();
        let count = unconfirmed.len();
        if count > 0 {
            let events: u64 = unconfirmed.iter().map(|b| u64::from(b.span.records)).sum();
            self.row(|c| {
                c.resent_events.fetch_add(events, Ordering::Relaxed);
            });
            let _ = self.outcomes.send(Outcome::Failed(unconfirmed));
            self.wake.notify();
        }
        match broken {
            Some(error) => SessionEnd::Broken {
                error,
                unconfirmed: count,
            },
            None => {
                // TLS close_notify, then TCP FIN.
                match timeout(cfg.handshake_timeout, wr.shutdown()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(connection = self.id, error = %e, "uplink close failed"),
                    Err(_) => warn!(connection = self.id, "uplink close timed out"),
                }
                info!(connection = self.id, host = %cfg.host, "uplink connection closed");
                SessionEnd::Stopped
            }
        }
    }

    async fn write<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        batch: &Batch,
    ) -> Result<(), UplinkError> {
        let io = async {
            wr.write_all(&batch.data).await?;
            wr.flush().await
        };
        match timeout(self.cfg.write_timeout, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(UplinkError::Write {
                host: self.cfg.host.clone(),
                source,
            }),
            Err(_) => Err(UplinkError::WriteTimeout {
                host: self.cfg.host.clone(),
                after: self.cfg.write_timeout,
            }),
        }
    }

    /// Ask the kernel what the peer acknowledged; report confirmed batches; detect a stall.
    fn poll_acks(
        &self,
        tracker: &mut DeliveryTracker,
        probe: &std::net::TcpStream,
        written: &AtomicU64,
    ) -> Result<(), UplinkError> {
        // Read the counter before the queue (see `delivery`).
        let total = written.load(Ordering::Acquire);
        if let Some(source) = probe.take_error().map_err(UplinkError::AckQuery)? {
            return Err(UplinkError::Write {
                host: self.cfg.host.clone(),
                source,
            });
        }
        let outq = unacked_bytes(probe).map_err(UplinkError::AckQuery)?;
        let now = Instant::now();
        let confirmed = tracker.acked(total.saturating_sub(outq), now);
        if !confirmed.is_empty() {
            let events: u64 = confirmed.iter().map(|b| u64::from(b.span.records)).sum();
            self.row(|c| {
                c.events_sent.fetch_add(events, Ordering::Relaxed);
            });
            for batch in confirmed {
                let _ = self.outcomes.send(Outcome::Confirmed(batch));
            }
            self.wake.notify();
        }
        match tracker.stalled_for(now) {
            Some(stalled) if stalled >= self.cfg.write_timeout => Err(UplinkError::PeerStalled {
                host: self.cfg.host.clone(),
                unacked: outq,
                after: stalled,
            }),
            _ => Ok(()),
        }
    }
}

/// Completes when the peer is gone: EOF (orderly close) or a read error. The intake sends
/// nothing but TLS housekeeping, which rustls handles; stray application bytes are ignored.
async fn watch_peer<R: AsyncRead + Unpin>(mut rd: R, host: String) -> UplinkError {
    let mut buf = vec![0u8; 4096];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => return UplinkError::PeerClosed { host },
            Ok(_) => {}
            Err(source) => return UplinkError::Read { host, source },
        }
    }
}
