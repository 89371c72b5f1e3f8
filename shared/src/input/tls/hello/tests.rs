//! The first-record reader on real ClientHellos (from rustls) and hand-built old ones.

use super::*;
use std::sync::Arc;

/// A ClientHello record as an old client writes it: `client_version`, two suites, and
/// optionally a supported_versions extension.
fn hello_record(client_version: u16, supported: Option<&[u16]>) -> Vec<u8> {
    let mut body = vec![CLIENT_HELLO, 0, 0, 0];
    body.extend_from_slice(&client_version.to_be_bytes());
    body.extend_from_slice(&[7; 32]);
    body.push(0); // empty session id
    body.extend_from_slice(&[0, 4, 0x00, 0x2f, 0x00, 0x35]);
    body.extend_from_slice(&[1, 0]); // null compression
    if let Some(versions) = supported {
        let mut ext = vec![0, 43];
        let list_len = 2 * versions.len();
        ext.extend_from_slice(&u16::try_from(list_len + 1).unwrap().to_be_bytes());
        ext.push(u8::try_from(list_len).unwrap());
        for v in versions {
            ext.extend_from_slice(&v.to_be_bytes());
        }
        body.extend_from_slice(&u16::try_from(ext.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&ext);
    }
    let len = u32::try_from(body.len() - 4).unwrap().to_be_bytes();
    body[1..4].copy_from_slice(&len[1..]);
    let mut record = vec![HANDSHAKE, 3, 1];
    record.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&body);
    record
}

/// What a rustls client (TLS 1.2 and 1.3) sends first.
fn rustls_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    client.write_tls(&mut out).unwrap();
    out
}

fn split(record: &[u8]) -> (FirstRecord, &[u8]) {
    let header: [u8; HEADER] = record[..HEADER].try_into().unwrap();
    (first_record(&header), &record[HEADER..])
}

#[test]
fn a_modern_client_hello_offers_tls13_and_tls12() {
    let record = rustls_hello();
    let (first, body) = split(&record);
    assert_eq!(
        first,
        FirstRecord::Handshake {
            version: 0x0301,
            len: body.len()
        }
    );
    let hello = parse_client_hello(body).expect("a ClientHello");
    assert_eq!(hello.versions, [0x0304, 0x0303]);
    assert!(!hello.only_old_versions());
    assert!(hello.suites.contains(&0x1301), "{:x?}", hello.suites);
}

#[test]
fn tls10_and_tls11_only_clients_are_old_with_or_without_supported_versions() {
    for record in [
        hello_record(0x0301, None),
        hello_record(0x0302, None),
        hello_record(0x0303, Some(&[0x0302, 0x0301])),
    ] {
        let (_, body) = split(&record);
        let hello = parse_client_hello(body).expect("a ClientHello");
        assert!(hello.only_old_versions(), "{hello:?}");
        assert_eq!(hello.suites, [0x002f, 0x0035]);
    }
}

#[test]
fn supported_versions_wins_over_client_version_and_grease_is_ignored() {
    let record = hello_record(0x0301, Some(&[0x3a3a, 0x0303]));
    let hello = parse_client_hello(&record[HEADER..]).unwrap();
    assert_eq!(hello.versions, [0x0303]);
    assert!(!hello.only_old_versions());
    let record = hello_record(0x0303, Some(&[0x0a0a]));
    let hello = parse_client_hello(&record[HEADER..]).unwrap();
    assert!(hello.versions.is_empty() && !hello.only_old_versions());
}

#[test]
fn a_hello_cut_short_decides_nothing_and_never_panics() {
    let record = rustls_hello();
    for end in HEADER..record.len() {
        if let Some(hello) = parse_client_hello(&record[HEADER..end]) {
            assert!(!hello.only_old_versions(), "cut at {end}: {hello:?}");
        }
    }
    let old = hello_record(0x0303, Some(&[0x0301]));
    let cut = &old[HEADER..old.len() - 1];
    let hello = parse_client_hello(cut).expect("suites are there");
    assert!(hello.versions.is_empty(), "the list was cut: undecided");
}

#[test]
fn plain_syslog_http_and_sslv2_are_told_apart() {
    assert_eq!(first_record(b"<13>1"), FirstRecord::NotTls);
    assert_eq!(first_record(b"GET /"), FirstRecord::NotTls);
    assert_eq!(first_record(&[22, 2, 0, 0, 5]), FirstRecord::NotTls);
    assert_eq!(
        first_record(&[0x80, 0x2e, 1, 3, 1]),
        FirstRecord::Sslv2Hello
    );
}

#[test]
fn the_alert_is_fatal_protocol_version_in_the_clients_record_version() {
    assert_eq!(protocol_version_alert(0x0301), [21, 3, 1, 0, 2, 2, 70]);
    assert_eq!(version_name(0x0302), "TLS 1.1");
    assert_eq!(version_name(0x7f00), "version 0x7f00");
}
