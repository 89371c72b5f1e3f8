//! Settings from flags and environment variables (SPEC §1): a flag wins over its variable,
//! which wins over the default (clap's `env`). Values are taken as text and checked by
//! [`SettingsArgs::resolve`], so every bad setting is reported at once, naming both the flag
//! and the variable, instead of clap stopping at the first one.
//!
//! `--no-resolve` turns reverse DNS off; without it `RESOLVE_HOSTNAMES` (true/false, yes/no,
//! on/off, 1/0) decides, true by default. `--resolve-timeout` / `RESOLVE_TIMEOUT_MS` is how
//! long, in milliseconds, a new sender's first events wait for its name (0 to
//! [`MAX_RESOLVE_TIMEOUT_MS`], default 1000; 0 never waits). `EXTENDED_CONF_DIR` defaults to `/extended_conf`
//! only when that directory exists.
//!
//! `RELP_OUTPUT` (`--relp-output`) switches the uplink to RELP like the reference: **any
//! non-empty value turns it on, "false" and "0" included**, because that is what the reference
//! image does and a user moving from it must keep the output they had (`docs/compatibility.md`);
//! `check` prints the output in use. `RELP_WINDOW` (`--relp-window`, 1 to [`MAX_RELP_WINDOW`],
//! default 128 like rsyslog's omrelp) bounds the unanswered events per connection.

use std::path::{Path, PathBuf};

use crate::config::problem::{ConfigErrors, Problem};
use crate::config::region::{Destination, Output, Region, UPLINK_PORT};
use crate::config::size::parse_size;
use crate::config::Settings;

const DEFAULT_EXTENDED_CONF: &str = "/extended_conf";
/// Longest `--resolve-timeout`: a TCP connection's first frames wait that long at most.
pub const MAX_RESOLVE_TIMEOUT_MS: u64 = 30_000;
/// Largest `--relp-window`: unanswered events per RELP connection.
pub const MAX_RELP_WINDOW: u32 = 65_536;

/// Flags of SPEC §1; flatten into the binary's subcommands with `#[command(flatten)]`.
#[derive(clap::Args, Debug, Clone)]
pub struct SettingsArgs {
    /// Intake file.
    #[arg(
        long = "config",
        env = "SEKOIA_CONFIG",
        value_name = "PATH",
        default_value = "/etc/sekoia-forwarder/intakes.yaml"
    )]
    pub config: PathBuf,
    /// Memory budget, in messages, shared by the intakes without a queue_size.
    #[arg(
        long,
        env = "MEMORY_MESSAGES",
        value_name = "N",
        default_value = "100000"
    )]
    pub memory_messages: String,
    /// Disk budget: 32g = 32·1024³ bytes, 32G = 32·10⁹ bytes (k m g t).
    #[arg(long, env = "DISK_SPACE", value_name = "SIZE", default_value = "32g")]
    pub disk_space: String,
    /// FRA1, FRA2, MCO1, UAE1, USA1, SGP1 or OTHER (then --endpoint is required).
    #[arg(long, env = "REGION", value_name = "R", default_value = "FRA1")]
    pub region: String,
    /// Destination when the region is OTHER; port 10514 if absent.
    #[arg(long, env = "ENDPOINT", value_name = "HOST[:PORT]")]
    pub endpoint: Option<String>,
    /// Extra trusted CA (PEM) for the uplink; the system roots are always trusted.
    #[arg(long, env = "SEKOIA_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Spool (queue) directory.
    #[arg(
        long,
        env = "SPOOL_DIR",
        value_name = "PATH",
        default_value = "/var/spool/sekoia-forwarder"
    )]
    pub spool_dir: PathBuf,
    /// Directory of the TLS input keys and certificates.
    #[arg(long, env = "CERTS_DIR", value_name = "PATH", default_value = "/certs")]
    pub certs_dir: PathBuf,
    /// Directory of extra intake files (*.yaml); default /extended_conf when it exists.
    #[arg(long = "extended-conf", env = "EXTENDED_CONF_DIR", value_name = "PATH")]
    pub extended_conf: Option<PathBuf>,
    /// Control socket of sekoia-ctl.
    #[arg(
        long,
        env = "CONTROL_SOCKET",
        value_name = "PATH",
        default_value = crate::control::DEFAULT_SOCKET
    )]
    pub control_socket: PathBuf,
    /// Seconds between two statistics reports.
    #[arg(
        long = "stats-interval",
        env = "STATS_INTERVAL",
        value_name = "S",
        default_value = "300"
    )]
    pub stats_interval: String,
    /// Local statistics log.
    #[arg(
        long,
        env = "STATS_FILE",
        value_name = "PATH",
        default_value = "/var/log/sekoia-forwarder/stats.log"
    )]
    pub stats_file: PathBuf,
    /// Send over RELP (port 11514, host relp.<endpoint>): any non-empty value turns it on,
    /// even "false", as in the reference image.
    #[arg(
        long = "relp-output",
        env = "RELP_OUTPUT",
        value_name = "ANY",
        num_args = 0..=1,
        default_missing_value = "on"
    )]
    pub relp_output: Option<String>,
    /// RELP events per connection waiting for their acknowledgement.
    #[arg(
        long = "relp-window",
        env = "RELP_WINDOW",
        value_name = "N",
        default_value = "128"
    )]
    pub relp_window: String,
    /// TLS connections to the destination.
    #[arg(
        long,
        env = "UPLINK_CONNECTIONS",
        value_name = "N",
        default_value = "2"
    )]
    pub uplink_connections: String,
    /// Do not resolve the names of senders whose messages carry no hostname.
    #[arg(long = "no-resolve")]
    pub no_resolve: bool,
    /// Reverse DNS (true/false); `--no-resolve` wins.
    #[arg(
        long = "resolve-hostnames",
        env = "RESOLVE_HOSTNAMES",
        value_name = "BOOL",
        hide = true
    )]
    pub resolve_hostnames: Option<String>,
    /// Milliseconds a new sender's first events wait for its name (0: never wait).
    #[arg(
        long = "resolve-timeout",
        env = "RESOLVE_TIMEOUT_MS",
        value_name = "MS",
        default_value = "1000"
    )]
    pub resolve_timeout: String,
    /// Prometheus exposition address, e.g. 127.0.0.1:9100 (off when unset).
    #[arg(long, env = "METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

