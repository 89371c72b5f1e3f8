//! Library of the sekoia-forwarder: everything the supervisor and its worker processes share.
//!
//! The data path reads in folder order: `input` (listeners, RFC 6587 framing) → `syslog`
//! (sanitise, parse, render the output line) → `queue` (shared-memory ring per intake) →
//! `uplink` (TLS connection pool to the Sekoia intake). `config` reads `intakes.yaml`, the
//! environment and the flags, and validates them before anything is bound.
#![deny(unsafe_op_in_unsafe_fn)]

// Under `--cfg loom` only the ring is built: loom replaces its atomics, and tokio's
// networking is not available in loom builds.
#[cfg(not(loom))]
pub mod config;
#[cfg(not(loom))]
pub mod control;
#[cfg(not(loom))]
pub mod input;
pub mod log_limit;
pub mod queue;
pub mod relp;
#[cfg(not(loom))]
pub mod stats;
#[cfg(not(loom))]
pub mod syslog;
#[cfg(not(loom))]
pub mod uplink;
