//! Test support: a [`MessageSink`] that records what it accepts and can play a full queue,
//! a reverse lookup held back by a gate, and [`wait_for`], a wait on a condition with a
//! deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Frame, Lookup, MessageSink, Resolver};

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub peer: SocketAddr,
    pub host: String,
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

/// Records accepted frames; accepts at most `room` more (usize::MAX: unlimited).
pub(crate) struct RecordingSink {
    pub messages: Mutex<Vec<Received>>,
    room: AtomicUsize,
    /// Sizes of every `deliver` call, accepted or not.
    pub calls: Mutex<Vec<usize>>,
}

impl RecordingSink {
    pub fn new() -> Arc<Self> {
        Self::with_room(usize::MAX)
    }

    pub fn with_room(room: usize) -> Arc<Self> {
        Arc::new(Self {
            messages: Mutex::new(Vec::new()),
            room: AtomicUsize::new(room),
            calls: Mutex::new(Vec::new()),
        })
    }

    pub fn set_room(&self, room: usize) {
        self.room.store(room, Ordering::SeqCst);
    }

    pub fn texts(&self) -> Vec<String> {
        let messages = self.messages.lock().unwrap();
        messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.bytes).into_owned())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    /// Messages from one sender port, in order.
    pub fn texts_from(&self, peer: SocketAddr) -> Vec<String> {
        let messages = self.messages.lock().unwrap();
        let from = messages.iter().filter(|m| m.peer == peer);
        from.map(|m| String::from_utf8_lossy(&m.bytes).into_owned())
            .collect()
    }

    /// Waits (polling) until `done` holds, panicking after `limit`.
    pub async fn wait_until(&self, limit: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        wait_for(limit, what, || done(self)).await;
    }
}

/// Polls `done` every 5 ms until it holds; panics naming `what` after `limit`.
pub(crate) async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl MessageSink for RecordingSink {
    fn deliver(&self, peer: SocketAddr, host: &str, frames: &[Frame<'_>]) -> usize {
        self.calls.lock().unwrap().push(frames.len());
        let room = self.room.load(Ordering::SeqCst);
        let take = frames.len().min(room);
        if room != usize::MAX {
            self.room.fetch_sub(take, Ordering::SeqCst);
        }
        let mut messages = self.messages.lock().unwrap();
        for frame in &frames[..take] {
            messages.push(Received {
                peer,
                host: host.to_string(),
                bytes: frame.bytes.to_vec(),
                truncated: frame.truncated,
            });
        }
        take
    }
}

/// A reverse lookup for tests: the `slow` address answers `slow.example` only once the gate is
/// opened (at the latest after [`GATE_LIMIT`], so a forgotten gate cannot hang a test); every
/// other address answers `fast.example` at once.
pub(crate) struct GatedLookup {
    open: Mutex<bool>,
    opened: Condvar,
    asked: AtomicBool,
    answered: AtomicBool,
}

/// Longest a gated lookup waits for its gate.
pub(crate) const GATE_LIMIT: Duration = Duration::from_secs(20);

impl GatedLookup {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(false),
            opened: Condvar::new(),
            asked: AtomicBool::new(false),
            answered: AtomicBool::new(false),
        })
    }

    /// A resolver using this lookup, whose new senders wait at most `wait`.
    pub fn resolver(self: &Arc<Self>, slow: IpAddr, wait: Duration) -> Arc<Resolver> {
        let gate = self.clone();
        let lookup: Lookup = Arc::new(move |ip| {
            if ip != slow {
                return Some("fast.example".to_string());
            }
            gate.asked.store(true, Ordering::SeqCst);
            let open = gate.open.lock().unwrap();
            let (_open, _) = gate
                .opened
                .wait_timeout_while(open, GATE_LIMIT, |open| !*open)
                .unwrap();
            gate.answered.store(true, Ordering::SeqCst);
            Some("slow.example".to_string())
        });
        Arc::new(Resolver::with_lookup(lookup, None).with_wait(wait))
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// The slow address's lookup has started.
    pub fn asked(&self) -> bool {
        self.asked.load(Ordering::SeqCst)
    }

    /// The slow address's lookup has answered.
    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::SeqCst)
    }
}

/// The end of the "a new sender is named, a known sender goes on" scenario the TCP and TLS
/// tests share, once the known sender has sent `known`: its message is delivered while the
/// slow lookup is still held; once the gate opens, the slow sender's first message (`slow
/// first`) carries its name, and no wait timed out.
pub(crate) async fn assert_known_first_then_named(
    sink: &RecordingSink,
    gate: &GatedLookup,
    counters: &super::InputCounters,
    patience: Duration,
) {
    sink.wait_until(patience, "the known sender's message", |s| s.count() == 1)
        .await;
    assert_eq!(sink.texts(), ["known"]);
    assert!(
        !gate.answered(),
        "delivered before the slow lookup answered"
    );
    gate.open();
    sink.wait_until(patience, "the slow sender's message", |s| s.count() == 2)
        .await;
    let messages = sink.messages.lock().unwrap().clone();
    assert_eq!(messages[0].host, "fast.example");
    assert_eq!(messages[1].bytes, b"slow first");
    assert_eq!(
        messages[1].host, "slow.example",
        "the first event has the name"
    );
    assert_eq!(counters.snapshot().resolve_timeouts, 0);
}
