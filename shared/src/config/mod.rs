//! Configuration: flags and environment (`args`), `intakes.yaml` plus the extended files
//! (`intakes`), and their validation (`validate`), ending in one [`ForwarderConfig`].
//!
//! Who is on the other side: `run` and `check` call [`examine`] (settings and every intake
//! file in one pass: a bad setting hides no problem of the files), add their checks of the
//! machine to [`Examined::problems`], and take [`Examined::into_result`]: a valid
//! configuration, or every problem ([`ConfigErrors`]). The supervisor prints [`banner`] and
//! `warnings` and hands the configuration to its workers (every type here is
//! `Serialize`/`Deserialize` so it can travel to them). [`load`] does the same from
//! already resolved [`Settings`].
//!
//! Invariants of a loaded [`ForwarderConfig`] (`load` refuses to return one otherwise):
//! - every `Intake` has a valid protocol, a port in 1..=65535 that no other intake of the
//!   same port space uses (tcp and tls share the TCP space), an intake key whose first 16
//!   characters are ASCII letters or digits and that holds no `"`, `\`, `]` or control
//!   character, and a `queue_size` >= 1;
//! - `Intake::id` is the 0-based position among port intakes in load order (main file first,
//!   then the extended files sorted by name), so `intakes[i].id == i`;
//! - tls intakes have readable key and certificate files;
//! - at most one monitoring (`stats`) entry, and at least one entry overall.
//!
//! Every problem is collected, never only the first: the operator fixes the file once.

mod args;
mod banner;
mod entry;
mod intakes;
mod limits;
mod problem;
mod region;
mod route;
mod size;
mod tls_client;
mod tls_files;
mod validate;
mod yaml11;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use args::SettingsArgs;
pub use banner::banner;
pub use limits::IntakeLimits;
pub use problem::{ConfigErrors, Problem};
pub use region::{
    parse_endpoint, Destination, Output, Region, RegionError, RELP_PORT, UPLINK_PORT,
};
pub use size::{parse_size, SizeError};
pub use tls_client::{
    ClientAuth, TlsHandshake, DEFAULT_HANDSHAKE_TIMEOUT_SECS, DEFAULT_MAX_HANDSHAKES,
    MAX_HANDSHAKE_TIMEOUT_SECS,
};

/// How problems with `SEKOIA_CA_FILE` name the setting.
pub const CA_FILE_SETTING: &str = "--ca-file / SEKOIA_CA_FILE";

/// Everything that comes from flags and environment variables (SPEC §1), resolved and checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub config_path: PathBuf,
    pub memory_messages: u64,
    /// Disk budget in bytes.
    pub disk_space: u64,
    pub region: Region,
    /// Where the uplink connects: the region's intake host, or `ENDPOINT` for `OTHER`.
    pub destination: Destination,
    pub ca_file: Option<PathBuf>,
    pub spool_dir: PathBuf,
    pub certs_dir: PathBuf,
    pub extended_conf_dir: Option<PathBuf>,
    pub control_socket: PathBuf,
    pub stats_interval_secs: u64,
    pub stats_file: PathBuf,
    pub uplink_connections: usize,
    pub resolve_hostnames: bool,
    /// How long a new sender's first events wait for its name, in milliseconds (0: never).
    #[serde(default = "default_resolve_timeout_ms")]
    pub resolve_timeout_ms: u64,
    pub metrics_listen: Option<std::net::SocketAddr>,
}

fn default_resolve_timeout_ms() -> u64 {
    1_000
}

/// Transport of a port intake. `tcp` and `tls` share the TCP port space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Tls,
}

impl Protocol {
    /// Case-insensitive `tcp`, `udp` or `tls` (surrounding spaces ignored).
    pub fn parse(text: &str) -> Option<Protocol> {
        match text.trim().to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "tls" => Some(Protocol::Tls),
            _ => None,
        }
    }

    /// Lower-case name, as written in `intakes.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Tls => "tls",
        }
    }

    /// True for tcp and tls: they bind TCP sockets, so they cannot share a port.
    pub fn is_stream(self) -> bool {
        !matches!(self, Protocol::Udp)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Files of a tls intake, absolute (under `CERTS_DIR` unless the name was absolute), and
/// the handshake rules that use them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
    /// Checked only when `tls_ca_name` is given; the default (`server.crt`) may not exist.
    /// Clients are verified against it when `handshake.client_auth` is not `None` (which
    /// needs `tls_ca_name`).
    pub ca: PathBuf,
    #[serde(default)]
    pub handshake: TlsHandshake,
}

/// One listening intake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intake {
    /// Position among port intakes, 0-based, in load order.
    pub id: u16,
    pub name: String,
    /// `name` with spaces replaced by `_`, lower-cased.
    pub metric_name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub intake_key: String,
    pub debug: bool,
    pub queue_size: u64,
    /// Present exactly when `protocol` is `Tls`.
    pub tls: Option<TlsFiles>,
    /// Connection limits and who may send (`limits.rs`).
    #[serde(default)]
    pub limits: IntakeLimits,
    /// Where its events go: its `region`/`endpoint`, else `REGION`/`ENDPOINT` (`route.rs`).
    pub destination: Destination,
    /// The file the entry was read from.
    pub source: PathBuf,
}

