//! Why a TLS connection was refused, in words an operator can act on, and how that is counted
//! and logged.
//!
//! Counting: a refusal before any handshake ([`Refusal::NotTls`], [`Refusal::OverLimit`]) has
//! its own counter; every other one is a real handshake failure (`tls_handshake_failures`).
//! A connection closed before its first byte is not a refusal at all (`tls_closed_before_hello`,
//! counted by the caller).
//!
//! Logging: one [`Repeating`] per [`Kind`], so a flood of one kind (a scanner, a fleet of old
//! clients) gives its first line in full, then at most one summary per 10 s with a count,
//! while the first line of another kind still shows at once. Failures are not an episode that
//! ends, so there is no end line. Each line names the intake, the peer and the problem.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustls::{AlertDescription, CertificateError, Error as TlsError, PeerIncompatible};

use super::hello::{version_name, Hello};
use crate::input::InputCounters;
use crate::log_limit::{Repeating, Report};

/// A refused TLS connection.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The first bytes are not a TLS handshake record (the first few kept for the log).
    NotTls { first: Vec<u8> },
    /// All `limit` handshake slots were taken when the client's first byte came.
    OverLimit { limit: usize },
    /// The client offered only versions older than TLS 1.2 (listed; empty for SSL 2.0 form).
    OldVersion { offered: Vec<u16> },
    /// rustls refused the handshake; `hello` is what the client offered, when it was read.
    Tls {
        error: TlsError,
        hello: Option<Hello>,
    },
    /// The connection ended or broke during the handshake.
    Broken(std::io::Error),
    /// The handshake did not finish within the timeout from the client's first byte.
    TimedOut { after: Duration },
}

/// Kinds logged apart (see the module doc). `Other` is last (see [`KINDS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    NotTls,
    OverLimit,
    Version,
    Cipher,
    NoClientCertificate,
    ClientCertificateRefused,
    PeerAlert,
    Broken,
    TimedOut,
    Other,
}

/// How many kinds there are: `Other` stays the last variant.
const KINDS: usize = Kind::Other as usize + 1;

/// What the words need to know about the intake.
pub(crate) struct Context<'a> {
    /// The suites this intake accepts, as rustls names them.
    pub accepted_suites: &'a str,
    /// The CA file clients are verified against, when they are.
    pub client_ca: Option<&'a std::path::Path>,
}

impl Refusal {
    pub fn kind(&self) -> Kind {
        match self {
            Refusal::NotTls { .. } => Kind::NotTls,
            Refusal::OverLimit { .. } => Kind::OverLimit,
            Refusal::OldVersion { .. } => Kind::Version,
            Refusal::Broken(_) => Kind::Broken,
            Refusal::TimedOut { .. } => Kind::TimedOut,
            Refusal::Tls { error, .. } => match error {
                TlsError::PeerIncompatible(
                    PeerIncompatible::NoCipherSuitesInCommon
                    | PeerIncompatible::NoKxGroupsInCommon
                    | PeerIncompatible::NoSignatureSchemesInCommon,
                ) => Kind::Cipher,
                TlsError::NoCertificatesPresented => Kind::NoClientCertificate,
                TlsError::InvalidCertificate(_) => Kind::ClientCertificateRefused,
                TlsError::AlertReceived(_) => Kind::PeerAlert,
                _ => Kind::Other,
            },
        }
    }

    /// Adds one to the counter this refusal belongs to.
    pub fn count(&self, counters: &InputCounters) {
        let counter = match self.kind() {
            Kind::NotTls => &counters.tls_not_tls,
            Kind::OverLimit => &counters.tls_handshakes_over_limit,
            _ => &counters.tls_handshake_failures,
        };
        InputCounters::add(counter, 1);
    }

