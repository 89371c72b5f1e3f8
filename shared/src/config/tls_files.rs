//! Locating a tls intake's key, certificate and CA under `CERTS_DIR`.
//!
//! Names are accepted with or without their suffix: `tls_key_name: server` and
//! `tls_key_name: server.key` both find `CERTS_DIR/server.key` (the reference always
//! appended `.key`/`.crt`). For a name without the suffix, `NAME.key` is tried first, then
//! `NAME` as written. Defaults: `server.key`, `server.crt`, and `server.crt` for the CA.
//!
//! The key and certificate must exist and be readable (their PEM content is checked later by
//! the input module when it builds the TLS server). The CA is checked only when
//! `tls_ca_name` is given: only a named CA verifies clients (with `tls_client_auth`, see
//! `tls_client.rs`), so a missing default CA changes nothing and must not stop a setup that
//! the reference accepted.

use std::path::{Path, PathBuf};

/// One of the three files of a tls intake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsFileKind {
    pub field: &'static str,
    pub suffix: &'static str,
    pub default: &'static str,
    pub what: &'static str,
}

pub(crate) const KEY: TlsFileKind = TlsFileKind {
    field: "tls_key_name",
    suffix: ".key",
    default: "server.key",
    what: "private key",
};
pub(crate) const CERT: TlsFileKind = TlsFileKind {
    field: "tls_cert_name",
    suffix: ".crt",
    default: "server.crt",
    what: "certificate",
};
pub(crate) const CA: TlsFileKind = TlsFileKind {
    field: "tls_ca_name",
    suffix: ".crt",
    default: "server.crt",
    what: "CA certificate",
};

/// Where the file is, and what is wrong with it if it must be checked and is not usable.
pub(crate) fn locate(
    certs_dir: &Path,
    kind: TlsFileKind,
    name: Option<&str>,
) -> (PathBuf, Option<String>) {
    let explicit = name.is_some();
    let name = name.unwrap_or(kind.default);
    let with_suffix = if name.ends_with(kind.suffix) {
        certs_dir.join(name)
    } else {
        certs_dir.join(format!("{name}{}", kind.suffix))
    };
    let candidates = [with_suffix.clone(), certs_dir.join(name)];
    let found = candidates.iter().find(|p| p.exists()).cloned();
    let must_check = explicit || kind.field != CA.field;
    match found {
        Some(path) => {
            let problem = if must_check {
                readable(&path).err()
            } else {
                None
            };
            (path, problem)
        }
        None => {
            let problem = must_check.then(|| {
                let origin = if explicit { "" } else { "default " };
                format!(
                    "the {origin}{} file {} does not exist",
                    kind.what,
                    with_suffix.display()
                )
            });
            (with_suffix, problem)
        }
    }
}

fn readable(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| format!("{} cannot be read: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_with_or_without_suffix_finds_the_same_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("edge.key"), "k").expect("write");
        let (a, pa) = locate(dir.path(), KEY, Some("edge"));
        let (b, pb) = locate(dir.path(), KEY, Some("edge.key"));
        assert_eq!(a, dir.path().join("edge.key"));
        assert_eq!(a, b);
        assert!(pa.is_none() && pb.is_none());
    }

    #[test]
    fn name_with_another_extension_is_found_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("edge.pem"), "k").expect("write");
        let (path, problem) = locate(dir.path(), CERT, Some("edge.pem"));
        assert_eq!(path, dir.path().join("edge.pem"));
        assert!(problem.is_none());
    }

    #[test]
    fn missing_default_key_is_a_problem_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, problem) = locate(dir.path(), KEY, None);
        assert_eq!(path, dir.path().join("server.key"));
        let problem = problem.expect("a problem");
        assert!(problem.contains("default private key file"), "{problem}");
        assert!(problem.contains("server.key"), "{problem}");
    }

    #[test]
    fn missing_default_ca_is_accepted_but_a_named_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, problem) = locate(dir.path(), CA, None);
        assert_eq!(path, dir.path().join("server.crt"));
        assert!(problem.is_none());
        let (_, problem) = locate(dir.path(), CA, Some("ca"));
        assert!(problem
            .expect("a problem")
            .contains("ca.crt does not exist"));
    }

    #[test]
    fn directory_in_place_of_a_file_is_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("server.crt")).expect("mkdir");
        let (_, problem) = locate(dir.path(), CERT, None);
        assert!(problem.expect("a problem").contains("is not a file"));
    }
}
