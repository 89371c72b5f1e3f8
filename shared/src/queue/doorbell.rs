//! Wakes the uplink when any ring of its destination gets data: a futex word in a small file.
//!
//! Producers (ingest workers, any number, each with its own mapping of the file) call
//! [`Doorbell::ring`] after publishing; the one waiter (the uplink's dispatcher thread)
//! drains every ring, then sleeps in [`Doorbell::wait`]. Ringing costs a fence and a load
//! while the uplink is busy; the `FUTEX_WAKE` syscall happens only when it said it sleeps.
//!
//! ```text
//! struct DoorbellFile {          // changing a field means a new version
//!     magic:    [u8; 8],  //   0  b"SKFBELL\0"
//!     version:  u32,      //   8  1; the ready word, stored last (Release)
//!     _pad:     [u8; 52], //  12
//!     word:     u32,      //  64  futex word, +1 per wake-up (atomic)
//!     _pad:     [u8; 60], //  68
//!     sleeping: u32,      // 128  1 while the waiter is between prepare and wake (atomic)
//!     _pad:     [u8; ..], // 132  up to 4096
//! }
//! ```
//!
//! No lost wake-ups with [`Doorbell::prepare_wait`]: the waiter stores `sleeping = 1`, issues
//! a SeqCst fence, reads `word`, re-checks its rings, then `FUTEX_WAIT`s on that `word`
//! value. A producer stores `head` (Release), issues a SeqCst fence, and reads `sleeping`.
//! The two fences forbid both sides missing each other's store: either the waiter's
//! re-check sees the new head, or the producer sees `sleeping`, bumps `word` and wakes it
//! (a `FUTEX_WAIT` on a stale value returns at once). The plain [`Doorbell::wait`] re-checks
//! nothing, so a publish between the caller's last check and the call can be noticed only
//! at the timeout: lost wake-ups are bounded by it. Spurious wake-ups happen; callers loop.
//! With more than one concurrent waiter, a wake-up can also be late by up to the timeout.
//! The futex is not `FUTEX_PRIVATE`: waiter and wakers are different processes.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::queue::shared_file::{open_for_creation, SharedPage};
use crate::queue::sync::shm::{fence, AtomicU32};
use crate::queue::RingError;

const MAGIC: [u8; 8] = *b"SKFBELL\0";
const VERSION: u32 = 1;
const FILE_LEN: u64 = 4096;
const OFF_VERSION: usize = 8;
const OFF_WORD: usize = 64;
const OFF_SLEEPING: usize = 128;

/// A doorbell shared between the producers of one uplink's rings and that uplink.
/// Cloning is cheap (the mapping is shared).
#[derive(Clone)]
pub struct Doorbell {
    map: Arc<SharedPage>,
}

/// A prepared wait (see [`Doorbell::prepare_wait`]). Dropping it without waiting withdraws
/// the "sleeping" announcement.
#[must_use = "re-check the rings, then call wait_prepared"]
pub struct WaitTicket<'a> {
    bell: &'a Doorbell,
    word: u32,
}

impl Drop for WaitTicket<'_> {
    fn drop(&mut self) {
        self.bell.sleeping().store(0, Ordering::Relaxed);
    }
}

impl Doorbell {
    /// Creates the doorbell file (or opens a valid existing one).
    pub fn create_or_open(path: &Path) -> Result<Self, RingError> {
        let (file, _creating, len) = open_for_creation(path)?;
        let fresh = len == 0;
        if fresh {
            file.set_len(FILE_LEN)
                .map_err(|e| RingError::io("size doorbell file", path, e))?;
        } else if len != FILE_LEN {
            return Err(RingError::SizeMismatch {
                path: path.to_path_buf(),
                file_len: len,
                expected: FILE_LEN,
            });
        }
        let bell = Doorbell {
            map: Arc::new(SharedPage::map(&file, FILE_LEN, path)?),
        };
        let magic = bell.map.magic();
        // Pairs with the Release store below (in whichever process created the file).
        let version = bell.map.u32_at(OFF_VERSION).load(Ordering::Acquire);
        if version == 0 && magic == [0; 8] {
            bell.map.write_magic(MAGIC);
            // Pairs with the Acquire load above, in later openers.
            bell.map
                .u32_at(OFF_VERSION)
                .store(VERSION, Ordering::Release);
        } else if magic != MAGIC {
            return Err(RingError::BadMagic {
                path: path.to_path_buf(),
                what: "doorbell",
                found: magic,
            });
        } else if version != VERSION {
            let path = path.to_path_buf();
            return Err(RingError::UnsupportedVersion {
                path,
                found: version,
                supported: VERSION,
            });
        }
        Ok(bell)
    }

