//! What every worker process runs on: a single-threaded tokio runtime and the SIGTERM that
//! asks it to stop (the supervisor's only way of stopping a worker in order).
//!
//! One thread per worker, not a work-stealing pool: each worker's tasks share one queue (the
//! ingest worker's connections all push into one ring behind one lock; the uplink's
//! connections are fed by one dispatcher), so a second thread bought no throughput, only
//! cross-thread wakeups: at 10,000 events/s the two-thread runtimes spent about 40 % of the
//! process's CPU waking each other (docs/performance.md). Parallelism comes from processes:
//! one ingest worker per intake, the uplink and its dispatcher thread beside them.

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// The worker's event loop: every task runs on the calling thread.
pub fn runtime(role: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the {role} event loop"))
}

/// A flag that turns true at SIGTERM. Call it inside the runtime.
pub fn stop_on_sigterm() -> Result<watch::Receiver<bool>> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        term.recv().await;
        let _ = stop_tx.send(true);
    });
    Ok(stop_rx)
}
