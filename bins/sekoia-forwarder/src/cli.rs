//! Command line: the public `run` and `check` commands and the hidden worker commands.
//!
//! The settings flags (`--config`, `--region`, ...) and their environment variables live in
//! the library's `config::SettingsArgs`; this module only adds the commands around them and
//! turns configuration problems into the listing and exit status operators see.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sekoia_shared::config::{self, ForwarderConfig, SettingsArgs};
pub use sekoia_shared::control::worker_spec::JournalSync;
use sekoia_shared::{input, uplink};

use crate::run_as::RunAs;

/// Exit status when the configuration is rejected (nothing was bound or started), by `run`
/// and `check` alike. The others: 0 OK, 1 a failure while running (or `check --connect`
/// could not reach the destination), 2 a usage error (clap's own).
pub const EXIT_BAD_CONFIG: u8 = 3;

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
    /// Validate settings, intake files, certificates, ports and the room for the rings; exit 0,
    /// or 3 listing every problem (1 when --connect cannot reach the destination).
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
    /// Also connect to the destination as the uplink does: resolve its name, open TCP, then
    /// TLS verifying its certificate; each step is shown with its duration.
    #[arg(long)]
    pub connect: bool,
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

/// Hidden: one ingest worker. Everything it needs arrives on its standard input as a
/// worker specification (`control::worker_spec`), its listening socket as fd 3.
#[derive(Args, Debug)]
pub struct IngestWorkerArgs {
    /// The intake's queue (`tcp-20516`), so that `ps` tells the workers apart; the worker
    /// refuses a specification of another intake.
    #[arg(long)]
    pub intake: String,
}

/// Hidden: the uplink worker of one destination. Its specification arrives on its standard
/// input.
#[derive(Args, Debug)]
pub struct UplinkWorkerArgs {
    /// The destination (`host:port`), so that `ps` tells the uplinks apart; the worker
    /// refuses a specification of another destination.
    #[arg(long)]
    pub destination: String,
}

/// Resolves settings and the workers' user, loads the intake files and every certificate the
/// workers will need, printing every problem on failure (before anything is bound or started).
pub fn load_config(
    args: &SettingsArgs,
    runtime: &RuntimeArgs,
) -> Result<(ForwarderConfig, Option<RunAs>), ExitCode> {
    let (examined, run_as) = examine(args, runtime);
    let cfg = examined.into_result().map_err(|e| bad_config(&e))?;
    for warning in &cfg.warnings {
        eprintln!("warning: {warning}");
    }
    Ok((cfg, run_as))
}

/// One pass over everything `run` and `check` both look at: settings, intake files, the
/// workers' user, certificates, spool. Every problem is kept, none hides another.
pub(crate) fn examine(
    args: &SettingsArgs,
    runtime: &RuntimeArgs,
) -> (config::Examined, Option<RunAs>) {
    let mut examined = config::examine(args);
    let run_as = RunAs::resolve(runtime.user.as_deref()).unwrap_or_else(|problem| {
        examined.problems.push(problem);
        None
    });
    let found = environment_problems(&examined.config, run_as.as_ref(), &examined.problems);
    examined.problems.extend(found);
    (examined, run_as)
}

/// A reload's configuration: the intake files read again under the settings in force (flags
/// and environment cannot change in a running process), checked as at start; warnings are
/// logged.
pub fn reload_config(
    settings: config::Settings,
    run_as: Option<&RunAs>,
) -> Result<ForwarderConfig, config::ConfigErrors> {
    let mut examined = config::examine_files(settings);
    let found = environment_problems(&examined.config, run_as, &examined.problems);
    examined.problems.extend(found);
    let cfg = examined.into_result()?;
    for warning in &cfg.warnings {
        tracing::warn!("reload: {warning}");
    }
    Ok(cfg)
}

/// Checks what the workers will need from the machine: the TLS intakes' key pairs, the
/// uplink's trust store, a writable spool directory; with a workers' user, that this user
/// can read the files and use the spool folder.
fn environment_problems(
    cfg: &ForwarderConfig,
    run_as: Option<&RunAs>,
    known: &[config::Problem],
) -> Vec<config::Problem> {
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
    // An unreadable CA file is listed already (`config::load`): once is enough.
    let ca_listed = known.iter().any(|p| p.entry == config::CA_FILE_SETTING);
    let trust = (!ca_listed).then(|| uplink::client_config(cfg.settings.ca_file.as_deref()));
    if let Some(Err(e)) = trust {
        problems.push(config::Problem::setting(
            config::CA_FILE_SETTING,
            format!("the uplink trust store cannot be built: {e}"),
            "give a readable PEM file with the CA certificate(s) of the destination",
        ));
    }
    if let Some(run_as) = run_as {
        problems.extend(run_as.spool_problems(spool));
        if let Some(ca) = cfg.settings.ca_file.as_ref().filter(|_| !ca_listed) {
            if let Some(what) = run_as.unreadable(ca) {
                problems.push(config::Problem::setting(
                    config::CA_FILE_SETTING,
                    what,
                    run_as.read_fix(ca),
                ));
            }
        }
    }
    problems
}

pub(crate) fn bad_config(errors: &config::ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    eprintln!("sekoia-forwarder: configuration rejected, nothing was started");
    ExitCode::from(EXIT_BAD_CONFIG)
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
