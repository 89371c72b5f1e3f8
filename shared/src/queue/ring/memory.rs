//! The seam between the ring's index protocol and the memory it runs on.
//!
//! [`super::producer::ProducerCore`] and [`super::consumer::ConsumerCore`] implement the
//! protocol once, against this trait. Production uses [`super::layout::MappedRing`] (a file
//! mapped `MAP_SHARED`, shared with another process); the loom model uses an in-process ring
//! whose atomics and cells are loom's, so loom checks the exact code that runs in the workers.
//!
//! The protocol, in one paragraph: the producer owns the bytes in `head..committed + cap`
//! (free space, as positions), the consumer owns `committed..head` (published, not yet
//! freed). The producer writes records into its part, then moves `head` forward with a
//! Release store; the consumer observes `head` with an Acquire load before reading bytes
//! below it. The consumer moves `committed` forward with a Release store after it finished
//! reading; the producer observes it with an Acquire load before overwriting. Offsets in the
//! data area are `position % capacity`.

use crate::queue::sync::Ordering;

/// Storage of one ring: two indices, the producer's sequence counter and the data area.
pub(crate) trait RingMemory {
    /// Bytes in the data area (multiple of 8).
    fn capacity(&self) -> u64;
    /// Intake id recorded at creation (written into PAD headers).
    fn intake_id(&self) -> u16;
    fn load_head(&self, order: Ordering) -> u64;
    fn store_head(&self, value: u64, order: Ordering);
    fn load_committed(&self, order: Ordering) -> u64;
    fn store_committed(&self, value: u64, order: Ordering);
    /// Sequence number of the next DATA record (only the producer uses it; Relaxed).
    fn load_next_seq(&self) -> u64;
    fn store_next_seq(&self, value: u64);
    /// Sequence number of the first record not yet committed (the consumer stores it before
    /// `committed`, Relaxed; the producer loads it after an Acquire load of `committed`). It
    /// lets the producer bound the ring by record count. Memories without it count nothing.
    fn load_committed_seq(&self) -> u64 {
        0
    }
    fn store_committed_seq(&self, _value: u64) {}

    /// Copies `src` into the data area at `offset`.
    ///
    /// # Safety
    /// `offset + src.len() <= capacity()`, and the bytes belong to the caller under the
    /// protocol above: only the single producer calls this, only on free space (positions at
    /// or after `head`, before `committed + capacity`, with `committed` loaded Acquire).
    unsafe fn write(&self, offset: u64, src: &[u8]);

    /// Faults in, writable, the pages of `offset..offset + len` of the data area before the
    /// producer writes them: one system call for many pages instead of a page fault each
    /// (pages given back by [`RingMemory::release`] come back this way, once per lap). It
    /// changes no byte, so it needs no ownership; best effort, a no-op where unsupported.
    fn prefault(&self, _offset: u64, _len: u64) {}

    /// Whether [`RingMemory::release`] can give memory back (a file-backed mapping that
    /// supports hole punching). Memories that cannot (loom's) keep every page.
    fn can_release(&self) -> bool {
        false
    }

    /// Gives the memory of the whole pages inside `offset..offset + len` of the data area back
    /// to the system (their bytes read as zero afterwards and cost no RAM until written
    /// again). Partial pages at either end are left alone. Best effort: failures are logged.
    ///
    /// # Safety
    /// `offset + len <= capacity()`, and the bytes are the caller's under the protocol above,
    /// exactly as for [`RingMemory::write`]: only the single producer calls this, only on free
    /// space (positions after its `head`, before `committed + capacity` with `committed`
    /// loaded Acquire). Zeroing them is a write.
    unsafe fn release(&self, _offset: u64, _len: u64) {}

    /// Copies bytes at `offset` of the data area into `dst`.
    ///
    /// # Safety
    /// `offset + dst.len() <= capacity()`, and only the single consumer calls this, only on
    /// published bytes (positions before a `head` it loaded Acquire, at or after the
    /// `committed` it last stored).
    unsafe fn read(&self, offset: u64, dst: &mut [u8]);
}

impl<T: RingMemory + ?Sized> RingMemory for std::sync::Arc<T> {
    fn capacity(&self) -> u64 {
        (**self).capacity()
    }
    fn intake_id(&self) -> u16 {
        (**self).intake_id()
    }
    fn load_head(&self, order: Ordering) -> u64 {
        (**self).load_head(order)
    }
    fn store_head(&self, value: u64, order: Ordering) {
        (**self).store_head(value, order)
    }
    fn load_committed(&self, order: Ordering) -> u64 {
        (**self).load_committed(order)
    }
    fn store_committed(&self, value: u64, order: Ordering) {
        (**self).store_committed(value, order)
    }
    fn load_next_seq(&self) -> u64 {
        (**self).load_next_seq()
    }
    fn store_next_seq(&self, value: u64) {
        (**self).store_next_seq(value)
    }
    fn load_committed_seq(&self) -> u64 {
        (**self).load_committed_seq()
    }
    fn store_committed_seq(&self, value: u64) {
        (**self).store_committed_seq(value)
    }
    unsafe fn write(&self, offset: u64, src: &[u8]) {
        // SAFETY: forwarded unchanged; the caller upholds the same contract.
        unsafe { (**self).write(offset, src) }
    }
    unsafe fn read(&self, offset: u64, dst: &mut [u8]) {
        // SAFETY: forwarded unchanged; the caller upholds the same contract.
        unsafe { (**self).read(offset, dst) }
    }
    fn prefault(&self, offset: u64, len: u64) {
        (**self).prefault(offset, len)
    }
    fn can_release(&self) -> bool {
        (**self).can_release()
    }
    unsafe fn release(&self, offset: u64, len: u64) {
        // SAFETY: forwarded unchanged; the caller upholds the same contract.
        unsafe { (**self).release(offset, len) }
    }
}

/// Checks the indices found in a ring (after a crash they come from another process's
/// lifetime): aligned, `committed <= head <= committed + capacity`.
pub(crate) fn check_indices(head: u64, committed: u64, capacity: u64) -> Result<(), String> {
    if !head.is_multiple_of(8) || !committed.is_multiple_of(8) {
        return Err(format!(
            "head {head} or committed {committed} is not 8-byte aligned"
        ));
    }
    if committed > head {
        return Err(format!("committed {committed} is ahead of head {head}"));
    }
    if head - committed > capacity {
        return Err(format!(
            "head {head} is more than the capacity {capacity} ahead of committed {committed}"
        ));
    }
    Ok(())
}
