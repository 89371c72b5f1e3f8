//! Command line: the public `run` and `check` commands and the hidden worker commands.
//!
//! The settings flags (`--config`, `--region`, ...) and their environment variables live in
//! the library's `config::SettingsArgs`; this module only adds the commands around them and
//! turns configuration problems into the listing and exit status operators see.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sekoia_shared::config::{self, ForwarderConfig, SettingsArgs};

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
}

/// Where the supervisor keeps its shared-memory state.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Directory for the shared-memory rings (tmpfs). One sub-directory per spool directory,
    /// so a supervisor restarted after a crash finds and drains the rings of its predecessor.
    #[arg(long, env = "SHM_DIR", default_value = "/dev/shm/sekoia-forwarder")]
    pub shm_dir: PathBuf,
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
}

/// Hidden: the uplink worker, draining every ring of the state directory.
#[derive(Args, Debug)]
pub struct UplinkWorkerArgs {
    #[arg(long)]
    pub state_dir: PathBuf,
}

/// Resolves settings and loads the intake files, printing every problem on failure.
pub fn load_config(args: &SettingsArgs) -> Result<ForwarderConfig, ExitCode> {
    let settings = args.resolve().map_err(|e| bad_config(&e))?;
    let cfg = config::load(settings).map_err(|e| bad_config(&e))?;
    for warning in &cfg.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(cfg)
}

fn bad_config(errors: &config::ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    eprintln!("sekoia-forwarder: configuration rejected, nothing was started");
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// `sekoia-forwarder check`: load and validate everything, bind nothing.
pub fn check(args: &SettingsArgs) -> ExitCode {
    match load_config(args) {
        Ok(cfg) => {
            println!(
                "configuration OK: {} intake(s){}, destination {}:{}",
                cfg.intakes.len(),
                if cfg.stats.is_some() { " + monitoring" } else { "" },
                cfg.settings.destination.host,
                cfg.settings.destination.port
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
