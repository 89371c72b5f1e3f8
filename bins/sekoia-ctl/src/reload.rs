//! `sekoia-ctl reload`: the same as SIGHUP, with the outcome printed: what changed, or every
//! problem of a rejected configuration (then nothing changed).

use std::process::ExitCode;

use sekoia_shared::control::client::{self, ClientError};
use sekoia_shared::control::{Command as Ask, ReloadOutcome, Request, ResponseBody};

use crate::ANSWER_TIMEOUT;

/// Exit status of a reload whose configuration was rejected (as `check`'s).
const EXIT_REJECTED: u8 = 3;

pub fn run(socket: &std::path::Path) -> ExitCode {
    let outcome = match client::request(socket, &Request::new(Ask::Reload), ANSWER_TIMEOUT) {
        Ok(response) => match response.body {
            ResponseBody::Reload(outcome) => outcome,
            ResponseBody::Error { message } => return crate::fail(&ClientError::Refused(message)),
            ResponseBody::Status(_) => {
                return crate::fail(&"the forwarder answered another request")
            }
        },
        Err(e) => return crate::fail(&e),
    };
    if !outcome.applied {
        eprintln!("reload rejected; the running configuration stays:");
        for problem in &outcome.problems {
            eprintln!("{problem}");
        }
        return ExitCode::from(EXIT_REJECTED);
    }
    println!("{}", summary(&outcome));
    ExitCode::SUCCESS
}

/// One line per kind of change of a reload that was applied.
fn summary(outcome: &ReloadOutcome) -> String {
    let mut lines = vec![format!(
        "configuration reloaded: {} added, {} changed, {} removed, {} unchanged",
        outcome.added.len(),
        outcome.changed.len(),
        outcome.removed.len(),
        outcome.unchanged
    )];
    let list = |names: &[String]| names.join(", ");
    if !outcome.added.is_empty() {
        lines.push(format!("  added:   {}", list(&outcome.added)));
    }
    if !outcome.changed.is_empty() {
        lines.push(format!(
            "  changed: {} (worker restarted; its port stayed open)",
            list(&outcome.changed)
        ));
    }
    if !outcome.removed.is_empty() {
        lines.push(format!(
            "  removed: {} (port closed; queued events are still delivered)",
            list(&outcome.removed)
        ));
    }
    for (what, destinations) in [
        ("uplink started", &outcome.uplinks_started),
        (
            "uplink restarted (its queues changed)",
            &outcome.uplinks_restarted,
        ),
        (
            "uplink stopped (no intake goes there any more)",
            &outcome.uplinks_stopped,
        ),
    ] {
        for destination in destinations {
            lines.push(format!("  {what}: {destination}"));
        }
    }
    lines.join("\n")
}
