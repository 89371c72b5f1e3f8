//! `sekoia-forwarder`: the supervisor (default `run`), `check`, and the hidden worker
//! subcommands the supervisor re-executes itself with.
//!
//! Every process is this one binary, so a worker always runs the same code as the supervisor
//! that started it. Workers receive everything explicitly: their worker specification on
//! standard input (`control::worker_spec`: state directory, journal sync, configuration,
//! role) and, for an ingest worker, its listening socket as fd 3 (systemd's `LISTEN_FDS`
//! convention).

mod budgets;
mod check;
mod check_connect;
mod check_ports;
mod check_shm;
mod cli;
mod ingest_worker;
mod input_report;
mod instance;
mod intake_sink;
mod logging;
mod notify;
mod open_files;
mod reload;
mod routes;
mod run_as;
mod stats_task;
mod status_board;
mod stop_save;
mod supervisor;
mod uplink_report;
mod uplink_worker;
mod worker_runtime;
mod worker_set;

use std::process::ExitCode;

use clap::Parser;
use sekoia_shared::control::worker_spec::WorkerSpec;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run_supervisor(&cli.settings, &cli.runtime),
        Some(Command::Run(args)) => run_supervisor(&args.settings, &args.runtime),
        Some(Command::Check(args)) => check::run(&args),
        Some(Command::IngestWorker(args)) => {
            logging::init("ingest");
            report(read_spec().and_then(|spec| ingest_worker::run(spec, &args.intake)))
        }
        Some(Command::UplinkWorker(args)) => {
            logging::init("uplink");
            report(read_spec().and_then(|spec| uplink_worker::run(spec, &args.destination)))
        }
    }
}

fn run_supervisor(
    settings: &sekoia_shared::config::SettingsArgs,
    runtime: &cli::RuntimeArgs,
) -> ExitCode {
    logging::init("supervisor");
    match cli::load_config(settings, runtime) {
        Ok((config, run_as)) => report(supervisor::run(config, runtime, run_as.as_ref())),
        Err(code) => code,
    }
}

/// A worker's specification, written by the supervisor to its standard input.
fn read_spec() -> anyhow::Result<WorkerSpec> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        anyhow::bail!(
            "this command is started by the supervisor (`sekoia-forwarder run`), not by hand"
        );
    }
    Ok(WorkerSpec::read_from(stdin.lock())?)
}

/// Journal settings of this configuration: segment size from the disk budget in force (the
/// smaller of `DISK_SPACE` and what the spool's file system can hold), fsync policy.
fn journal_options(
    cfg: &sekoia_shared::config::ForwarderConfig,
    sync: cli::JournalSync,
    budget: &sekoia_shared::queue::DiskBudget,
) -> sekoia_shared::queue::JournalOptions {
    sekoia_shared::queue::intake::journal_options(
        budget.limit(),
        // The monitoring entry's queue has its journals too.
        cfg.intakes.len() + usize::from(cfg.stats.is_some()),
        sync == cli::JournalSync::Always,
    )
}

/// Prints a fatal error with its whole cause chain and turns it into exit status 1, or 3
/// when the start found the configuration unusable here (`cli::EXIT_BAD_CONFIG`).
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<sekoia_shared::config::ConfigErrors>() => {
            eprintln!("{e}");
            eprintln!("sekoia-forwarder: configuration rejected, nothing was started");
            ExitCode::from(cli::EXIT_BAD_CONFIG)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sekoia-forwarder: {e:#}");
            ExitCode::FAILURE
        }
    }
}
