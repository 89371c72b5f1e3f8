//! TLS client configuration for the uplink: rustls with the ring provider, TLS 1.2 and 1.3 only,
//! server certificate verified against the destination host name (SNI sent) with the system
//! roots plus an optional extra PEM CA file (`SEKOIA_CA_FILE`).
//!
//! Built once per [`crate::uplink::Uplink::run`]; every connection of the pool shares it. A CA
//! file that cannot be read or holds no certificate is a configuration error (returned, not
//! retried); an unreadable system store is only logged, as long as some root remains.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tracing::{debug, warn};

use crate::uplink::UplinkError;

/// Client configuration trusting the system roots and, if given, the certificates of `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, UplinkError> {
    let mut roots = RootCertStore::empty();

    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        warn!(error = %error, "could not load some system root certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(added, ignored, "system root certificates loaded");

    if let Some(path) = ca_file {
        let added = add_pem_file(&mut roots, path)?;
        debug!(path = %path.display(), added, "extra CA certificates loaded");
    }
    if roots.is_empty() {
        return Err(UplinkError::NoRootCertificates);
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(UplinkError::TlsSetup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name sent as SNI and checked against the server certificate (a DNS name or an IP).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, UplinkError> {
    ServerName::try_from(host.to_owned()).map_err(|e| UplinkError::ServerName {
        host: host.to_owned(),
        reason: e.to_string(),
    })
}

/// Add every certificate of a PEM file; returns how many were accepted.
fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, UplinkError> {
    let ca_error = |source| UplinkError::CaFile {
        path: path.to_owned(),
        source,
    };
    let pem = std::fs::read(path).map_err(ca_error)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(UplinkError::CaFileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn ca_file_with_a_certificate_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, test_ca_pem()).unwrap();
        assert!(client_config(Some(&path)).is_ok());
    }

    #[test]
    fn missing_ca_file_is_an_error_naming_the_path() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(err, UplinkError::CaFile { .. }));
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn ca_file_without_certificates_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(Some(&path)).unwrap_err();
        assert!(matches!(err, UplinkError::CaFileEmpty { .. }), "{err}");
    }

    #[test]
    fn server_name_accepts_dns_names_and_ips_but_not_garbage() {
        assert!(server_name("intake.sekoia.io").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        let err = server_name("bad host!").unwrap_err();
        assert!(err.to_string().contains("bad host!"), "{err}");
    }
}
