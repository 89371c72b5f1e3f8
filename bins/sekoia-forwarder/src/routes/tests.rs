use std::path::Path;

use clap::Parser;
use sekoia_shared::config::SettingsArgs;

use super::*;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    settings: SettingsArgs,
}

/// The configuration of `entries` (fields separated by ` | `), spooled in `dir`.
fn config(dir: &Path, entries: &[&str]) -> ForwarderConfig {
    let path = dir.join("intakes.yaml");
    let mut yaml = String::from("intakes:\n");
    for entry in entries {
        yaml.push_str(&format!("- {}\n", entry.replace(" | ", "\n  ")));
    }
    std::fs::write(&path, yaml).unwrap();
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let args = Args::parse_from([
        "test",
        "--config",
        path.to_str().unwrap(),
        "--spool-dir",
        spool.to_str().unwrap(),
    ]);
    sekoia_shared::config::load(args.settings.resolve().unwrap()).unwrap()
}

const FRA: &str = "name: A | protocol: tcp | port: 20516 | intake_key: AAAAAAAAAAAAAAAAAAAA";
const FRA_AGAIN: &str =
    "name: B | protocol: tcp | port: 20517 | intake_key: BBBBBBBBBBBBBBBBBBBB | endpoint: INTAKE.sekoia.io";
const USA: &str =
    "name: C | protocol: udp | port: 20518 | intake_key: CCCCCCCCCCCCCCCCCCCC | region: usa1";

fn key(text: &str) -> QueueKey {
    text.parse().unwrap()
}

#[test]
fn intakes_are_grouped_by_place_and_the_default_destination_comes_first() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[USA, FRA, FRA_AGAIN]);
    let state = InstanceDir::create(&dir.path().join("shm"), &cfg.settings.spool_dir).unwrap();
    let plans = plan(&cfg, &state);
    assert_eq!(plans.len(), 2, "{plans:?}");
    assert_eq!(plans[0].destination.host, "intake.sekoia.io");
    assert_eq!(plans[0].queues, vec![key("tcp-20516"), key("tcp-20517")]);
    assert_eq!(plans[1].destination.host, "intake.usa1.sekoia.io");
    assert_eq!(plans[1].queues, vec![key("udp-20518")]);
}

#[test]
fn a_removed_intake_s_queue_follows_its_recorded_destination() {
    let dir = tempfile::tempdir().unwrap();
    let before = config(dir.path(), &[FRA, USA]);
    record(&before).unwrap();
    let after = config(dir.path(), &[FRA]);
    let state = InstanceDir::create(&dir.path().join("shm"), &after.settings.spool_dir).unwrap();
    // The removed intake still has a journal: its queue is not empty.
    std::fs::create_dir(after.settings.spool_dir.join("journal-udp-20518")).unwrap();
    // A queue with no record at all goes to the global destination.
    std::fs::create_dir(after.settings.spool_dir.join("journal-tcp-999")).unwrap();
    let plans = plan(&after, &state);
    assert_eq!(plans.len(), 2, "{plans:?}");
    assert_eq!(plans[0].queues, vec![key("tcp-999"), key("tcp-20516")]);
    assert_eq!(plans[1].destination.host, "intake.usa1.sekoia.io");
    assert_eq!(plans[1].queues, vec![key("udp-20518")]);
}

#[test]
fn a_planted_route_record_is_not_followed_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[FRA]);
    let spool = &cfg.settings.spool_dir;
    std::fs::create_dir(spool.join("journal-tcp-999")).unwrap();
    let elsewhere = dir.path().join("evil.json");
    std::fs::write(&elsewhere, br#"{"host":"evil.example","port":1}"#).unwrap();
    std::os::unix::fs::symlink(&elsewhere, spool.join("route-tcp-999.json")).unwrap();
    let state = InstanceDir::create(&dir.path().join("shm"), spool).unwrap();
    let plans = plan(&cfg, &state);
    assert_eq!(plans.len(), 1, "{plans:?}");
    assert_eq!(plans[0].destination.host, "intake.sekoia.io");
}
