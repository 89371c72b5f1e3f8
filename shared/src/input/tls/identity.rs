//! The server side of a tls intake from its files: certificate chain and private key (PEM:
//! PKCS#1 RSA, PKCS#8, or SEC1 EC), and, when `tls_client_auth` asks for it, the CA that
//! client certificates must chain to. TLS 1.2 and 1.3 only, ring provider. Every failure
//! names the file and what is wrong with it.
//!
//! PEM is read with `rustls-pki-types` (`PemObject`), not the unmaintained `rustls-pemfile`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{danger::ClientCertVerifier, WebPkiClientVerifier};
use rustls::RootCertStore;

use crate::config::{ClientAuth, TlsFiles};
use crate::input::InputError;

/// Builds the server TLS configuration of a tls intake.
pub fn load_server_tls(files: &TlsFiles) -> Result<rustls::ServerConfig, InputError> {
    let certs = read_certs("certificate", &files.cert)?;
    let private_key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = client_verifier(files, &provider)?;
    let rejected = |source| InputError::KeyRejected {
        key: files.key.clone(),
        cert: files.cert.clone(),
        source,
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, private_key)
        .map_err(rejected)
}

/// The verifier for `tls_client_auth`, or `None` when clients are not asked.
fn client_verifier(
    files: &TlsFiles,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, InputError> {
    let auth = files.handshake.client_auth;
    if auth == ClientAuth::None {
        return Ok(None);
    }
    let path = &files.ca;
    let bad_ca = |reason: String| InputError::ClientCa {
        path: path.to_path_buf(),
        reason,
    };
    let certs = read_certs("CA", path).map_err(|e| bad_ca(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad_ca(
            "none of its certificates can be used as a CA".to_string(),
        ));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        _ => builder,
    };
    builder.build().map(Some).map_err(|e| bad_ca(e.to_string()))
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, InputError> {
    std::fs::read(path).map_err(|source| InputError::ReadTlsFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, InputError> {
    let pem = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| InputError::BadPem {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(InputError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, InputError> {
    let pem = read_pem("key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => InputError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        source => InputError::BadPem {
            what: "key",
            path: path.to_path_buf(),
            source,
        },
    })
}
