//! Who may send: an intake's `allowed_sources`, a list of CIDR networks.
//!
//! [`SourceFilter::allows`] is asked with the peer address of every accepted TCP/TLS
//! connection, before a byte is read from it (before the TLS handshake), and of every UDP
//! datagram, before it is framed. An empty filter allows everyone (the default, as the
//! reference). An IPv4-mapped IPv6 peer (`::ffff:10.1.2.3`, what a dual-stack socket reports
//! for an IPv4 client) is matched as the IPv4 address it stands for. UDP drops datagrams from
//! elsewhere through a [`SourceGate`] (counted in `refused_source`, logged rate-limited).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::admission::{Notice, Notices};
use super::InputCounters;

/// One network: an address and a prefix length (`10.0.0.0/8`, `2001:db8::/32`; a bare
/// address is a single host). Host bits below the prefix are ignored when matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR does not parse; the text is meant for a configuration problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("{0:?} is not a prefix length")]
    Prefix(String),
    #[error("prefix /{prefix} is longer than the {bits} bits of the address")]
    PrefixTooLong { prefix: u8, bits: u8 },
}

impl Cidr {
    /// Whether `ip` is inside this network (an IPv4-mapped IPv6 `ip` as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_equal(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_equal(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` are equal.
fn prefix_equal(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (bytes, bits) = (usize::from(prefix / 8), prefix % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    if bits == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - bits);
    (a[bytes] & mask) == (b[bytes] & mask)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::Address(addr_text.to_string()))?;
        // A mapped network (`::ffff:10.0.0.0/104`) is the IPv4 network it stands for.
        let (addr, shift) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), 96),
                None => (addr, 0),
            },
            IpAddr::V4(_) => (addr, 0),
        };
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => bits,
            Some(p) => {
                let n: u8 = p.parse().map_err(|_| CidrError::Prefix(p.to_string()))?;
                let n = if shift > 0 {
                    n.checked_sub(shift)
                        .ok_or(CidrError::Prefix(p.to_string()))?
                } else {
                    n
                };
                if n > bits {
                    return Err(CidrError::PrefixTooLong { prefix: n, bits });
                }
                n
            }
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The networks an intake accepts senders from; empty = everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceFilter(Vec<Cidr>);

impl SourceFilter {
    pub fn new(networks: Vec<Cidr>) -> Self {
        Self(networks)
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|net| net.contains(ip))
    }

    /// True when every sender is allowed (no list given).
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    pub fn networks(&self) -> &[Cidr] {
        &self.0
    }
}

/// The allow-list of a UDP listener: drops, counts and logs datagrams from elsewhere.
pub(crate) struct SourceGate {
    filter: SourceFilter,
    notices: Notices,
}

impl SourceGate {
    pub fn new(filter: SourceFilter, counters: Arc<InputCounters>) -> Self {
        let notices = Notices::new(counters);
        Self { filter, notices }
    }

    /// Removes the datagrams whose sender is not allowed, before they are framed.
    pub fn keep_allowed<T>(&self, received: &mut Vec<(SocketAddr, T)>) {
        if self.filter.is_open() {
            return;
        }
        self.notices.tick();
        received.retain(|(peer, _)| {
            let allowed = self.filter.allows(peer.ip());
            if !allowed {
                self.notices
                    .record(Notice::DatagramFromElsewhere, peer.ip());
            }
            allowed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_networks_match_on_their_prefix_only() {
        let net = cidr("10.1.0.0/16");
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        let odd = cidr("192.168.1.128/25");
        assert!(odd.contains(ip("192.168.1.200")));
        assert!(!odd.contains(ip("192.168.1.127")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(
            !cidr("0.0.0.0/0").contains(ip("::1")),
            "no IPv6 in an IPv4 net"
        );
    }

    #[test]
    fn a_bare_address_is_one_host() {
        let host = cidr("127.0.0.1");
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
    }

    #[test]
    fn ipv6_networks_match_and_mapped_ipv4_peers_match_ipv4_networks() {
        let net = cidr("2001:db8::/32");
        assert!(net.contains(ip("2001:db8:1::5")));
        assert!(!net.contains(ip("2001:db9::1")));
        let v4 = cidr("10.0.0.0/8");
        assert!(v4.contains(ip("::ffff:10.9.8.7")));
        assert!(!v4.contains(ip("::ffff:11.0.0.1")));
        let mapped = cidr("::ffff:10.0.0.0/104");
        assert_eq!(mapped, v4, "a mapped network is its IPv4 network");
    }

    #[test]
    fn bad_networks_are_refused_with_the_reason() {
        assert_eq!(
            "10.0.0.300/8".parse::<Cidr>(),
            Err(CidrError::Address("10.0.0.300".into()))
        );
        assert_eq!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Prefix("x".into()))
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong {
                prefix: 33,
                bits: 32
            })
        );
        assert!("::/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn an_empty_filter_allows_everyone_a_list_only_its_networks() {
        assert!(SourceFilter::default().allows(ip("203.0.113.9")));
        let list = SourceFilter::new(vec![cidr("127.0.0.1/32"), cidr("fd00::/8")]);
        assert!(list.allows(ip("127.0.0.1")));
        assert!(list.allows(ip("::ffff:127.0.0.1")));
        assert!(list.allows(ip("fd12::1")));
        assert!(!list.allows(ip("127.0.0.2")));
    }
}
