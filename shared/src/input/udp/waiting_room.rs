//! UDP's waiting room: the datagrams of new senders whose first name lookup runs.
//!
//! One task serves every UDP sender, so it cannot await one sender's lookup. Instead, a run of
//! datagrams from a sender whose [`FirstLookup`] is pending is copied here, and a small task
//! awaits the lookup (bounded by the resolver's wait). When it ends, [`WaitingRoom::release`]
//! delivers that sender's datagrams in arrival order under the host it got (its name, or its
//! IP after a timeout, counted in `resolve_timeouts`). Meanwhile datagrams from other senders
//! go on, and later datagrams of a held sender join its queue, so its order is kept.
//!
//! Bounds ([`RoomLimits`]): per sender [`SENDER_DATAGRAMS`] datagrams and [`SENDER_BYTES`]
//! bytes, in total [`TOTAL_DATAGRAMS`] and [`TOTAL_BYTES`] (message bytes; buffers may hold up
//! to twice that). A run of datagrams that does not fit is not dropped: its sender's queue is
//! delivered at once under what the resolver knows (the IP), followed by the run, counted once
//! in `resolve_wait_overflows`; that sender's later datagrams also go out at once until its
//! lookup ends. Losing events is worse than a few under the IP, and UDP already drops what the
//! sink refuses. At shutdown every held datagram is delivered at once the same way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};

use super::super::WaitedHost;
use super::super::{FirstLookup, Frame, InputCounters, MessageSink, Resolver, SenderHost};

/// Datagrams held for one sender, at most.
pub(crate) const SENDER_DATAGRAMS: usize = 2_000;
/// Message bytes held for one sender, at most.
pub(crate) const SENDER_BYTES: usize = 2 << 20;
/// Datagrams held for all senders, at most.
pub(crate) const TOTAL_DATAGRAMS: usize = 20_000;
/// Message bytes held for all senders, at most.
pub(crate) const TOTAL_BYTES: usize = 16 << 20;

/// How much the waiting room holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoomLimits {
    pub sender_datagrams: usize,
    pub sender_bytes: usize,
    pub total_datagrams: usize,
    pub total_bytes: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            sender_datagrams: SENDER_DATAGRAMS,
            sender_bytes: SENDER_BYTES,
            total_datagrams: TOTAL_DATAGRAMS,
            total_bytes: TOTAL_BYTES,
        }
    }
}

/// Where datagrams go, and what is counted.
pub(crate) struct Outlet<'a> {
    pub sink: &'a dyn MessageSink,
    pub names: &'a Resolver,
    pub counters: &'a InputCounters,
}

impl Outlet<'_> {
    /// One `deliver` call; what the sink refuses is dropped and counted (UDP cannot wait).
    pub fn deliver(&self, peer: SocketAddr, host: &str, frames: &[Frame<'_>]) {
        let accepted = self.sink.deliver(peer, host, frames).min(frames.len());
        InputCounters::add(
            &self.counters.dropped_full,
            (frames.len() - accepted) as u64,
        );
    }
}

/// What to do with a run of datagrams from one sender.
pub(crate) enum Route {
    /// Deliver now under this host.
    Now(Arc<str>),
    /// Hold them: [`WaitingRoom::hold`].
    Hold,
}

/// How a wait task ended: its id, and the sender with the host it got.
pub(crate) type WaitDone = Result<(Id, (IpAddr, WaitedHost)), JoinError>;

/// The held datagrams of the senders whose first lookup runs (see the module doc).
pub(crate) struct WaitingRoom {
    limits: RoomLimits,
    held: HashMap<IpAddr, Held>,
    waits: JoinSet<(IpAddr, WaitedHost)>,
    datagrams: usize,
    bytes: usize,
}

/// One sender's held datagrams.
struct Held {
    /// In arrival order: sender port, span in `bytes`, truncated flag.
    frames: Vec<(SocketAddr, Range<usize>, bool)>,
    bytes: Vec<u8>,
    /// The room overflowed: later datagrams go out at once until the lookup ends.
    overflowed: bool,
    /// The task awaiting the lookup.
    task: Id,
}

impl WaitingRoom {
    pub fn new(limits: RoomLimits) -> Self {
        Self {
            limits,
            held: HashMap::new(),
            waits: JoinSet::new(),
            datagrams: 0,
            bytes: 0,
        }
    }

    /// Whether a lookup is awaited ([`next_done`](Self::next_done) would not end at once).
    pub fn is_waiting(&self) -> bool {
        !self.waits.is_empty()
    }

    /// The next wait that ended; hand it to [`release`](Self::release). Cancel-safe.
    pub async fn next_done(&mut self) -> Option<WaitDone> {
        self.waits.join_next_with_id().await
    }

