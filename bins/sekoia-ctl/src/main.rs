//! `sekoia-ctl`: asks a running sekoia-forwarder what it is doing, over its control socket.
//!
//! Exit status: 0 the forwarder answered (a reload was applied); 1 it could not be reached or
//! refused (the message says why and what to do); 2 usage error; 3 a reload's configuration
//! was rejected. `check` passes on the forwarder's own status.

mod reload;
mod table;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sekoia_shared::control::client::{self, ClientError};
use sekoia_shared::control::status::StatusReport;
use sekoia_shared::control::{Command as Ask, Request, ResponseBody, DEFAULT_SOCKET};

/// How long the forwarder has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(
    name = "sekoia-ctl",
    version,
    about = "Ask a running sekoia-forwarder what it is doing"
)]
struct Cli {
    /// The forwarder's control socket.
    #[arg(long, env = "CONTROL_SOCKET", value_name = "PATH", default_value = DEFAULT_SOCKET, global = true)]
    control_socket: PathBuf,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// Is anything lost or stuck? Intakes, uplink, disk, worker restarts.
    Status {
        /// The same as JSON, for scripts (schema in docs/operations.md).
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Refresh in place every INTERVAL seconds, like `top` (Ctrl-C to quit).
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// Read the configuration again and apply it, as SIGHUP does. Exit 0 when applied, 3
    /// when the new configuration is rejected (every problem is listed; nothing changed).
    Reload,
    /// Run `sekoia-forwarder check` with these arguments (the same check the forwarder runs).
    Check {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        CtlCommand::Status { json, watch } => match watch {
            Some(every) => watch_status(&cli.control_socket, Duration::from_secs(every.max(1))),
            None => print_status(&cli.control_socket, json),
        },
        CtlCommand::Reload => reload::run(&cli.control_socket),
        CtlCommand::Check { args } => check(&args),
    }
}

fn fetch(socket: &std::path::Path) -> Result<StatusReport, ClientError> {
    let response = client::request(socket, &Request::new(Ask::Status), ANSWER_TIMEOUT)?;
    match response.body {
        ResponseBody::Status(status) => Ok(*status),
        ResponseBody::Error { message } => Err(ClientError::Refused(message)),
        ResponseBody::Reload(_) => Err(ClientError::Refused("answered another request".into())),
    }
}

fn print_status(socket: &std::path::Path, json: bool) -> ExitCode {
    match fetch(socket) {
        Ok(status) if json => match serde_json::to_string_pretty(&status) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Ok(status) => {
            print!("{}", table::render(&status));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Redraws the table in place until interrupted; an unreachable forwarder is shown, not fatal.
fn watch_status(socket: &std::path::Path, every: Duration) -> ExitCode {
    loop {
        let screen = match fetch(socket) {
            Ok(status) => table::render(&status),
            Err(e) => format!("sekoia-ctl: {e}\n"),
        };
        // Home the cursor, clear the screen, draw.
        print!("\x1b[H\x1b[2J{screen}");
        let _ = std::io::stdout().flush();
        std::thread::sleep(every);
    }
}

/// Runs the forwarder binary installed beside this one (else the one on PATH).
fn check(args: &[String]) -> ExitCode {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("sekoia-forwarder")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from("sekoia-forwarder"));
    match std::process::Command::new(&program)
        .arg("check")
        .args(args)
        .status()
    {
        Ok(status) => ExitCode::from(
            status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(1),
        ),
        Err(e) => {
            eprintln!("sekoia-ctl: cannot run {}: {e}", program.display());
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sekoia-ctl: {e}");
    ExitCode::FAILURE
}