    fn word(&self) -> &AtomicU32 {
        self.map.u32_at(OFF_WORD)
    }

    fn sleeping(&self) -> &AtomicU32 {
        self.map.u32_at(OFF_SLEEPING)
    }

    /// Wakes the waiter if it sleeps (call after publishing). Cheap when it does not.
    pub fn ring(&self) {
        // Pairs with the SeqCst fence in `prepare_wait` (store-buffer pattern, see top).
        fence(Ordering::SeqCst);
        if self.sleeping().load(Ordering::Relaxed) == 0 {
            return;
        }
        // Only the first of several racing producers pays for the syscall.
        if self.sleeping().swap(0, Ordering::AcqRel) == 0 {
            return;
        }
        // Pairs with the Acquire load in `prepare_wait` / the kernel's compare in FUTEX_WAIT.
        self.word().fetch_add(1, Ordering::Release);
        futex_wake(self.word());
    }

    /// Announces that the caller is about to sleep. Re-check every ring after this, then call
    /// [`Doorbell::wait_prepared`] only if they are all empty.
    pub fn prepare_wait(&self) -> WaitTicket<'_> {
        self.sleeping().store(1, Ordering::Relaxed);
        // Pairs with the SeqCst fence in `ring`.
        fence(Ordering::SeqCst);
        // Pairs with the Release bump in `ring`.
        let word = self.word().load(Ordering::Acquire);
        WaitTicket { bell: self, word }
    }

    /// Sleeps until rung after `ticket` was prepared, or `timeout` passed (or spuriously).
    pub fn wait_prepared(&self, ticket: WaitTicket<'_>, timeout: Duration) {
        futex_wait(self.word(), ticket.word, timeout);
        drop(ticket);
    }

    /// Sleeps until rung or `timeout` passed (or spuriously). A ring that happened after the
    /// caller's last look at its rings but before this call is only noticed at the timeout;
    /// use `prepare_wait` + `wait_prepared` to close that window.
    pub fn wait(&self, timeout: Duration) {
        let ticket = self.prepare_wait();
        self.wait_prepared(ticket, timeout);
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, 4-aligned u32 in a shared mapping; FUTEX_WAIT only reads it
    // and compares with `expected`; `ts` (a relative timeout) is valid for the call. Any
    // outcome (woken, EAGAIN because the word moved, ETIMEDOUT, EINTR) just returns.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, 4-aligned u32 in a shared mapping; FUTEX_WAKE does not touch
    // memory, it wakes waiters keyed on the word's (file, offset).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn bell_pair() -> (tempfile::TempDir, Doorbell, Doorbell) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bell");
        let a = Doorbell::create_or_open(&path).unwrap();
        let b = Doorbell::create_or_open(&path).unwrap(); // a second, independent mapping
        (dir, a, b)
    }

    #[test]
    fn wait_times_out_when_nobody_rings() {
        let (_d, a, _b) = bell_pair();
        let t = Instant::now();
        a.wait(Duration::from_millis(50));
        assert!(t.elapsed() >= Duration::from_millis(45));
    }

    #[test]
    fn ring_through_another_mapping_wakes_a_sleeping_waiter() {
        let (_d, waiter, producer) = bell_pair();
        let t = Instant::now();
        let h = std::thread::spawn(move || {
            waiter.wait(Duration::from_secs(10));
            t.elapsed()
        });
        while producer.sleeping().load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        producer.ring();
        assert!(h.join().unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn ring_between_prepare_and_wait_is_not_lost() {
        let (_d, waiter, producer) = bell_pair();
        let ticket = waiter.prepare_wait();
        producer.ring();
        let t = Instant::now();
        waiter.wait_prepared(ticket, Duration::from_secs(10));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn ring_without_sleeper_does_not_touch_the_word() {
        let (_d, a, b) = bell_pair();
        b.ring();
        assert_eq!(a.word().load(Ordering::SeqCst), 0);
        drop(a.prepare_wait()); // a dropped ticket withdraws the announcement
        b.ring();
        assert_eq!(a.word().load(Ordering::SeqCst), 0);
    }

    #[test]
    fn open_rejects_a_file_that_is_not_a_doorbell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bell");
        std::fs::write(&path, vec![b'x'; FILE_LEN as usize]).unwrap();
        let e = Doorbell::create_or_open(&path).err().unwrap();
        assert!(
            e.to_string()
                .contains("not a sekoia-forwarder doorbell file"),
            "{e}"
        );
        std::fs::write(&path, b"short").unwrap();
        let e = Doorbell::create_or_open(&path).err().unwrap();
        assert!(matches!(e, RingError::SizeMismatch { .. }), "{e}");
    }
}
