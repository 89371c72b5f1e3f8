//! What every worker process runs on: a small multi-threaded tokio runtime and the SIGTERM
//! that asks it to stop (the supervisor's only way of stopping a worker in order).

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Two threads: the machines we target have few cores and run one worker per intake.
pub fn runtime(role: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
