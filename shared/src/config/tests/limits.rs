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
