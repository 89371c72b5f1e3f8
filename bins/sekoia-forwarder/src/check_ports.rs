//! `check`: can every intake's port be bound here? Each one is bound exactly as the
//! supervisor binds it (`supervisor::bind`: every address, same socket options) and released
//! at once. A port held by anything, a forwarder already running with this configuration
//! included, is reported as taken: the start would fail on it.
//!
//! A port the current user may not bind (below 1024 without root or `CAP_NET_BIND_SERVICE`)
//! is a warning, not a problem: `check` is often run by hand as another user than the
//! service.

use std::io::ErrorKind;

use sekoia_shared::config::{Intake, Problem, Protocol};

use crate::supervisor;

/// What binding each intake's port found: problems (taken, other errors) and warnings.
#[derive(Debug, Default)]
pub struct PortFindings {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// Binds and releases every intake's port in turn.
pub fn probe(intakes: &[Intake]) -> PortFindings {
    let mut found = PortFindings::default();
    for intake in intakes {
        // The socket is closed as soon as it is dropped, here.
        let Err(e) = supervisor::bind(intake) else {
            continue;
        };
        let at = |what: String, fix: String| {
            Problem::in_entry(&intake.source, &intake.name, Some("port"), what, fix)
        };
        let port = format!("{} port {}", space(intake.protocol), intake.port);
        match e.kind() {
            ErrorKind::AddrInUse => found.problems.push(at(
                format!(
                    "{port} is already in use on this host: another program holds it, or a \
                     sekoia-forwarder with this configuration is already running"
                ),
                format!(
                    "stop what holds it (`{}` names the process) or give this intake another port",
                    ss_command(intake)
                ),
            )),
            ErrorKind::PermissionDenied => found.warnings.push(at(
                format!("{port} cannot be bound by the user running `check`: {e}"),
                "start the forwarder as root (it can then run its workers as --user) or with \
                 CAP_NET_BIND_SERVICE, or use a port above 1023"
                    .to_string(),
            )),
            _ => found.problems.push(at(
                format!("{port} cannot be bound: {e}"),
                "give this intake a port that can be bound on this host".to_string(),
            )),
        }
    }
    found
}

/// How the port space reads to an operator: tls is a TCP port.
fn space(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Tls => "TCP (tls)",
        Protocol::Udp => "UDP",
    }
}

fn ss_command(intake: &Intake) -> String {
    let flags = if intake.protocol.is_stream() {
        "-ltnp"
    } else {
        "-lunp"
    };
    format!("ss {flags} 'sport = :{}'", intake.port)
}
