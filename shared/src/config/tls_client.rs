//! How a tls intake handshakes: whether it verifies clients, how many handshakes may be in
//! progress at once, and how long one may take. Plus the warnings an operator needs about a
//! tls intake's files (a key others can read, a CA that verifies nobody).
//!
//! Fields (tls intakes only; on other protocols they are ignored with a warning, like the
//! other `tls_*` fields):
//! - `tls_client_auth: none | optional | required` (default `none`, as the reference):
//!   `required` refuses a client without a certificate signed by the `tls_ca_name` CA;
//!   `optional` accepts a client without a certificate but refuses one with a certificate
//!   the CA did not sign. Anything but `none` needs `tls_ca_name`: a problem otherwise.
//! - `tls_max_handshakes` (default [`DEFAULT_MAX_HANDSHAKES`], at least 1): handshakes in
//!   progress at once; a connection whose first byte comes when all are taken is closed and
//!   counted.
//! - `tls_handshake_timeout` (whole seconds, 1..=[`MAX_HANDSHAKE_TIMEOUT_SECS`], default
//!   [`DEFAULT_HANDSHAKE_TIMEOUT_SECS`]): counted from the client's first byte, not from
//!   accept, so a client that connects early and speaks late is not cut off.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::config::entry::Report;
use crate::config::yaml11::{describe, text, whole_number};

/// Default number of TLS handshakes in progress per intake.
pub const DEFAULT_MAX_HANDSHAKES: u32 = 512;
/// Default TLS handshake timeout, from the client's first byte.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Longest handshake timeout accepted.
pub const MAX_HANDSHAKE_TIMEOUT_SECS: u64 = 3_600;

/// Whether a tls intake asks its clients for a certificate (`tls_client_auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientAuth {
    /// No client certificate asked (the reference's behaviour).
    #[default]
    None,
    /// Asked; a client without one is accepted, one with a certificate the CA did not sign
    /// is refused.
    Optional,
    /// Every client must present a certificate signed by the CA.
    Required,
}

impl ClientAuth {
    fn parse(text: &str) -> Option<ClientAuth> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Some(ClientAuth::None),
            "optional" => Some(ClientAuth::Optional),
            "required" => Some(ClientAuth::Required),
            _ => None,
        }
    }
}

/// How a tls intake handshakes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsHandshake {
    pub client_auth: ClientAuth,
    pub max_in_progress: u32,
    pub timeout_secs: u64,
}

impl Default for TlsHandshake {
    fn default() -> Self {
        Self {
            client_auth: ClientAuth::None,
            max_in_progress: DEFAULT_MAX_HANDSHAKES,
            timeout_secs: DEFAULT_HANDSHAKE_TIMEOUT_SECS,
        }
    }
}

/// Reads the handshake fields of a tls intake and warns about its key file's permissions.
pub(crate) fn read(
    fields: &HashMap<&str, &Value>,
    file: &Path,
    label: &str,
    key: &Path,
    report: &mut Report<'_>,
) -> TlsHandshake {
    let mut handshake = TlsHandshake {
        client_auth: client_auth(fields, file, label, report),
        ..TlsHandshake::default()
    };
    let ca_named = fields.contains_key("tls_ca_name");
    match (handshake.client_auth, ca_named) {
        (ClientAuth::None, true) => report.warning(
            file,
            label,
            "tls_ca_name",
            "verifies no client: clients are not asked for a certificate while \
             `tls_client_auth` is none"
                .to_string(),
            "add `tls_client_auth: required` (or `optional`) to verify clients against this CA, \
             or remove `tls_ca_name`"
                .to_string(),
        ),
        (ClientAuth::Optional | ClientAuth::Required, false) => report.problem(
            file,
            label,
            "tls_client_auth",
            "verifying clients needs a CA, and `tls_ca_name` is not set".to_string(),
            "add `tls_ca_name: NAME` naming the CA certificate file in CERTS_DIR that signed \
             the clients' certificates, or set `tls_client_auth: none`",
        ),
        _ => {}
    }
    let max = bounded(
        fields,
        "tls_max_handshakes",
        1..=u64::from(u32::MAX),
        file,
        label,
        report,
    );
    if let Some(max) = max.and_then(|n| u32::try_from(n).ok()) {
        handshake.max_in_progress = max;
    }
    let range = 1..=MAX_HANDSHAKE_TIMEOUT_SECS;
    if let Some(secs) = bounded(fields, "tls_handshake_timeout", range, file, label, report) {
        handshake.timeout_secs = secs;
    }
    if let Some(what) = key_exposure(key) {
        let fix = format!(
            "run `chmod 600 {}` (and keep it owned by the forwarder's user)",
            key.display()
        );
        report.warning(file, label, "tls_key_name", what, fix);
    }
    handshake
}

fn client_auth(
    fields: &HashMap<&str, &Value>,
    file: &Path,
    label: &str,
    report: &mut Report<'_>,
) -> ClientAuth {
    const FIX: &str = "use none, optional or required";
    match fields.get("tls_client_auth").map(|v| text(v, false)) {
        None => ClientAuth::None,
        Some(Ok(word)) => ClientAuth::parse(&word).unwrap_or_else(|| {
            let what = format!("{} is not a known value", describe(&Value::String(word)));
            report.problem(file, label, "tls_client_auth", what, FIX);
            ClientAuth::None
        }),
        Some(Err(what)) => {
            report.problem(file, label, "tls_client_auth", what, FIX);
            ClientAuth::None
        }
    }
}

/// A whole number in `range`, or `None` (absent, or reported).
fn bounded(
    fields: &HashMap<&str, &Value>,
    field: &str,
    range: std::ops::RangeInclusive<u64>,
    file: &Path,
    label: &str,
    report: &mut Report<'_>,
) -> Option<u64> {
    let fix = format!(
        "use a whole number from {} to {}, or remove it for the default",
        range.start(),
        range.end()
    );
    match fields.get(field).map(|v| whole_number(v)) {
        None => None,
        Some(Ok(n)) if range.contains(&n) => Some(n),
        Some(Ok(n)) => {
            report.problem(file, label, field, format!("{n} is out of range"), &fix);
            None
        }
        Some(Err(what)) => {
            report.problem(file, label, field, what, &fix);
            None
        }
    }
}

/// What is wrong when the key file can be read or changed by its group or others.
pub(crate) fn key_exposure(key: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "the private key file {} can be read or changed by its group or others (mode {mode:04o})",
            key.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_exposure_names_the_file_and_mode_and_accepts_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("server.key");
        std::fs::write(&key, "k").expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let what = key_exposure(&key).expect("a warning");
        assert!(
            what.contains("server.key") && what.contains("0640"),
            "{what}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(key_exposure(&key), None);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert_eq!(key_exposure(&key), None);
    }

    #[test]
    fn client_auth_words_in_any_case() {
        assert_eq!(ClientAuth::parse("Required"), Some(ClientAuth::Required));
        assert_eq!(ClientAuth::parse(" optional "), Some(ClientAuth::Optional));
        assert_eq!(ClientAuth::parse("NONE"), Some(ClientAuth::None));
        assert_eq!(ClientAuth::parse("yes"), None);
    }
}