    /// The problem in words.
    pub fn words(&self, cx: &Context<'_>) -> String {
        match self {
            Refusal::NotTls { first } => not_tls_words(first),
            Refusal::OverLimit { limit } => format!(
                "{limit} TLS handshakes were already in progress on this intake \
                 (tls_max_handshakes); the connection was closed at its first byte"
            ),
            Refusal::OldVersion { offered } if offered.is_empty() => {
                "the client sent an SSL 2.0-format hello; this intake requires TLS 1.2 or later"
                    .to_string()
            }
            Refusal::OldVersion { offered } => format!(
                "the client offered {}; this intake requires TLS 1.2 or later",
                versions(offered)
            ),
            Refusal::Tls { error, hello } => tls_words(error, hello.as_ref(), cx),
            Refusal::Broken(e) => format!("the connection broke during the handshake: {e}"),
            Refusal::TimedOut { after } => format!(
                "the client began a TLS handshake and did not finish it within {} s \
                 (tls_handshake_timeout)",
                after.as_secs()
            ),
        }
    }
}

fn versions(list: &[u16]) -> String {
    let names: Vec<String> = list.iter().map(|v| version_name(*v)).collect();
    names.join(" and ")
}

fn not_tls_words(first: &[u8]) -> String {
    let shown = first.escape_ascii().to_string();
    let looks_like = match first.first() {
        Some(b'<' | b'0'..=b'9') => {
            "; it looks like plain syslog: point the sender at a tcp intake, or enable TLS in it"
        }
        Some(b'A'..=b'Z') => "; it looks like a plain-text protocol (HTTP?)",
        _ => "",
    };
    format!("the client sent bytes that are not TLS (\"{shown}\"){looks_like}")
}

fn offered_suites(hello: &Hello) -> String {
    const SHOWN: usize = 12;
    let codes: Vec<String> = hello
        .suites
        .iter()
        .take(SHOWN)
        .map(|s| format!("0x{s:04x}"))
        .collect();
    let more = hello.suites.len().saturating_sub(SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(" (it offered the cipher suites {}{more})", codes.join(", "))
}

fn tls_words(error: &TlsError, hello: Option<&Hello>, cx: &Context<'_>) -> String {
    let ca = cx
        .client_ca
        .map_or_else(String::new, |p| format!(" ({})", p.display()));
    match error {
        TlsError::PeerIncompatible(
            why @ (PeerIncompatible::NoCipherSuitesInCommon
            | PeerIncompatible::NoKxGroupsInCommon
            | PeerIncompatible::NoSignatureSchemesInCommon),
        ) => {
            let missing = match why {
                PeerIncompatible::NoKxGroupsInCommon => "key exchange group (ECDHE)",
                PeerIncompatible::NoSignatureSchemesInCommon => {
                    "signature scheme for this intake's certificate"
                }
                _ => "cipher suite",
            };
            let offered = hello.map_or_else(String::new, offered_suites);
            format!(
                "the client offered no {missing} this intake accepts{offered}; this intake \
                 accepts {}",
                cx.accepted_suites
            )
        }
        TlsError::NoCertificatesPresented => format!(
            "the client sent no certificate, and this intake requires one signed by the \
             tls_ca_name CA{ca} (tls_client_auth: required)"
        ),
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the client's certificate was refused: it is not signed by the tls_ca_name CA{ca}"
        ),
        TlsError::InvalidCertificate(CertificateError::BadSignature) => format!(
            "the client's certificate was refused: its signature does not verify against the \
             tls_ca_name CA{ca} (another CA of the same name signed it, or the client's key does \
             not match its certificate)"
        ),
        TlsError::InvalidCertificate(e) => {
            format!("the client's certificate was refused: {e:?}")
        }
        TlsError::AlertReceived(alert) => {
            let hint = match alert {
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown => {
                    " (it does not trust this intake's certificate: give it the CA that signed \
                     tls_cert_name)"
                }
                _ => "",
            };
            format!("the client ended the handshake with the alert {alert:?}{hint}")
        }
        other => format!("the TLS handshake failed: {other}"),
    }
}

/// One [`Repeating`] per kind, for one intake.
pub(crate) struct RefusalLog {
    intake: std::sync::Arc<str>,
    kinds: Mutex<[Repeating; KINDS]>,
}

