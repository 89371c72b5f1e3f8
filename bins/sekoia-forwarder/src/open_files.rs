//! The open-file limit: every TCP/TLS connection is a file descriptor in its ingest worker,
//! and the soft limit many systems start services with (1024) would refuse senders long
//! before memory runs short. At start the supervisor raises its soft `RLIMIT_NOFILE` to the
//! hard limit; the workers it starts inherit it. Both values are logged, before and after.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tracing::{info, warn};

/// Raises the soft open-file limit to the hard one (never fails the start: it logs).
pub fn raise_to_hard_limit() {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit (RLIMIT_NOFILE)");
            return;
        }
    };
    if soft >= hard {
        info!(
            soft,
            hard, "open-file limit (RLIMIT_NOFILE) already at the hard limit"
        );
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => info!(
            soft_before = soft,
            soft = hard,
            hard,
            "open-file limit (RLIMIT_NOFILE) raised to the hard limit"
        ),
        Err(e) => {
            warn!(soft, hard, error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE); connections beyond the soft limit will be refused by the system")
        }
    }
}
