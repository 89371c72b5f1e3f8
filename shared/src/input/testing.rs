//! Test support: a [`MessageSink`] that records what it accepts and can play a full queue,
//! and [`wait_for`], a wait on a condition with a deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Frame, MessageSink};

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
