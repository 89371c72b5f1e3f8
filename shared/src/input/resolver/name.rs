//! What a sender's name looks like, and where the system's answers come from.
//!
//! As the reference's `dnscache.c`/`net.c`: the PTR name from `getnameinfo(NI_NAMEREQD)` (so
//! `/etc/hosts` and nsswitch count), trailing dot removed, lower-cased, and the local domain
//! stripped. A "name" that is an IP address literal or holds bytes other than
//! `[A-Za-z0-9._-]` is refused (spoofed PTR records; it would also break the syslog header).
//!
//! The local domain: the part of the kernel host name after its first dot; else the domain of
//! the fully qualified name found by resolving the host name forward and then back (what
//! `hostname -f` does); else the last `domain`/`search` directive of `/etc/resolv.conf` (its
//! first search domain).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Turns a raw PTR name into the host to show, or None if it is unusable.
pub(super) fn display_name(raw: &str, local_domain: Option<&str>) -> Option<String> {
    let name = raw.trim_end_matches('.').to_ascii_lowercase();
    let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
    if name.is_empty() || !name.bytes().all(valid) || name.parse::<IpAddr>().is_ok() {
        return None;
    }
    if let Some(domain) = local_domain.filter(|d| !d.is_empty()) {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some(short) = name.strip_suffix(&domain).and_then(|s| s.strip_suffix('.')) {
            if !short.is_empty() {
                return Some(short.to_string());
            }
        }
    }
    Some(name)
}

/// The local domain (see the module doc for the order of sources).
pub(super) fn system_local_domain(
    lookup: &(dyn Fn(IpAddr) -> Option<String> + Send + Sync),
) -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    if let Some((_, domain)) = host.split_once('.') {
        if !domain.is_empty() {
            return Some(domain.to_ascii_lowercase());
        }
    }
    if !host.is_empty() {
        let addrs = (host, 0)
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>())
            .unwrap_or_default();
        for addr in addrs {
            let fqdn = lookup(addr.ip()).unwrap_or_default().to_ascii_lowercase();
            let prefix = format!("{}.", host.to_ascii_lowercase());
            if let Some(domain) = fqdn.trim_end_matches('.').strip_prefix(&prefix) {
                if !domain.is_empty() {
                    return Some(domain.to_string());
                }
            }
        }
    }
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    resolv_conf_domain(&conf)
}

/// The last `domain` or `search` directive wins (resolv.conf(5)); `search` gives its first entry.
pub(super) fn resolv_conf_domain(conf: &str) -> Option<String> {
    let mut found = None;
    for line in conf.lines() {
        let mut words = line.split_whitespace();
        if let (Some("domain" | "search"), Some(first)) = (words.next(), words.next()) {
            found = Some(first.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    found.filter(|d| !d.is_empty())
}

/// `getnameinfo(NI_NAMEREQD)`: the PTR name (or `/etc/hosts` name) of `ip`. Blocking.
/// Through `dns-lookup`, which keeps the FFI call (and its `unsafe`) out of this crate.
pub(super) fn system_reverse_lookup(ip: IpAddr) -> Option<String> {
    dns_lookup::getnameinfo(&SocketAddr::new(ip, 0), libc::NI_NAMEREQD)
        .ok()
        .map(|(host, _service)| host)
}
