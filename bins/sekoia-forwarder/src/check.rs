//! `sekoia-forwarder check`: everything the start checks (`cli::examine`), plus what only a
//! dry run can ask of the machine: ports already taken (`check_ports`) and the room for the
//! rings in `SHM_DIR` (`check_shm`, which the start asks too); then, with `--connect`, the
//! way to the destination (`check_connect`). Every problem is listed in one pass; nothing
//! is created on disk.
//!
//! Exit status: 0 usable, 3 rejected (`cli::EXIT_BAD_CONFIG`), 1 `--connect` failed.

use std::path::Path;
use std::process::ExitCode;

use sekoia_shared::config::{Examined, ForwarderConfig};

use crate::cli::{self, CheckArgs};
use crate::{check_connect, check_ports, check_shm};

/// `sekoia-forwarder check`: everything `run` checks, plus the ports and the room in
/// `SHM_DIR`, every problem listed in one pass; binds nothing for longer than a test, and
/// changes nothing on disk. With `--connect`, then reaches the destination.
pub fn run(args: &CheckArgs) -> ExitCode {
    let (mut examined, run_as) = cli::examine(&args.settings, &args.runtime);
    add_machine_findings(&mut examined, &args.runtime.shm_dir);
    let cfg = match examined.into_result() {
        Ok(cfg) => cfg,
        Err(errors) => {
            let code = cli::bad_config(&errors);
            if args.connect {
                eprintln!("--connect: not tried; fix the configuration first");
            }
            return code;
        }
    };
    for warning in &cfg.warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "configuration OK: {} intake(s){}, default destination {}{}",
        cfg.intakes.len(),
        if cfg.stats.is_some() {
            " + a monitoring entry"
        } else {
            ""
        },
        cfg.settings.destination.describe(),
        run_as.map_or(String::new(), |u| format!(", workers run as {}", u.name))
    );
    for (destination, names) in cfg.destinations() {
        println!("  {}: {}", destination.describe(), names.join(", "));
    }
    warn_if_disk_space_exceeds_fs(&cfg.settings.spool_dir, cfg.settings.disk_space);
    if args.connect {
        connect(&cfg)
    } else {
        ExitCode::SUCCESS
    }
}

/// Ports already taken and the room for the rings, for the intakes that passed their own
/// checks.
fn add_machine_findings(examined: &mut Examined, shm_dir: &Path) {
    let ports = check_ports::probe(&examined.config.intakes);
    examined.problems.extend(ports.problems);
    examined.config.warnings.extend(ports.warnings);
    match check_shm::problem(&examined.config, shm_dir) {
        Ok(found) => examined.problems.extend(found),
        Err(warning) => examined.config.warnings.push(warning),
    }
}

/// Tries every destination in turn (each step is bounded); fails if any fails.
fn connect(cfg: &ForwarderConfig) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for (dest, _) in cfg.destinations() {
        match check_connect::connect(&dest, cfg.settings.ca_file.as_deref()) {
            Ok(()) => {
                println!("connect OK: {dest} accepts TLS with a certificate this forwarder trusts");
            }
            Err(failed) => {
                eprintln!(
                    "connect to {dest} failed at step {}: {}",
                    failed.step, failed.why
                );
                code = ExitCode::FAILURE;
            }
        }
    }
    code
}

/// `check`: a warning (not an error) when `DISK_SPACE` is more than the spool's file system
/// can hold; the forwarder then limits its disk queue to what it can hold.
fn warn_if_disk_space_exceeds_fs(spool: &Path, disk_space: u64) {
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
