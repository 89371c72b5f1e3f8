//! `SettingsArgs::resolve`: defaults, environment, flags and every bad setting.

use super::*;
use clap::Parser;
use std::sync::{Mutex, MutexGuard};

/// Every test that parses holds this lock: clap reads the process environment, and one
/// test sets variables.
static ENV_LOCK: Mutex<()> = Mutex::new(());

const VARS: [&str; 18] = [
    "RELP_OUTPUT",
    "RELP_WINDOW",
    "SEKOIA_CONFIG",
    "MEMORY_MESSAGES",
    "DISK_SPACE",
    "REGION",
    "ENDPOINT",
    "SEKOIA_CA_FILE",
    "SPOOL_DIR",
    "CERTS_DIR",
    "EXTENDED_CONF_DIR",
    "CONTROL_SOCKET",
    "STATS_INTERVAL",
    "STATS_FILE",
    "UPLINK_CONNECTIONS",
    "RESOLVE_HOSTNAMES",
    "RESOLVE_TIMEOUT_MS",
    "METRICS_LISTEN",
];

/// Holds the lock with a clean environment (only `set`), restored on drop.
struct Env {
    saved: Vec<(&'static str, Option<std::ffi::OsString>)>,
    _lock: MutexGuard<'static, ()>,
}

impl Env {
    fn with(set: &[(&'static str, &str)]) -> Env {
        let lock = ENV_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let saved = VARS.iter().map(|v| (*v, std::env::var_os(v))).collect();
        for var in VARS {
            std::env::remove_var(var);
        }
        for (var, value) in set {
            std::env::set_var(var, value);
        }
        Env { saved, _lock: lock }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (var, value) in &self.saved {
            match value {
                Some(v) => std::env::set_var(var, v),
                None => std::env::remove_var(var),
            }
        }
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    settings: SettingsArgs,
}

fn parse(argv: &[&str]) -> SettingsArgs {
    let argv = std::iter::once("sekoia-forwarder").chain(argv.iter().copied());
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli.settings,
        Err(e) => panic!("arguments do not parse: {e}"),
    }
}

fn resolve(argv: &[&str]) -> Result<Settings, ConfigErrors> {
    parse(argv).resolve_with(None)
}

fn problems(argv: &[&str]) -> Vec<String> {
    match resolve(argv) {
        Ok(_) => panic!("{argv:?} should be refused"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn defaults_match_the_spec() {
    let _env = Env::with(&[]);
    let s = match resolve(&[]) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        s.config_path,
        PathBuf::from("/etc/sekoia-forwarder/intakes.yaml")
    );
    assert_eq!(s.memory_messages, 100_000);
    assert_eq!(s.disk_space, 32 << 30);
    assert_eq!(s.region, Region::Fra1);
    assert_eq!(s.destination.to_string(), "intake.sekoia.io:10514");
    assert_eq!(s.ca_file, None);
    assert_eq!(s.spool_dir, PathBuf::from("/var/spool/sekoia-forwarder"));
    assert_eq!(s.certs_dir, PathBuf::from("/certs"));
    assert_eq!(
        s.control_socket,
        PathBuf::from("/run/sekoia-forwarder/control.sock")
    );
    assert_eq!(s.stats_interval_secs, 300);
    assert_eq!(
        s.stats_file,
        PathBuf::from("/var/log/sekoia-forwarder/stats.log")
    );
    assert_eq!(s.uplink_connections, 2);
    assert!(s.resolve_hostnames);
    assert_eq!(s.resolve_timeout_ms, 1_000);
    assert_eq!(s.metrics_listen, None);
}

#[test]
fn environment_is_read_and_flags_beat_it() {
    let _env = Env::with(&[
        ("REGION", "FRA2"),
        ("MEMORY_MESSAGES", "2000000"),
        ("DISK_SPACE", "180g"),
        ("SEKOIA_CONFIG", "/intakes.yaml"),
        ("UPLINK_CONNECTIONS", "4"),
    ]);
    let s = match resolve(&["--region", "usa1", "--disk-space", "180G"]) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(s.region, Region::Usa1, "flag beats REGION");
    assert_eq!(s.disk_space, 180_000_000_000, "flag beats DISK_SPACE");
    assert_eq!(s.memory_messages, 2_000_000, "environment beats default");
    assert_eq!(s.config_path, PathBuf::from("/intakes.yaml"));
    assert_eq!(s.uplink_connections, 4);
}

#[test]
fn no_resolve_flag_beats_resolve_hostnames_variable() {
    let _env = Env::with(&[("RESOLVE_HOSTNAMES", "true")]);
    assert!(!resolve(&["--no-resolve"])
        .map(|s| s.resolve_hostnames)
        .unwrap_or(true));
    assert!(resolve(&[]).map(|s| s.resolve_hostnames).unwrap_or(false));
}

#[test]
fn resolve_hostnames_accepts_common_boolean_words() {
    let _env = Env::with(&[]);
    for (text, expected) in [
        ("false", false),
        ("No", false),
        ("0", false),
        ("off", false),
        ("YES", true),
        ("1", true),
    ] {
        let got = resolve(&["--resolve-hostnames", text]).map(|s| s.resolve_hostnames);
        assert_eq!(got.ok(), Some(expected), "{text}");
    }
    assert!(problems(&["--resolve-hostnames", "maybe"])[0].contains("RESOLVE_HOSTNAMES"));
}

#[test]
fn resolve_timeout_is_milliseconds_from_zero_to_the_maximum() {
    let _env = Env::with(&[("RESOLVE_TIMEOUT_MS", "250")]);
    assert_eq!(resolve(&[]).map(|s| s.resolve_timeout_ms).ok(), Some(250));
    let flag = resolve(&["--resolve-timeout", "0"]).map(|s| s.resolve_timeout_ms);
    assert_eq!(flag.ok(), Some(0), "the flag wins; 0 never waits");
    let max = MAX_RESOLVE_TIMEOUT_MS.to_string();
    let at_max = resolve(&["--resolve-timeout", &max]).map(|s| s.resolve_timeout_ms);
    assert_eq!(at_max.ok(), Some(MAX_RESOLVE_TIMEOUT_MS));
    for bad in ["-1", "1s", "", "30001", "1.5"] {
        let arg = format!("--resolve-timeout={bad}");
        let found = problems(&[&arg]);
        assert!(found[0].contains("RESOLVE_TIMEOUT_MS"), "{bad}: {found:?}");
    }
}

#[test]
fn other_region_uses_endpoint_with_default_port() {
    let _env = Env::with(&[("ENDPOINT", "[::1]:6514")]);
    let s = resolve(&["--region", "OTHER"]).map(|s| s.destination.to_string());
    assert_eq!(s.ok().as_deref(), Some("[::1]:6514"));
    let s = resolve(&["--region", "other", "--endpoint", "relay.example"]).map(|s| s.destination);
    assert_eq!(
        s.ok().map(|d| (d.host, d.port)),
        Some(("relay.example".to_string(), 10514))
    );
}

#[test]
fn other_region_without_endpoint_is_refused() {
    let _env = Env::with(&[]);
    let p = problems(&["--region", "OTHER"]);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("setting --region / REGION: region OTHER needs an endpoint"),
        "{}",
        p[0]
    );
}

#[test]
fn unknown_region_is_refused_with_the_list_of_regions() {
    let _env = Env::with(&[]);
    let p = problems(&["--region", "PAR1"]);
    assert!(p[0].contains("\"PAR1\" is not a known region"), "{}", p[0]);
    assert!(
        p[0].contains("FRA1, FRA2, MCO1, UAE1, USA1, SGP1, OTHER"),
        "{}",
        p[0]
    );
}

#[test]
fn every_bad_setting_is_listed_at_once() {
    let _env = Env::with(&[("METRICS_LISTEN", "localhost")]);
    let p = problems(&[
        "--memory-messages",
        "lots",
        "--disk-space",
        "10x",
        "--region",
        "OTHER",
        "--endpoint",
        "relay:0",
        "--stats-interval",
        "0",
        "--uplink-connections",
        "0",
    ]);
    let joined = p.join("\n");
    assert_eq!(p.len(), 6, "{joined}");
    for setting in [
        "MEMORY_MESSAGES",
        "DISK_SPACE",
        "ENDPOINT",
        "STATS_INTERVAL",
        "UPLINK_CONNECTIONS",
        "METRICS_LISTEN",
    ] {
        assert!(joined.contains(setting), "{setting} missing from {joined}");
    }
}

#[test]
fn metrics_listen_takes_ipv4_and_ipv6_socket_addresses() {
    let _env = Env::with(&[]);
    let a = resolve(&["--metrics-listen", "127.0.0.1:9100"]).map(|s| s.metrics_listen);
    assert_eq!(a.ok().flatten().map(|a| a.port()), Some(9100));
    let b = resolve(&["--metrics-listen", "[::1]:9100"]).map(|s| s.metrics_listen);
    assert!(b.ok().flatten().is_some_and(|a| a.is_ipv6()));
}

#[test]
fn numbers_accept_digit_separators() {
    let _env = Env::with(&[]);
    let s = resolve(&["--memory-messages", "2_000_000"]).map(|s| s.memory_messages);
    assert_eq!(s.ok(), Some(2_000_000));
}

#[test]
fn lenient_resolve_lists_a_bad_region_and_keeps_every_other_setting() {
    let _env = Env::with(&[]);
    let (s, problems) = parse(&["--region", "MARS1", "--memory-messages", "7"])
        .resolve_lenient_with(Some(PathBuf::from("/ext")));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].to_string().contains("MARS1"), "{problems:?}");
    // FRA1 stands in only so that the intake files can be checked in the same pass.
    assert_eq!(s.region, Region::Fra1);
    assert_eq!(s.memory_messages, 7);
    assert_eq!(s.extended_conf_dir, Some(PathBuf::from("/ext")));
}

#[test]
fn relp_output_is_off_by_default_and_when_empty() {
    let _env = Env::with(&[("RELP_OUTPUT", "")]);
    let s = resolve(&[]).map(|s| s.destination.output);
    assert_eq!(s.ok(), Some(Output::Tls));
}

#[test]
fn any_relp_output_value_turns_relp_on_even_false_as_in_the_reference() {
    for value in ["1", "true", "false", "0", "no"] {
        let _env = Env::with(&[("RELP_OUTPUT", value)]);
        let d = resolve(&[]).map(|s| s.destination).ok();
        assert_eq!(
            d.map(|d| (d.host, d.port, d.output)),
            Some((
                "relp.intake.sekoia.io".to_string(),
                11514,
                Output::Relp { window: 128 }
            )),
            "RELP_OUTPUT={value}"
        );
    }
}

#[test]
fn relp_flag_and_window_are_read() {
    let _env = Env::with(&[("RELP_WINDOW", "16")]);
    let d = resolve(&["--relp-output", "--region", "sgp1"]).map(|s| s.destination);
    assert_eq!(
        d.map(|d| d.describe()).ok().as_deref(),
        Some("relp.intake.sgp1.sekoia.io:11514 over RELP (TLS, window 16)")
    );
}

#[test]
fn a_bad_relp_window_is_refused_naming_the_setting() {
    for bad in ["0", "x", "70000"] {
        let _env = Env::with(&[("RELP_OUTPUT", "yes"), ("RELP_WINDOW", bad)]);
        let found = problems(&[]);
        assert!(
            found
                .iter()
                .any(|p| p.contains("--relp-window / RELP_WINDOW")),
            "{bad}: {found:?}"
        );
    }
}