impl SettingsArgs {
    /// Check every value and build [`Settings`]; every bad value is reported.
    pub fn resolve(&self) -> Result<Settings, ConfigErrors> {
        let extended = self.extended_conf.clone().or_else(|| {
            let default = Path::new(DEFAULT_EXTENDED_CONF);
            default.is_dir().then(|| default.to_path_buf())
        });
        self.resolve_with(extended)
    }

    /// `resolve` with the extended directory already decided (tests avoid `/extended_conf`).
    pub(crate) fn resolve_with(
        &self,
        extended_conf_dir: Option<PathBuf>,
    ) -> Result<Settings, ConfigErrors> {
        let (settings, problems) = self.resolve_lenient_with(extended_conf_dir);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Every bad value reported, with the default standing in for it (`FRA1` for a bad
    /// region or endpoint), so that the intake files can still be checked in the same pass.
    pub(crate) fn resolve_lenient(&self) -> (Settings, Vec<Problem>) {
        let extended = self.extended_conf.clone().or_else(|| {
            let default = Path::new(DEFAULT_EXTENDED_CONF);
            default.is_dir().then(|| default.to_path_buf())
        });
        self.resolve_lenient_with(extended)
    }

    fn resolve_lenient_with(&self, extended_conf_dir: Option<PathBuf>) -> (Settings, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut bad = |setting: &str, what: String, fix: &str| {
            problems.push(Problem::setting(setting, what, fix))
        };

        let memory_messages = match positive(&self.memory_messages) {
            Some(n) => n,
            None => {
                let what = format!(
                    "\"{}\" is not a whole number of at least 1",
                    self.memory_messages
                );
                bad(
                    "--memory-messages / MEMORY_MESSAGES",
                    what,
                    "use a number of messages, e.g. 2000000",
                );
                0
            }
        };
        let disk_space = parse_size(&self.disk_space).unwrap_or_else(|e| {
            bad(
                "--disk-space / DISK_SPACE",
                e.to_string(),
                "use a size such as 180g (binary) or 180G (decimal)",
            );
            0
        });
        let output = match self.relp_output.as_deref() {
            None | Some("") => Output::Tls,
            Some(_) => {
                let window = positive(&self.relp_window)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n <= MAX_RELP_WINDOW)
                    .unwrap_or_else(|| {
                        let what = format!(
                            "\"{}\" is not a whole number from 1 to {MAX_RELP_WINDOW}",
                            self.relp_window
                        );
                        bad(
                            "--relp-window / RELP_WINDOW",
                            what,
                            "use a number of events, e.g. 128 (rsyslog's default)",
                        );
                        1
                    });
                Output::Relp { window }
            }
        };
        let region = Region::parse(&self.region);
        let destination = match region {
            Ok(region) => region
                .destination(self.endpoint.as_deref(), output)
                .map_err(|e| {
                    let (setting, fix) = if self
                        .endpoint
                        .as_deref()
                        .is_some_and(|e| !e.trim().is_empty())
                    {
                        (
                            "--endpoint / ENDPOINT",
                            "write it HOST[:PORT], e.g. relay.example:10514 or [2001:db8::1]:10514",
                        )
                    } else {
                        (
                        "--region / REGION",
                        "set --endpoint / ENDPOINT to HOST[:PORT], or choose a Sekoia.io region",
                    )
                    };
                    bad(setting, e.to_string(), fix);
                }),
            Err(ref e) => {
                let fix = format!(
                    "use one of {} (EUA1 is accepted for UAE1)",
                    Region::known_names()
                );
                bad("--region / REGION", e.to_string(), &fix);
                Err(())
            }
        };
        let stats_interval_secs = positive(&self.stats_interval).unwrap_or_else(|| {
            let what = format!(
                "\"{}\" is not a whole number of seconds of at least 1",
                self.stats_interval
            );
            bad(
                "--stats-interval / STATS_INTERVAL",
                what,
                "use a number of seconds, e.g. 300",
            );
            0
        });
        let uplink_connections = positive(&self.uplink_connections)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or_else(|| {
                let what = format!(
                    "\"{}\" is not a whole number of at least 1",
                    self.uplink_connections
                );
                bad(
                    "--uplink-connections / UPLINK_CONNECTIONS",
                    what,
                    "use a small number, e.g. 2",
                );
                0
            });
        let resolve_hostnames = if self.no_resolve {
            false
        } else {
            match self.resolve_hostnames.as_deref().map(parse_bool) {
                None => true,
                Some(Some(b)) => b,
                Some(None) => {
                    let what = format!(
                        "\"{}\" is not a boolean",
                        self.resolve_hostnames.as_deref().unwrap_or("")
                    );
                    bad(
                        "--no-resolve / RESOLVE_HOSTNAMES",
                        what,
                        "use true or false (or pass --no-resolve)",
                    );
                    true
                }
            }
        };
        let resolve_timeout_ms = resolve_timeout_ms(&self.resolve_timeout).unwrap_or_else(|| {
            let what = format!(
                "\"{}\" is not a whole number of milliseconds from 0 to {MAX_RESOLVE_TIMEOUT_MS}",
                self.resolve_timeout
            );
            bad(
                "--resolve-timeout / RESOLVE_TIMEOUT_MS",
                what,
                "use a number of milliseconds, e.g. 1000 (0: never wait for a name)",
            );
            0
        });
        let metrics_listen = match self
            .metrics_listen
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(text) => match text.parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    let what = format!("\"{text}\" is not a socket address");
                    bad(
                        "--metrics-listen / METRICS_LISTEN",
                        what,
                        "use IP:PORT, e.g. 127.0.0.1:9100 or [::1]:9100",
                    );
                    None
                }
            },
        };

        let (region, destination) = match (region, destination) {
            (Ok(region), Ok(destination)) => (region, destination),
            // Reported above; FRA1 only stands in so that the rest can be checked.
            _ => {
                let fallback = Region::Fra1
                    .destination(None, output)
                    .unwrap_or(Destination {
                        host: String::new(),
                        port: UPLINK_PORT,
                        output,
                    });
                (Region::Fra1, fallback)
            }
        };
        let settings = Settings {
            config_path: self.config.clone(),
            memory_messages,
            disk_space,
            region,
            destination,
            ca_file: self.ca_file.clone(),
            spool_dir: self.spool_dir.clone(),
            certs_dir: self.certs_dir.clone(),
            extended_conf_dir,
            control_socket: self.control_socket.clone(),
            stats_interval_secs,
            stats_file: self.stats_file.clone(),
            uplink_connections,
            resolve_hostnames,
            resolve_timeout_ms,
            metrics_listen,
        };
        (settings, problems)
    }
}

/// A whole number >= 1 (spaces and `_` separators allowed).
fn positive(text: &str) -> Option<u64> {
    let cleaned = text.trim().replace('_', "");
    if cleaned.is_empty() || !cleaned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    cleaned.parse().ok().filter(|n| *n >= 1)
}

/// A whole number of milliseconds from 0 to [`MAX_RESOLVE_TIMEOUT_MS`].
fn resolve_timeout_ms(text: &str) -> Option<u64> {
    let cleaned = text.trim().replace('_', "");
    if cleaned.is_empty() || !cleaned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    cleaned
        .parse()
        .ok()
        .filter(|ms| *ms <= MAX_RESOLVE_TIMEOUT_MS)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
