//! The client's first TLS record, read before rustls sees it, to refuse in words (and with the
//! right alert) what rustls would refuse obscurely.
//!
//! rustls checks a ClientHello's `signature_algorithms` extension (TLS 1.2+) before its
//! version, so a TLS 1.0/1.1-only client gets alert 40 (handshake_failure) and the log says
//! `SignatureAlgorithmsExtensionRequired`. RFC 8446 §4.2.1 / RFC 5246 §E.1 want alert 70
//! (protocol_version). So the listener reads the first record itself and:
//! - a first record that is not a TLS handshake record is [`FirstRecord::NotTls`];
//! - a ClientHello whose highest offered version is below TLS 1.2 gets alert 70, written by
//!   [`protocol_version_alert`], and is refused;
//! - anything else goes to rustls unchanged (the record is replayed to it).
//!
//! Layout read (RFC 8446 §5.1, §4.1.2; only what is needed, bounds-checked, never trusted):
//! ```text
//! record:      type u8 (22 = handshake) | legacy_version u16 (0x03xx) | length u16 | body
//! body:        msg_type u8 (1 = client_hello) | length u24 | client_version u16 | random [32]
//!              | session_id <0..32> | cipher_suites <2..2^16-2> | compression <1..2^8-1>
//!              | extensions <0..2^16-1>, each: type u16 | length u16 | data
//! ext 43:      supported_versions: versions <2..254> (u16 each)
//! ```
//! A ClientHello larger than one record is parsed as far as the record goes; its version is
//! then decided by rustls.

/// Largest plaintext record body (RFC 8446 §5.1).
pub(crate) const MAX_RECORD: usize = 1 << 14;
/// Record header length.
pub(crate) const HEADER: usize = 5;
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SUPPORTED_VERSIONS: u16 = 43;
/// The lowest version this listener accepts.
pub(crate) const TLS12: u16 = 0x0303;

/// What the first 5 bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstRecord {
    /// A TLS handshake record of `len` body bytes, record version `version`.
    Handshake { version: u16, len: usize },
    /// An SSL 2.0-format ClientHello (high bit set, message type 1): far too old.
    Sslv2Hello,
    /// Not TLS at all (plain syslog, HTTP, noise).
    NotTls,
}

/// Whether a connection starting with this byte can be TLS (a handshake record, or an
/// SSL 2.0-format hello); anything else is decided at once.
pub(crate) fn may_be_tls(first: u8) -> bool {
    first == HANDSHAKE || first & 0x80 != 0
}

/// Classifies a connection by its first record header.
pub(crate) fn first_record(header: &[u8; HEADER]) -> FirstRecord {
    if header[0] & 0x80 != 0 && header[2] == CLIENT_HELLO {
        return FirstRecord::Sslv2Hello;
    }
    if header[0] != HANDSHAKE || header[1] != 3 {
        return FirstRecord::NotTls;
    }
    FirstRecord::Handshake {
        version: u16::from_be_bytes([header[1], header[2]]),
        len: usize::from(u16::from_be_bytes([header[3], header[4]])),
    }
}

/// What a ClientHello offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Hello {
    /// Versions offered, GREASE values left out: the `supported_versions` list when the
    /// client sent one, else its `client_version` alone. Empty when the record ended before
    /// the client said (a ClientHello spread over several records).
    pub versions: Vec<u16>,
    /// Cipher suites offered (IANA codes), in the client's order.
    pub suites: Vec<u16>,
}

impl Hello {
    /// True when every version the client offered is older than TLS 1.2.
    pub fn only_old_versions(&self) -> bool {
        !self.versions.is_empty() && self.versions.iter().all(|v| *v < TLS12)
    }
}

/// Reads a ClientHello from the body of the first handshake record; `None` when the body is
/// not a ClientHello or is cut before its cipher suites.
pub(crate) fn parse_client_hello(body: &[u8]) -> Option<Hello> {
    let mut r = Reader(body);
    if r.u8()? != CLIENT_HELLO {
        return None;
    }
    r.take(3)?; // message length: the record may hold only part of the message
    let client_version = r.u16()?;
    r.take(32)?;
    let session_len = usize::from(r.u8()?);
    r.take(session_len)?;
    let suites_len = usize::from(r.u16()?);
    let suites = r.take(suites_len)?;
    let mut hello = Hello {
        versions: Vec::new(),
        suites: suites
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect(),
    };
    match supported_versions(&mut r) {
        Extensions::Versions(list) => hello.versions = list,
        Extensions::NoVersions => hello.versions = vec![client_version],
        Extensions::CutShort => {}
    }
    hello.versions.retain(|v| !is_grease(*v));
    Some(hello)
}

enum Extensions {
    Versions(Vec<u16>),
    NoVersions,
    CutShort,
}

/// After the cipher suites: skips compression and finds `supported_versions`.
fn supported_versions(r: &mut Reader<'_>) -> Extensions {
    let Some(compression_len) = r.u8() else {
        return Extensions::CutShort;
    };
    if r.take(usize::from(compression_len)).is_none() {
        return Extensions::CutShort;
    }
    if r.0.is_empty() {
        return Extensions::NoVersions; // no extensions at all (SSL 3.0 style)
    }
    let Some(mut exts) = r.u16().and_then(|n| r.take(usize::from(n))).map(Reader) else {
        return Extensions::CutShort;
    };
    while !exts.0.is_empty() {
        let (Some(kind), Some(data)) = (exts.u16(), exts.u16().and_then(|n| exts.take(n.into())))
        else {
            return Extensions::CutShort;
        };
        if kind == SUPPORTED_VERSIONS {
            let mut d = Reader(data);
            let list = d.u8().and_then(|n| d.take(usize::from(n)));
            return match list {
                Some(list) => Extensions::Versions(
                    list.chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                ),
                None => Extensions::CutShort,
            };
        }
    }
    Extensions::NoVersions
}

/// RFC 8701 GREASE values (0x0a0a, 0x1a1a, ... 0xfafa): offered to test servers, never real.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// The fatal `protocol_version` alert (70) as one plaintext record, in the record version
/// the client used (old clients check it).
pub(crate) fn protocol_version_alert(record_version: u16) -> [u8; 7] {
    let [major, minor] = record_version.to_be_bytes();
    // content type 21 (alert), length 2, level 2 (fatal), description 70.
    [21, major, minor, 0, 2, 2, 70]
}

/// How a version is called.
pub(crate) fn version_name(v: u16) -> String {
    match v {
        0x0002 => "SSL 2.0".to_string(),
        0x0300 => "SSL 3.0".to_string(),
        0x0301 => "TLS 1.0".to_string(),
        0x0302 => "TLS 1.1".to_string(),
        0x0303 => "TLS 1.2".to_string(),
        0x0304 => "TLS 1.3".to_string(),
        other => format!("version 0x{other:04x}"),
    }
}

/// A bounds-checked cursor: every read is `None` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests;
