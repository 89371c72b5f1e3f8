//! Process logs: structured `tracing` output on stderr, tagged with the process role.
//!
//! stdout is reserved for what the reference image printed there (the start-up banner and the
//! `debug: true` event lines), so operators' `docker logs` greps keep working.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(role: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
    tracing::debug!(role, pid = std::process::id(), "logging ready");
}
