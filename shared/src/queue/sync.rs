//! Every atomic the queue uses comes through this module, so that `--cfg loom` can swap them.
//!
//! Two families:
//! - the top level (`AtomicU64`, `fence`, ...) is loom's under `cfg(loom)` and std's otherwise.
//!   The ring's index protocol is written against [`crate::queue::ring::RingMemory`], and the
//!   in-process implementation of that trait (used by the loom model) takes its atomics from
//!   here, so loom explores the very same producer/consumer code the workers run.
//! - [`shm`] is always std's: atomics that live *inside a shared mapping* must have the
//!   hardware layout of a `u64`/`u32`, which loom's tracked atomics do not have. Loom cannot
//!   model another process anyway; what it checks is the protocol, through the first family.
//!
//! `Ordering` is the same type in both families (loom re-exports std's).

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Atomics placed in `MAP_SHARED` memory (ring header, doorbell word). Always the real ones.
pub(crate) mod shm {
    pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};
}