impl RefusalLog {
    pub fn new(intake: std::sync::Arc<str>) -> Self {
        Self {
            intake,
            kinds: Mutex::new(std::array::from_fn(|_| Repeating::default())),
        }
    }

    /// Logs `refusal` if its kind is due a line; returns whether a line was written.
    pub fn note(&self, refusal: &Refusal, peer: SocketAddr, cx: &Context<'_>) -> bool {
        let kind = refusal.kind();
        let report = self
            .kinds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())[kind as usize]
            .occurred(Instant::now());
        let intake = &*self.intake;
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        match report {
            Some(Report::Started) => {
                let problem = refusal.words(cx);
                tracing::warn!(intake, peer = %peer, problem, "TLS connection refused");
                true
            }
            Some(Report::Ongoing { count, total, .. }) => {
                let problem = refusal.words(cx);
                tracing::warn!(intake, peer = %peer, problem, count, total,
                    "TLS connections still refused for this reason (count since the last line; latest shown)");
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context<'static> {
        Context {
            accepted_suites: "TLS13_AES_128_GCM_SHA256",
            client_ca: Some(std::path::Path::new("/certs/clients.crt")),
        }
    }

    #[test]
    fn old_versions_are_named_as_an_operator_says_them() {
        let r = Refusal::OldVersion {
            offered: vec![0x0301],
        };
        assert_eq!(
            r.words(&cx()),
            "the client offered TLS 1.0; this intake requires TLS 1.2 or later"
        );
        let r = Refusal::OldVersion {
            offered: vec![0x0302, 0x0301],
        };
        assert!(r.words(&cx()).contains("offered TLS 1.1 and TLS 1.0;"));
    }

    #[test]
    fn a_cipher_mismatch_says_what_was_offered_and_what_is_accepted() {
        let r = Refusal::Tls {
            error: TlsError::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
            hello: Some(Hello {
                versions: vec![0x0303],
                suites: vec![0x002f, 0x000a],
            }),
        };
        assert_eq!(r.kind(), Kind::Cipher);
        let words = r.words(&cx());
        assert!(
            words.contains("no cipher suite this intake accepts"),
            "{words}"
        );
        assert!(words.contains("0x002f, 0x000a"), "{words}");
        assert!(
            words.contains("accepts TLS13_AES_128_GCM_SHA256"),
            "{words}"
        );
    }

    #[test]
    fn refusals_before_the_handshake_are_counted_apart() {
        let counters = InputCounters::new();
        Refusal::NotTls {
            first: b"<13>hi".to_vec(),
        }
        .count(&counters);
        Refusal::OverLimit { limit: 1 }.count(&counters);
        Refusal::TimedOut {
            after: Duration::from_secs(1),
        }
        .count(&counters);
        let s = counters.snapshot();
        assert_eq!(
            (
                s.tls_not_tls,
                s.tls_handshakes_over_limit,
                s.tls_handshake_failures
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn plain_syslog_on_a_tls_port_is_recognised() {
        let words = Refusal::NotTls {
            first: b"<13>Jan".to_vec(),
        }
        .words(&cx());
        assert!(words.contains("\"<13>Jan\""), "{words}");
        assert!(words.contains("plain syslog"), "{words}");
    }

    #[test]
    fn each_kind_gets_its_first_line_then_repeats_are_held_for_the_summary() {
        let log = RefusalLog::new(std::sync::Arc::from("Secure"));
        let peer: SocketAddr = "[::ffff:192.0.2.7]:5000".parse().unwrap();
        let old = Refusal::OldVersion {
            offered: vec![0x0301],
        };
        let plain = Refusal::NotTls {
            first: b"<13>".to_vec(),
        };
        assert!(log.note(&old, peer, &cx()), "the first of a kind is logged");
        assert!(!log.note(&old, peer, &cx()), "a repeat within 10 s is not");
        assert!(
            log.note(&plain, peer, &cx()),
            "another kind is logged at once"
        );
        assert!(!log.note(&plain, peer, &cx()));
    }
}
