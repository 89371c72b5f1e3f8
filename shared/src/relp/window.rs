//! Transaction numbers and the window of commands sent but not yet answered.
//!
//! Txnrs run 1, 2, … 999,999,999, then 1 again; `open` takes the first. The [`Window`] keeps,
//! in send order, every txnr that waits for its `rsp`, at most `capacity` of them. Answers may
//! come in any order (the spec allows it; librelp answers in order); what matters to the
//! sender is how many commands, counted from the start of the session, are answered with no
//! gap before them: [`Window::answered_through`]. A batch of events is delivered once that
//! count passes its last command. An answer for a txnr that is not waiting (unknown, or
//! answered twice) is a protocol error.

use std::collections::VecDeque;

/// Largest txnr; the next one is 1.
pub const MAX_TXNR: u32 = 999_999_999;

/// The txnr of the next command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Txnr(u32);

impl Default for Txnr {
    fn default() -> Self {
        Self(1)
    }
}

impl Txnr {
    /// A fresh session: the first command (`open`) is txnr 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take the current txnr and move to the next one.
    pub fn take(&mut self) -> u32 {
        let current = self.0;
        self.0 = if current >= MAX_TXNR { 1 } else { current + 1 };
        current
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("answer for txnr {0}, which no command is waiting for")]
    Unknown(u32),
    #[error("second answer for txnr {0}")]
    Duplicate(u32),
}

/// Commands sent and not yet answered, oldest first.
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    waiting: VecDeque<(u32, bool)>,
    /// Commands answered with no unanswered one before them, since the session started.
    answered_through: u64,
    sent: u64,
}

impl Window {
    /// At most `capacity` (at least 1) unanswered commands.
    pub fn new(capacity: u32) -> Self {
        let capacity = capacity.max(1) as usize;
        Self {
            capacity,
            waiting: VecDeque::with_capacity(capacity),
            answered_through: 0,
            sent: 0,
        }
    }

    /// Commands that may still be sent before the window is full.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.waiting.len())
    }

    /// Commands waiting for their answer.
    pub fn in_use(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Record that the command `txnr` was sent; returns its rank in the session (1, 2, …).
    /// The caller checks [`Window::room`] first.
    pub fn sent(&mut self, txnr: u32) -> u64 {
        self.waiting.push_back((txnr, false));
        self.sent += 1;
        self.sent
    }

    /// The answer for `txnr` arrived. Returns [`Window::answered_through`] afterwards.
    pub fn answered(&mut self, txnr: u32) -> Result<u64, WindowError> {
        let Some(&(first, _)) = self.waiting.front() else {
            return Err(WindowError::Unknown(txnr));
        };
        if txnr == 0 || txnr > MAX_TXNR {
            return Err(WindowError::Unknown(txnr));
        }
        // Distance from the oldest waiting txnr, across the wrap from MAX_TXNR to 1.
        let offset = ((txnr + MAX_TXNR - first) % MAX_TXNR) as usize;
        match self.waiting.get_mut(offset) {
            Some((t, answered)) if *t == txnr => {
                if *answered {
                    return Err(WindowError::Duplicate(txnr));
                }
                *answered = true;
            }
            _ => return Err(WindowError::Unknown(txnr)),
        }
        while self.waiting.front().is_some_and(|(_, answered)| *answered) {
            self.waiting.pop_front();
            self.answered_through += 1;
        }
        Ok(self.answered_through)
    }

    /// How many commands of this session are answered, with none unanswered before them.
    pub fn answered_through(&self) -> u64 {
        self.answered_through
    }
}

#[cfg(test)]
mod tests;
