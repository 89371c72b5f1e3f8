//! UDP listener: one datagram is one message.
//!
//! Framing ([`datagram_frame`]): one trailing LF is dropped, empty datagrams are ignored,
//! anything beyond [`MAX_MESSAGE`] is truncated (unreachable with IPv4/IPv6 datagrams of at
//! most 64 KiB, kept so the rule holds whatever the limit).
//!
//! The socket gets a large receive buffer ([`RECV_BUFFER`], capped by the kernel's
//! `net.core.rmem_max`) to ride out bursts. What the kernel still drops because that buffer
//! was full is counted in `udp_kernel_drops` (`SO_RXQ_OVFL`, see `udp/receive.rs`). When readable, datagrams are received until the
//! socket would block or a batch is full ([`BATCH_DATAGRAMS`], or the 1 MiB arena), straight
//! into one arena without copies, then delivered: one `deliver` call per run of datagrams
//! from the same sender. UDP cannot push back, so frames the sink refuses are dropped and
//! counted in `dropped_full` (SPEC §6).
//!
//! Sender names: a run of datagrams from a known sender goes out at once (one resolver lookup
//! per run); the datagrams of a new sender whose first lookup runs wait, in order and bounded,
//! in the [`WaitingRoom`] while the other senders' go on (see `udp/waiting_room.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use super::sources::SourceGate;
use super::SourceFilter;
use super::MAX_MESSAGE;
use super::{shutdown_requested, Frame, InputCounters, InputError, MessageSink, Resolver};
use waiting_room::{Outlet, RoomLimits, Route, WaitingRoom};

mod receive;
mod waiting_room;

/// Receive buffer asked of the kernel for the socket.
pub(crate) const RECV_BUFFER: usize = 8 << 20;
/// Datagrams received before a delivery, at most.
pub(crate) const BATCH_DATAGRAMS: usize = 64;
/// Largest UDP payload (IPv6 without jumbograms); one receive slot.
const SLOT: usize = 65_536;
/// Arena for one batch.
const ARENA: usize = (1 << 20) + SLOT;

/// Serves syslog over UDP on the inherited socket until shutdown.
pub async fn serve_udp(
    s: std::net::UdpSocket,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), InputError> {
    serve_udp_from(s, sink, names, c, shutdown, SourceFilter::default()).await
}

/// [`serve_udp`] that drops (and counts) datagrams from outside `sources`.
pub async fn serve_udp_from(
    s: std::net::UdpSocket,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    shutdown: watch::Receiver<bool>,
    sources: SourceFilter,
) -> Result<(), InputError> {
    let limits = RoomLimits::default();
    serve_udp_filtered(s, sink, names, c, shutdown, limits, sources).await
}

/// [`serve_udp`] with explicit waiting-room limits.
#[cfg(test)]
pub(crate) async fn serve_udp_with_room(
    s: std::net::UdpSocket,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    shutdown: watch::Receiver<bool>,
    limits: RoomLimits,
) -> Result<(), InputError> {
    let sources = SourceFilter::default();
    serve_udp_filtered(s, sink, names, c, shutdown, limits, sources).await
}

async fn serve_udp_filtered(
    s: std::net::UdpSocket,
    sink: Arc<dyn MessageSink>,
    names: Arc<Resolver>,
    c: Arc<InputCounters>,
    mut shutdown: watch::Receiver<bool>,
    limits: RoomLimits,
    sources: SourceFilter,
) -> Result<(), InputError> {
    let gate = SourceGate::new(sources, c.clone());
    let adopt = |source| InputError::AdoptSocket {
        kind: "UDP",
        source,
    };
    s.set_nonblocking(true).map_err(adopt)?;
    enlarge_receive_buffer(&s);
    receive::enable_drop_count(&s);
    let socket = tokio::net::UdpSocket::from_std(s).map_err(adopt)?;
    let mut arena = vec![0u8; ARENA];
    let mut control = receive::control_buffer();
    let mut received: Vec<(SocketAddr, std::ops::Range<usize>)> = Vec::new();
    let mut room = WaitingRoom::new(limits);
    let out = Outlet {
        sink: sink.as_ref(),
        names: &names,
        counters: &c,
    };
    loop {
        tokio::select! {
            _ = shutdown_requested(&mut shutdown) => {
                room.release_all(&out);
                return Ok(());
            }
            Some(done) = room.next_done(), if room.is_waiting() => {
                room.release(done, &out);
                continue;
            }
            ready = socket.readable() => ready.map_err(InputError::Receive)?,
        }
        receive_batch(&socket, &mut arena, &mut control, &mut received, &c);
        gate.keep_allowed(&mut received);
        deliver_batch(&arena, &received, &out, &mut room);
    }
}

