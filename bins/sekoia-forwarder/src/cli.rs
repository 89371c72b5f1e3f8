//! Command line: the public `run` and `check` commands and the hidden worker commands.
//!
//! The settings flags (`--config`, `--region`, ...) and their environment variables live in
//! the library's `config::SettingsArgs`; this module only adds the commands around them and
//! turns configuration problems into the listing and exit status operators see.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sekoia_shared::config::{self, ForwarderConfig, SettingsArgs};
use sekoia_shared::{input, uplink};

use crate::run_as::RunAs;

/// Exit status for an invalid configuration (nothing was bound).
pub const EXIT_BAD_CONFIG: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "sekoia-forwarder",
    version,
    about = "Syslog concentrator forwarding to Sekoia.io",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the forwarder (the default when no command is given).
    Run(RunArgs),
    /// Validate the configuration, certificates and settings; exit 0 or list every problem.
    Check(CheckArgs),
    #[command(hide = true)]
    IngestWorker(IngestWorkerArgs),
    #[command(hide = true)]
    UplinkWorker(UplinkWorkerArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Accepted so that `check` takes the same command line as `run`.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Where the supervisor keeps its shared-memory state, and who its workers run as.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// User the workers run as when the forwarder starts as root (the supervisor keeps root
    /// to hold the ports). Unset: every process keeps the user it was started as.
    #[arg(long = "user", env = "RUN_AS_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// Directory for the shared-memory rings (tmpfs). One sub-directory per spool directory,
    /// so a supervisor restarted after a crash finds and drains the rings of its predecessor.
    #[arg(long, env = "SHM_DIR", default_value = "/dev/shm/sekoia-forwarder")]
    pub shm_dir: PathBuf,
    /// When the disk journal is fsync'ed: `batch` (at most every second, on every segment
    /// roll and at stop: a power cut can cost the last second) or `always` (after every
    /// write: nothing acknowledged to the journal is lost, at a throughput cost).
    #[arg(long, env = "JOURNAL_SYNC", value_enum, default_value_t = JournalSync::Batch)]
    pub journal_sync: JournalSync,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalSync {
    Batch,
    Always,
}

impl JournalSync {
    pub fn as_arg(self) -> &'static str {
        match self {
            JournalSync::Batch => "batch",
            JournalSync::Always => "always",
        }
    }
}

/// Hidden: one ingest worker, serving one intake on the socket inherited as fd 3.
#[derive(Args, Debug)]
pub struct IngestWorkerArgs {
    /// The instance state directory written by the supervisor.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Which intake (its `id`) this worker serves.
    #[arg(long)]
    pub intake_id: u16,
    #[arg(long, value_enum, default_value_t = JournalSync::Batch)]
    pub journal_sync: JournalSync,
}

/// Hidden: the uplink worker, draining every ring of the state directory.
#[derive(Args, Debug)]
pub struct UplinkWorkerArgs {
    #[arg(long)]
    pub state_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = JournalSync::Batch)]
    pub journal_sync: JournalSync,
}

/// Resolves settings and the workers' user, loads the intake files and every certificate the
/// workers will need, printing every problem on failure (before anything is bound or started).
pub fn load_config(
    args: &SettingsArgs,
    runtime: &RuntimeArgs,
) -> Result<(ForwarderConfig, Option<RunAs>), ExitCode> {
    let settings = args.resolve().map_err(|e| bad_config(&e))?;
    let run_as = RunAs::resolve(runtime.user.as_deref());
    let cfg = match config::load(settings) {
        Ok(cfg) => cfg,
        Err(mut errors) => {
            errors.0.extend(run_as.err());
            return Err(bad_config(&errors));
        }
    };
    let (run_as, mut problems) = match run_as {
        Ok(run_as) => (run_as, Vec::new()),
        Err(problem) => (None, vec![problem]),
    };
    problems.extend(environment_problems(&cfg, run_as.as_ref()));
    if !problems.is_empty() {
        return Err(bad_config(&config::ConfigErrors(problems)));
    }
    for warning in &cfg.warnings {
        eprintln!("warning: {warning}");
    }
    Ok((cfg, run_as))
}

