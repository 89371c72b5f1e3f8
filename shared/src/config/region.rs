//! Where the uplink sends events: a Sekoia.io region (`REGION`, case-insensitive) or, for
//! `OTHER`, a custom `ENDPOINT` written `HOST[:PORT]` (IPv6 literals in brackets:
//! `[2001:db8::1]:6514`; a bare IPv6 literal is taken whole, with the default port).
//!
//! Unlike the reference, an unknown region is an error instead of a silent fallback to FRA1,
//! and `OTHER` without an endpoint is an error too. The documented typo `EUA1` means `UAE1`.
//!
//! The [`Output`] is part of the destination. With RELP (`RELP_OUTPUT`) the reference's
//! target rules apply: the host is `relp.<endpoint>` when the endpoint starts with `intake`,
//! else the endpoint itself, and the port is 11514 (an `ENDPOINT` that names its port keeps
//! it); TLS as for the plain output, the certificate checked against that host.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Port of every Sekoia.io syslog intake, and the default port of `ENDPOINT`.
pub const UPLINK_PORT: u16 = 10514;
/// Port of the RELP output (the reference's omrelp target port).
pub const RELP_PORT: u16 = 11514;

/// What the uplink speaks to its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Output {
    /// Octet-counted syslog over TLS (SPEC §5); delivery judged from TCP acknowledgements.
    #[default]
    Tls,
    /// RELP over TLS: every event acknowledged by the receiver; at most `window` events per
    /// connection wait for their acknowledgement.
    Relp { window: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Region {
    Fra1,
    Fra2,
    Mco1,
    Uae1,
    Usa1,
    Sgp1,
    Other,
}

const REGIONS: [(Region, &str, Option<&str>); 7] = [
    (Region::Fra1, "FRA1", Some("intake.sekoia.io")),
    (Region::Fra2, "FRA2", Some("intake.fra2.sekoia.io")),
    (Region::Mco1, "MCO1", Some("intake.mco1.sekoia.io")),
    (Region::Uae1, "UAE1", Some("intake.uae1.sekoia.io")),
    (Region::Usa1, "USA1", Some("intake.usa1.sekoia.io")),
    (Region::Sgp1, "SGP1", Some("intake.sgp1.sekoia.io")),
    (Region::Other, "OTHER", None),
];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegionError {
    #[error("\"{0}\" is not a known region")]
    UnknownRegion(String),
    #[error("region OTHER needs an endpoint, and none is set")]
    MissingEndpoint,
    #[error("endpoint \"{text}\" is invalid: {reason}")]
    BadEndpoint { text: String, reason: &'static str },
}

impl Region {
    /// Case-insensitive name; `EUA1` (a typo in the users' documentation) is `UAE1`.
    pub fn parse(text: &str) -> Result<Region, RegionError> {
        let upper = text.trim().to_ascii_uppercase();
        if upper == "EUA1" {
            return Ok(Region::Uae1);
        }
        REGIONS
            .iter()
            .find(|(_, name, _)| *name == upper)
            .map(|(region, _, _)| *region)
            .ok_or_else(|| RegionError::UnknownRegion(text.trim().to_string()))
    }

    /// Upper-case name, e.g. `FRA1`.
    pub fn name(self) -> &'static str {
        REGIONS
            .iter()
            .find(|(region, _, _)| *region == self)
            .map_or("OTHER", |(_, name, _)| name)
    }

    /// Intake host of the region; `None` for `OTHER`.
    pub fn host(self) -> Option<&'static str> {
        REGIONS
            .iter()
            .find(|(region, _, _)| *region == self)
            .and_then(|(_, _, host)| *host)
    }

    /// The accepted names, for error messages.
    pub fn known_names() -> String {
        REGIONS
            .iter()
            .map(|(_, name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Destination of this region for `output`; `endpoint` is used (and required) only for
    /// `OTHER`.
    pub fn destination(
        self,
        endpoint: Option<&str>,
        output: Output,
    ) -> Result<Destination, RegionError> {
        let (host, port) = match self.host() {
            Some(host) => (host.to_string(), None),
            None => match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
                Some(text) => split_endpoint(text)?,
                None => return Err(RegionError::MissingEndpoint),
            },
        };
        Ok(match output {
            Output::Tls => Destination {
                host,
                port: port.unwrap_or(UPLINK_PORT),
                output,
            },
            Output::Relp { .. } => Destination {
                host: relp_host(host),
                port: port.unwrap_or(RELP_PORT),
                output,
            },
        })
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The reference's RELP target: `relp.<endpoint>` for an endpoint starting with `intake`.
fn relp_host(endpoint: String) -> String {
    if endpoint.starts_with("intake") {
        format!("relp.{endpoint}")
    } else {
        endpoint
    }
}

/// Host and port the uplink connects to, and what it speaks there. `host` is a DNS name or an
/// IP literal without brackets (it is also the TLS server name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub output: Output,
}

impl Destination {
    /// `host:port` and the output, for `check` and the logs, e.g.
    /// `relp.intake.sekoia.io:11514 over RELP (TLS, window 128)`.
    pub fn describe(&self) -> String {
        match self.output {
            Output::Tls => format!("{self} over syslog/TLS"),
            Output::Relp { window } => format!("{self} over RELP (TLS, window {window})"),
        }
    }
}

impl Destination {
    /// The same place however spelled: `FRA1` and `endpoint: INTAKE.sekoia.io` are one
    /// destination (host names compare without case), so they share one uplink.
    pub fn same_place(&self, other: &Destination) -> bool {
        self.host.eq_ignore_ascii_case(&other.host) && self.port == other.port
    }

    /// A short name for files of this destination, equal for two spellings of one place:
    /// 16 hex digits of a hash (FNV-1a, stable across builds) of `host:port` in lower case.
    pub fn id(&self) -> String {
        let text = format!("{}:{}", self.host.to_ascii_lowercase(), self.port);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parse `HOST[:PORT]`, `[IPV6][:PORT]` or a bare IPv6 literal; the port defaults to 10514.
pub fn parse_endpoint(text: &str) -> Result<Destination, RegionError> {
    let (host, port) = split_endpoint(text)?;
    Ok(Destination {
        host,
        port: port.unwrap_or(UPLINK_PORT),
        output: Output::Tls,
    })
}

/// The host and, if given, the port of an endpoint.
fn split_endpoint(text: &str) -> Result<(String, Option<u16>), RegionError> {
    let text = text.trim();
    let bad = |reason| RegionError::BadEndpoint {
        text: text.to_string(),
        reason,
    };
    if text.contains("://") || text.contains('/') {
        return Err(bad("give only HOST[:PORT], without scheme or path"));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(bad("missing ']'"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("brackets must hold an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or(bad("expected ':' after ']'"))?,
                ),
            ),
        }
    } else if text.matches(':').count() > 1 {
        if text.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("too many ':'; write an IPv6 address as [ADDRESS]:PORT"));
        }
        (text, None)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("the host contains spaces"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => return Err(bad("the port must be a number between 1 and 65535")),
        },
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(host: &str, port: u16) -> Destination {
        Destination {
            host: host.to_string(),
            port,
            output: Output::Tls,
        }
    }

    const RELP: Output = Output::Relp { window: 128 };

    fn relp(host: &str, port: u16) -> Destination {
        Destination {
            output: RELP,
            ..dest(host, port)
        }
    }

    #[test]
    fn relp_goes_to_relp_dot_intake_host_on_11514() {
        assert_eq!(
            Region::Fra1.destination(None, RELP),
            Ok(relp("relp.intake.sekoia.io", 11514))
        );
        assert_eq!(
            Region::Usa1.destination(None, RELP),
            Ok(relp("relp.intake.usa1.sekoia.io", 11514))
        );
        assert_eq!(
            Region::Other.destination(Some("intake.example"), RELP),
            Ok(relp("relp.intake.example", 11514))
        );
    }

    #[test]
    fn relp_keeps_an_endpoint_not_starting_with_intake_and_an_explicit_port() {
        assert_eq!(
            Region::Other.destination(Some("relay.example"), RELP),
            Ok(relp("relay.example", 11514))
        );
        assert_eq!(
            Region::Other.destination(Some("10.0.0.1:2514"), RELP),
            Ok(relp("10.0.0.1", 2514))
        );
        assert_eq!(
            Region::Other.destination(Some("intake.example:2514"), RELP),
            Ok(relp("relp.intake.example", 2514))
        );
    }

    #[test]
    fn describe_names_the_output() {
        assert_eq!(
            dest("intake.sekoia.io", 10514).describe(),
            "intake.sekoia.io:10514 over syslog/TLS"
        );
        assert_eq!(
            relp("relp.intake.sekoia.io", 11514).describe(),
            "relp.intake.sekoia.io:11514 over RELP (TLS, window 128)"
        );
    }

    #[test]
    fn a_destination_written_before_outputs_existed_reads_as_tls() {
        let old: Destination =
            serde_json::from_str(r#"{"host":"intake.sekoia.io","port":10514}"#).unwrap();
        assert_eq!(old, dest("intake.sekoia.io", 10514));
        let json = serde_json::to_string(&relp("r", 1)).unwrap();
        assert_eq!(
            serde_json::from_str::<Destination>(&json).unwrap(),
            relp("r", 1)
        );
    }

    #[test]
    fn region_names_are_case_insensitive() {
        assert_eq!(Region::parse("fra1"), Ok(Region::Fra1));
        assert_eq!(Region::parse("Fra2"), Ok(Region::Fra2));
        assert_eq!(Region::parse(" MCO1 "), Ok(Region::Mco1));
        assert_eq!(Region::parse("usa1"), Ok(Region::Usa1));
        assert_eq!(Region::parse("sgp1"), Ok(Region::Sgp1));
        assert_eq!(Region::parse("other"), Ok(Region::Other));
    }

    #[test]
    fn documented_typo_eua1_means_uae1() {
        assert_eq!(Region::parse("EUA1"), Ok(Region::Uae1));
        assert_eq!(Region::parse("eua1"), Ok(Region::Uae1));
        assert_eq!(Region::parse("UAE1"), Ok(Region::Uae1));
    }

    #[test]
    fn unknown_region_is_an_error_not_fra1() {
        assert_eq!(
            Region::parse("PAR1"),
            Err(RegionError::UnknownRegion("PAR1".to_string()))
        );
        assert!(Region::parse("").is_err());
    }

    #[test]
    fn every_region_sends_to_its_host_on_10514() {
        assert_eq!(
            Region::Fra1.destination(None, Output::Tls),
            Ok(dest("intake.sekoia.io", 10514))
        );
        assert_eq!(
            Region::Fra2.destination(None, Output::Tls),
            Ok(dest("intake.fra2.sekoia.io", 10514))
        );
        assert_eq!(
            Region::Mco1.destination(None, Output::Tls),
            Ok(dest("intake.mco1.sekoia.io", 10514))
        );
        assert_eq!(
            Region::Uae1.destination(None, Output::Tls),
            Ok(dest("intake.uae1.sekoia.io", 10514))
        );
        assert_eq!(
            Region::Usa1.destination(None, Output::Tls),
            Ok(dest("intake.usa1.sekoia.io", 10514))
        );
        assert_eq!(
            Region::Sgp1.destination(None, Output::Tls),
            Ok(dest("intake.sgp1.sekoia.io", 10514))
        );
    }

    #[test]
    fn region_ignores_endpoint_unless_other() {
        assert_eq!(
            Region::Fra1.destination(Some("relay.example:6514"), Output::Tls),
            Ok(dest("intake.sekoia.io", 10514))
        );
    }

    #[test]
    fn other_without_endpoint_is_an_error() {
        assert_eq!(
            Region::Other.destination(None, Output::Tls),
            Err(RegionError::MissingEndpoint)
        );
        assert_eq!(
            Region::Other.destination(Some("  "), Output::Tls),
            Err(RegionError::MissingEndpoint)
        );
    }

    #[test]
    fn endpoint_port_defaults_to_10514() {
        assert_eq!(
            Region::Other.destination(Some("relay.example"), Output::Tls),
            Ok(dest("relay.example", 10514))
        );
        assert_eq!(
            parse_endpoint("relay.example:6514"),
            Ok(dest("relay.example", 6514))
        );
        assert_eq!(parse_endpoint("10.0.0.1:6514"), Ok(dest("10.0.0.1", 6514)));
    }

    #[test]
    fn endpoint_accepts_ipv6_in_brackets_or_bare() {
        assert_eq!(parse_endpoint("[::1]:6514"), Ok(dest("::1", 6514)));
        assert_eq!(
            parse_endpoint("[2001:db8::1]"),
            Ok(dest("2001:db8::1", 10514))
        );
        assert_eq!(
            parse_endpoint("2001:db8::1"),
            Ok(dest("2001:db8::1", 10514))
        );
        assert_eq!(dest("::1", 6514).to_string(), "[::1]:6514");
        assert_eq!(dest("relay", 1).to_string(), "relay:1");
    }

    #[test]
    fn malformed_endpoints_are_errors() {
        for bad in [
            "relay:0",
            "relay:70000",
            "relay:abc",
            ":6514",
            "[::1",
            "[::1]6514",
            "[relay]:1",
            "a:b:c",
            "https://relay.example",
            "relay example",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad} should be rejected");
        }
    }
}