    /// Deliver now (a known sender: one resolver lookup), or hold (a new or held sender).
    pub fn route(&mut self, ip: IpAddr, names: &Resolver) -> Route {
        if !self.held.is_empty() {
            if let Some(held) = self.held.get(&ip) {
                return match held.overflowed {
                    true => Route::Now(names.host_for(ip)),
                    false => Route::Hold,
                };
            }
        }
        match names.host_or_wait(ip) {
            SenderHost::Known(host) => Route::Now(host),
            SenderHost::Pending(first) => {
                self.start_wait(ip, first);
                Route::Hold
            }
        }
    }

    fn start_wait(&mut self, ip: IpAddr, first: FirstLookup) {
        let task = self.waits.spawn(async move { (ip, first.wait().await) });
        let held = Held {
            frames: Vec::new(),
            bytes: Vec::new(),
            overflowed: false,
            task: task.id(),
        };
        self.held.insert(ip, held);
    }

    /// Holds a run of frames of `peer` after [`Route::Hold`]; when they do not fit, delivers
    /// the sender's queue and the run at once instead (counted).
    pub fn hold(&mut self, peer: SocketAddr, frames: &[Frame<'_>], out: &Outlet<'_>) {
        let ip = peer.ip();
        let Some(held) = self.held.get_mut(&ip) else {
            out.deliver(peer, &out.names.host_for(ip), frames);
            return;
        };
        let size: usize = frames.iter().map(|f| f.bytes.len()).sum();
        let limits = &self.limits;
        let fits = held.frames.len() + frames.len() <= limits.sender_datagrams
            && held.bytes.len() + size <= limits.sender_bytes
            && self.datagrams + frames.len() <= limits.total_datagrams
            && self.bytes + size <= limits.total_bytes;
        if fits {
            for frame in frames {
                let start = held.bytes.len();
                held.bytes.extend_from_slice(frame.bytes);
                held.frames
                    .push((peer, start..held.bytes.len(), frame.truncated));
            }
            self.datagrams += frames.len();
            self.bytes += size;
            return;
        }
        InputCounters::add(&out.counters.resolve_wait_overflows, 1);
        tracing::debug!(sender = %ip, "UDP waiting room full; the sender's messages go out under its IP");
        held.overflowed = true;
        let taken = std::mem::take(&mut held.frames);
        let bytes = std::mem::take(&mut held.bytes);
        self.datagrams -= taken.len();
        self.bytes -= bytes.len();
        let host = out.names.host_for(ip);
        deliver_held(&taken, &bytes, &host, out);
        out.deliver(peer, &host, frames);
    }

    /// Delivers the datagrams of the sender whose wait ended, in order, under its host.
    pub fn release(&mut self, done: WaitDone, out: &Outlet<'_>) {
        let (ip, waited) = match done {
            Ok((_, sender)) => sender,
            Err(e) => {
                // The wait task failed (it does not, short of a bug): release its sender anyway.
                tracing::error!(error = %e, "UDP wait for a sender's name failed");
                let held = self.held.iter().find(|(_, h)| h.task == e.id());
                let Some(ip) = held.map(|(ip, _)| *ip) else {
                    return;
                };
                let host = out.names.host_for(ip);
                let timed_out = false;
                (ip, WaitedHost { host, timed_out })
            }
        };
        let Some(held) = self.held.remove(&ip) else {
            return;
        };
        self.datagrams -= held.frames.len();
        self.bytes -= held.bytes.len();
        if waited.timed_out && !held.overflowed {
            InputCounters::add(&out.counters.resolve_timeouts, 1);
        }
        deliver_held(&held.frames, &held.bytes, &waited.host, out);
    }

    /// Shutdown: delivers everything held at once, under what the resolver knows now.
    pub fn release_all(&mut self, out: &Outlet<'_>) {
        self.waits.abort_all();
        for (ip, held) in self.held.drain() {
            deliver_held(&held.frames, &held.bytes, &out.names.host_for(ip), out);
        }
        self.datagrams = 0;
        self.bytes = 0;
    }
}

/// Delivers held frames in order, one `deliver` call per run of the same sender port.
fn deliver_held(
    held: &[(SocketAddr, Range<usize>, bool)],
    bytes: &[u8],
    host: &str,
    out: &Outlet<'_>,
) {
    let mut frames = Vec::new();
    let mut rest = held;
    while let Some((peer, _, _)) = rest.first() {
        let run = rest.iter().take_while(|(p, _, _)| p == peer).count();
        frames.clear();
        frames.extend(rest[..run].iter().map(|(_, span, truncated)| Frame {
            bytes: &bytes[span.clone()],
            truncated: *truncated,
        }));
        out.deliver(*peer, host, &frames);
        rest = &rest[run..];
    }
}

#[cfg(test)]
mod tests;