/// Checks what the workers will need from the machine: the TLS intakes' key pairs, the
/// uplink's trust store, a writable spool directory; with a workers' user, that this user
/// can read the files and use the spool folder.
fn environment_problems(cfg: &ForwarderConfig, run_as: Option<&RunAs>) -> Vec<config::Problem> {
    let mut problems = Vec::new();
    let spool = &cfg.settings.spool_dir;
    if let Err(e) = spool_usable(spool) {
        problems.push(config::Problem::setting(
            "--spool-dir / SPOOL_DIR",
            format!("{} cannot be used: {e}", spool.display()),
            "create it and give the forwarder's user write access, or point SPOOL_DIR elsewhere",
        ));
    }
    for intake in &cfg.intakes {
        let Some(files) = &intake.tls else { continue };
        match input::load_server_tls(files) {
            Err(e @ input::InputError::ClientCa { .. }) => {
                problems.push(config::Problem::in_entry(
                    &intake.source,
                    &intake.name,
                    Some("tls_ca_name"),
                    format!("the client CA cannot be used: {e}"),
                    "name a PEM file holding the CA certificate(s) that signed the clients' certificates",
                ));
            }
            Err(e) => problems.push(config::Problem::in_entry(
                &intake.source,
                &intake.name,
                Some("tls_key_name"),
                format!("the TLS key pair cannot be used: {e}"),
                "give a PEM certificate and its matching private key (RSA, EC or PKCS#8) in CERTS_DIR",
            )),
            Ok(_) => {}
        }
        for (field, path) in [("tls_key_name", &files.key), ("tls_cert_name", &files.cert)] {
            if let Some(what) = run_as.and_then(|u| u.unreadable(path)) {
                let fix = run_as.map(|u| u.read_fix(path)).unwrap_or_default();
                problems.push(config::Problem::in_entry(
                    &intake.source,
                    &intake.name,
                    Some(field),
                    what,
                    fix,
                ));
            }
        }
    }
    if let Err(e) = uplink::client_config(cfg.settings.ca_file.as_deref()) {
        problems.push(config::Problem::setting(
            "--ca-file / SEKOIA_CA_FILE",
            format!("the uplink trust store cannot be built: {e}"),
            "give a readable PEM file with the CA certificate(s) of the destination",
        ));
    }
    if let Some(run_as) = run_as {
        problems.extend(run_as.spool_problems(spool));
        if let Some(ca) = &cfg.settings.ca_file {
            if let Some(what) = run_as.unreadable(ca) {
                problems.push(config::Problem::setting(
                    "--ca-file / SEKOIA_CA_FILE",
                    what,
                    run_as.read_fix(ca),
                ));
            }
        }
    }
    problems
}

fn bad_config(errors: &config::ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    eprintln!("sekoia-forwarder: configuration rejected, nothing was started");
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// `sekoia-forwarder check`: load and validate everything, bind nothing.
pub fn check(args: &SettingsArgs, runtime: &RuntimeArgs) -> ExitCode {
    match load_config(args, runtime) {
        Ok((cfg, run_as)) => {
            println!(
                "configuration OK: {} intake(s){}, destination {}{}",
                cfg.intakes.len(),
                if cfg.stats.is_some() {
                    " + a monitoring entry (its reports are not sent yet)"
                } else {
                    ""
                },
                cfg.settings.destination.describe(),
                run_as.map_or(String::new(), |u| format!(", workers run as {}", u.name))
            );
            warn_if_disk_space_exceeds_fs(&cfg.settings.spool_dir, cfg.settings.disk_space);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `check`: a warning (not an error) when `DISK_SPACE` is more than the spool's file system
/// can hold; the forwarder then limits its disk queue to what it can hold.
fn warn_if_disk_space_exceeds_fs(spool: &std::path::Path, disk_space: u64) {
    use sekoia_shared::queue::{scan_usage, FsRoom};
    let Ok(room) = FsRoom::of(spool) else {
        return;
    };
    let holds = room.room_for_journals(scan_usage(spool).unwrap_or(0));
    if disk_space > holds {
        eprintln!(
            "warning: DISK_SPACE ({disk_space} bytes) is more than the file system of SPOOL_DIR ({}) can hold: {holds} bytes ({} free, minus a reserve of {}); the forwarder will queue at most that much on disk",
            spool.display(),
            room.available,
            room.reserve
        );
    }
}

/// Whether `dir` can be the spool, without changing anything on disk (`check` must not): an
/// existing folder must be writable and searchable; a missing one needs its nearest existing
/// parent to be, since the forwarder creates it at start.
fn spool_usable(dir: &std::path::Path) -> Result<(), String> {
    use nix::unistd::{access, AccessFlags};
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(meta) if meta.is_dir() => {
                return access(at, AccessFlags::W_OK | AccessFlags::X_OK)
                    .map_err(|e| format!("{} is not writable: {e}", at.display()));
            }
            Ok(_) => return Err(format!("{} is not a directory", at.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                _ => return Err(format!("no existing folder above {}", dir.display())),
            },
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
}