/// The monitoring entry (`stats: true`): no port, its events are generated by the forwarder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsIntake {
    pub name: String,
    pub intake_key: String,
    pub queue_size: u64,
    /// How many port intakes come before it in load order (the banner prints it there).
    #[serde(default)]
    pub position: usize,
    /// Where its lines go (its own `region`/`endpoint`, else the global one).
    pub destination: Destination,
}

/// The whole validated configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwarderConfig {
    pub settings: Settings,
    pub intakes: Vec<Intake>,
    pub stats: Option<StatsIntake>,
    /// Things that do not stop the start (unknown fields, `*.conf` files...): print them.
    pub warnings: Vec<Problem>,
}

/// Read `settings.config_path` and the extended files, validate every entry and return the
/// configuration, or every problem found.
pub fn load(settings: Settings) -> Result<ForwarderConfig, ConfigErrors> {
    examine_files(settings).into_result()
}

/// What one pass over the settings and every intake file found, valid or not: `check` and
/// the start list all of it at once (a bad `REGION` does not hide a bad intake file), and
/// run their checks of the machine (ports, certificates, `/dev/shm`) on the intakes that
/// passed their own checks.
#[derive(Debug)]
pub struct Examined {
    /// The settings, a default standing in for each bad one, and the intakes whose entries
    /// passed their own checks. Valid (the invariants above hold) only when `problems` is
    /// empty.
    pub config: ForwarderConfig,
    /// Every problem found so far; callers add theirs before [`Examined::into_result`].
    pub problems: Vec<Problem>,
}

impl Examined {
    /// The configuration when nothing is wrong; otherwise every problem, then the warnings
    /// (they often explain a problem: `protcol` → "protocol is missing").
    pub fn into_result(self) -> Result<ForwarderConfig, ConfigErrors> {
        let Examined {
            config,
            mut problems,
        } = self;
        if problems.is_empty() {
            return Ok(config);
        }
        problems.extend(config.warnings.into_iter().map(|mut w| {
            w.what = format!("warning: {}", w.what);
            w
        }));
        Err(ConfigErrors(problems))
    }
}

/// Resolves the settings and reads every intake file, collecting every problem of both.
pub fn examine(args: &SettingsArgs) -> Examined {
    let (settings, mut problems) = args.resolve_lenient();
    let mut examined = examine_files(settings);
    problems.append(&mut examined.problems);
    examined.problems = problems;
    examined
}

/// [`examine`] for settings already resolved (a reload: they cannot change in a running
/// process).
pub fn examine_files(settings: Settings) -> Examined {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    check_settings_files(&settings, &mut problems);

    let mut loaded = intakes::read_main(&settings.config_path);
    if let Some(dir) = &settings.extended_conf_dir {
        loaded.append(intakes::read_extended(dir, &settings.config_path));
    }
    problems.append(&mut loaded.problems);
    warnings.append(&mut loaded.warnings);
    if loaded.entries.is_empty() && loaded.main_readable {
        problems.push(Problem::in_file(
            &settings.config_path,
            "no intake is defined",
            "add at least one entry under `intakes:`",
        ));
    }

    let built = validate::build(&loaded.entries, &settings);
    problems.extend(built.problems);
    warnings.extend(built.warnings);
    Examined {
        config: ForwarderConfig {
            settings,
            intakes: built.intakes,
            stats: built.stats,
            warnings,
        },
        problems,
    }
}

/// Files named by settings rather than by `intakes.yaml`.
fn check_settings_files(settings: &Settings, problems: &mut Vec<Problem>) {
    if let Some(ca) = &settings.ca_file {
        if let Err(e) = std::fs::File::open(ca) {
            problems.push(Problem::setting(
                CA_FILE_SETTING,
                format!("{} cannot be read: {e}", ca.display()),
                "point it to a readable PEM file, or unset it to trust the system roots only",
            ));
        }
    }
    if let Some(dir) = &settings.extended_conf_dir {
        if !is_dir(dir) {
            problems.push(Problem::setting(
                "--extended-conf / EXTENDED_CONF_DIR",
                format!("{} is not a readable directory", dir.display()),
                "create the directory or unset the setting",
            ));
        }
    }
}

fn is_dir(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false)
}

impl ForwarderConfig {
    /// Each destination with the names of the entries sent there (the monitoring entry
    /// included), the global destination first; two spellings of one place are one.
    pub fn destinations(&self) -> Vec<(Destination, Vec<String>)> {
        let mut out: Vec<(Destination, Vec<String>)> = Vec::new();
        let entries = self
            .intakes
            .iter()
            .map(|i| (&i.destination, i.name.clone()))
            .chain(self.stats.iter().map(|s| (&s.destination, s.name.clone())));
        for (destination, name) in entries {
            match out.iter_mut().find(|(d, _)| d.same_place(destination)) {
                Some((_, names)) => names.push(name),
                None => out.push((destination.clone(), vec![name])),
            }
        }
        out.sort_by_key(|(d, _)| !d.same_place(&self.settings.destination));
        out
    }
}

/// `name` as used in metric names: spaces become `_`, lower-cased.
pub fn metric_name(name: &str) -> String {
    name.replace(' ', "_").to_lowercase()
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
