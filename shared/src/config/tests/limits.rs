//! The per-intake limits and allow-list (`config/limits.rs`).

use super::*;

fn with(extra: &str, protocol: &str) -> String {
    format!("intakes:\n{}{extra}", entry("Edge", protocol, "20516", K1))
}

#[test]
fn limits_default_when_absent_and_are_read_when_given() {
    let f = Fixture::new();
    let cfg = f.ok(&with("", "tcp"));
    assert_eq!(cfg.intakes[0].limits, IntakeLimits::default());
    let text = with(
        "  max_connections: 500\n  max_connections_per_source: 20\n  partial_frame_timeout: 2m\n  \
         idle_timeout: 600\n  read_buffer_budget: 64m\n  allowed_sources: [\"10.0.0.0/8\", \"2001:db8::/32\"]\n",
        "tcp",
    );
    let limits = f.ok(&text).intakes[0].limits.clone();
    assert_eq!(limits.max_connections, 500);
    assert_eq!(limits.max_connections_per_source, 20);
    assert_eq!(limits.partial_frame_timeout_secs, 120);
    assert_eq!(limits.idle_timeout_secs, Some(600));
    assert_eq!(limits.read_buffer_budget, 64 << 20);
    let nets: Vec<String> = limits
        .allowed_sources
        .networks()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "2001:db8::/32"]);
}

#[test]
fn idle_timeout_off_is_off() {
    let f = Fixture::new();
    let cfg = f.ok(&with("  idle_timeout: off\n", "tcp"));
    assert_eq!(cfg.intakes[0].limits.idle_timeout_secs, None);
}

#[test]
fn bad_limits_name_file_intake_field_and_fix() {
    let f = Fixture::new();
    let text = with(
        "  max_connections: 0\n  partial_frame_timeout: off\n  idle_timeout: soon\n  \
         read_buffer_budget: 100k\n  allowed_sources: [\"10.0.0.300/8\"]\n",
        "tcp",
    );
    let problems = f.problems(&text);
    let file = f.path("intakes.yaml").display().to_string();
    let expect = [
        format!("{file}: intake \"Edge\": field \"max_connections\": 0 is out of range; use a number of connections from 1 to 4294967295, or remove it for the default"),
        format!("{file}: intake \"Edge\": field \"partial_frame_timeout\": \"off\" is out of range; use 1 s to 1 day (e.g. 60, 90s, 5m); it cannot be turned off"),
        format!("{file}: intake \"Edge\": field \"idle_timeout\": \"soon\" is not a duration; use whole seconds, a number with s, m or h (e.g. 600, 10m), or `off`"),
        format!("{file}: intake \"Edge\": field \"read_buffer_budget\": 102400 bytes is less than 1 MiB, too small for one 256000-byte message and a few others; use at least 1m"),
        format!("{file}: intake \"Edge\": field \"allowed_sources\": \"10.0.0.300\" is not an IP address; write each network as ADDRESS/PREFIX, e.g. 10.0.0.0/8 or 2001:db8::/32"),
    ];
    for line in &expect {
        assert!(
            problems.contains(line),
            "missing:\n{line}\nin:\n{problems:#?}"
        );
    }
}

#[test]
fn an_empty_allow_list_is_refused() {
    let f = Fixture::new();
    let problems = f.problems(&with("  allowed_sources: []\n", "udp"));
    assert!(
        problems[0].contains("would refuse every sender"),
        "{problems:?}"
    );
}

#[test]
fn stream_limits_on_udp_are_ignored_with_a_warning_but_the_allow_list_applies() {
    let f = Fixture::new();
    let cfg = f.ok(&with(
        "  max_connections: 10\n  allowed_sources: 192.168.0.0/16\n",
        "udp",
    ));
    assert_eq!(
        cfg.intakes[0].limits.max_connections,
        IntakeLimits::default().max_connections
    );
    assert!(cfg.intakes[0]
        .limits
        .allowed_sources
        .allows("192.168.4.4".parse().unwrap()));
    let warnings: Vec<String> = cfg.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings[0].contains("field \"max_connections\": is ignored"),
        "{warnings:?}"
    );
}

#[test]
fn misspelt_limit_fields_suggest_the_right_name() {
    let f = Fixture::new();
    let cfg = f.ok(&with(
        "  allowed_source: [\"10.0.0.0/8\"]\n  max_conections: 5\n",
        "tcp",
    ));
    let warnings: Vec<String> = cfg.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("did you mean `allowed_sources`?")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("did you mean `max_connections`?")),
        "{warnings:?}"
    );
}

#[test]
fn proxy_protocol_is_read_on_tcp_and_tls_and_off_by_default() {
    let f = Fixture::new();
    assert!(!f.ok(&with("", "tcp")).intakes[0].limits.proxy_protocol);
    let text = with(
        "  proxy_protocol: yes\n  allowed_sources: [\"10.1.0.0/24\"]\n",
        "tcp",
    );
    let cfg = f.ok(&text);
    assert!(cfg.intakes[0].limits.proxy_protocol);
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn proxy_protocol_without_an_allow_list_warns_that_anyone_can_claim_an_address() {
    let f = Fixture::new();
    let cfg = f.ok(&with("  proxy_protocol: true\n", "tcp"));
    assert!(cfg.intakes[0].limits.proxy_protocol);
    let warnings: Vec<String> = cfg.warnings.iter().map(ToString::to_string).collect();
    let file = f.path("intakes.yaml").display().to_string();
    assert_eq!(
        warnings,
        [format!("{file}: intake \"Edge\": field \"proxy_protocol\": any host that can reach this port can claim any sender address in a PROXY header; add `allowed_sources` listing your load balancers' addresses (docs/hostile-networks.md)")]
    );
}

#[test]
fn proxy_protocol_on_udp_or_the_monitoring_entry_is_a_problem_naming_the_fix() {
    let f = Fixture::new();
    let file = f.path("intakes.yaml").display().to_string();
    let problems = f.problems(&with("  proxy_protocol: true\n", "udp"));
    assert_eq!(
        only(&problems),
        format!("{file}: intake \"Edge\": field \"proxy_protocol\": the PROXY protocol is for tcp and tls intakes; this one is udp; remove `proxy_protocol`; to keep UDP senders' addresses behind a balancer, use one that does not rewrite them (IPVS, a Kubernetes Service with externalTrafficPolicy: Local; docs/scale-out.md)")
    );
    let stats = format!(
        "intakes:\n{}- name: Monitoring\n  stats: true\n  intake_key: {K2}\n  proxy_protocol: on\n",
        entry("Edge", "tcp", "20516", K1)
    );
    assert_eq!(
        f.problems(&stats)[0],
        format!("{file}: intake \"Monitoring\": field \"proxy_protocol\": the monitoring entry (stats: true) receives no connections; remove `proxy_protocol`")
    );
    let bad = f.problems(&with("  proxy_protocol: maybe\n", "tcp"));
    assert_eq!(
        only(&bad),
        format!("{file}: intake \"Edge\": field \"proxy_protocol\": \"maybe\" is not a boolean; use true or false")
    );
}