/// Receives datagrams into `arena` until the socket would block or the batch is full.
fn receive_batch(
    socket: &tokio::net::UdpSocket,
    arena: &mut [u8],
    control: &mut [u8],
    received: &mut Vec<(SocketAddr, std::ops::Range<usize>)>,
    c: &InputCounters,
) {
    let mut used = 0;
    received.clear();
    while received.len() < BATCH_DATAGRAMS && used + SLOT <= arena.len() {
        let slot = &mut arena[used..used + SLOT];
        // The kernel's drop count is cumulative: reading it with the first datagram of each
        // batch is enough, and keeps recvmsg's extra cost off the rest (see udp/receive.rs).
        let got = if received.is_empty() {
            receive::try_receive(socket, slot, control)
        } else {
            socket.try_recv_from(slot).map(|(n, peer)| (n, peer, None))
        };
        match got {
            Ok((n, peer, kernel_drops)) => {
                if let Some(drops) = kernel_drops {
                    receive::note_kernel_drops(c, drops);
                }
                InputCounters::add(&c.bytes_received, n as u64);
                received.push((peer, used..used + n));
                used += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                InputCounters::add(&c.read_errors, 1);
                tracing::debug!(error = %e, "UDP receive failed");
                break;
            }
        }
    }
}

/// Delivers one batch, one call per run of datagrams from the same sender (or holds the run
/// in the waiting room while the sender's first lookup runs).
fn deliver_batch(
    arena: &[u8],
    received: &[(SocketAddr, std::ops::Range<usize>)],
    out: &Outlet<'_>,
    room: &mut WaitingRoom,
) {
    let c = out.counters;
    let mut frames = Vec::with_capacity(received.len());
    let mut rest = received;
    while let Some((peer, _)) = rest.first() {
        let run = rest.iter().take_while(|(p, _)| p == peer).count();
        frames.clear();
        frames.extend(
            rest[..run]
                .iter()
                .filter_map(|(_, r)| datagram_frame(&arena[r.clone()])),
        );
        rest = &rest[run..];
        if frames.is_empty() {
            continue;
        }
        InputCounters::add(&c.received, frames.len() as u64);
        let truncated = frames.iter().filter(|f| f.truncated).count();
        InputCounters::add(&c.truncated, truncated as u64);
        match room.route(peer.ip(), out.names) {
            Route::Now(host) => out.deliver(*peer, &host, &frames),
            Route::Hold => room.hold(*peer, &frames, out),
        }
    }
}

/// The message of one datagram: one trailing LF dropped, empty ignored, truncated to the limit.
pub(crate) fn datagram_frame(datagram: &[u8]) -> Option<Frame<'_>> {
    let bytes = datagram.strip_suffix(b"\n").unwrap_or(datagram);
    if bytes.is_empty() {
        return None;
    }
    let truncated = bytes.len() > MAX_MESSAGE;
    Some(Frame {
        bytes: &bytes[..bytes.len().min(MAX_MESSAGE)],
        truncated,
    })
}

fn enlarge_receive_buffer(s: &std::net::UdpSocket) {
    let socket = socket2::SockRef::from(s);
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    match socket.recv_buffer_size() {
        // Linux reports twice the usable size; the cap is net.core.rmem_max.
        Ok(size) if size < RECV_BUFFER => tracing::info!(
            bytes = size,
            wanted = RECV_BUFFER,
            "UDP receive buffer smaller than wanted (raise net.core.rmem_max)"
        ),
        Ok(size) => tracing::debug!(bytes = size, "UDP receive buffer"),
        Err(e) => tracing::debug!(error = %e, "cannot read the UDP receive buffer size"),
    }
}

#[cfg(test)]
mod tests;
