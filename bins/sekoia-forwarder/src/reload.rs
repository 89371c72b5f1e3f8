//! Reload (SIGHUP, `sekoia-ctl reload`): what a new configuration changes, and the order in
//! which the supervisor applies it so that nothing queued or in flight is lost.
//!
//! An intake is identified across reloads by its queue (protocol and port), never by its
//! position in the file: its ring and journal are named by that key, so an intake that
//! keeps its protocol and port keeps its queue, and one that changes either is a removal
//! plus an addition.
//!
//! - **unchanged**: its worker process and its senders' connections stay;
//! - **changed** (same queue, another name, key, TLS files, limits...): its worker stops in
//!   order (it hands over what it read) and starts again with the new settings; the
//!   supervisor keeps the listening socket, so the port never refuses a connection;
//! - **removed**: its worker stops in order and its port closes; what its queue holds is
//!   still delivered (the uplink drains every ring, configured or not);
//! - **added**: its port is bound and its ring created *before* anything running is
//!   touched, so a port that cannot be bound rejects the whole reload and the running
//!   configuration stays as it was; then the uplink of its destination is replaced so that
//!   it drains the new ring (it stops in order, sending what it holds, and the next one
//!   starts at once), or started if no other intake goes there (routes.rs).

use std::collections::BTreeMap;

use sekoia_shared::config::{ForwarderConfig, Intake};
use sekoia_shared::queue::layout::QueueKey;

/// What a new configuration changes in the running one.
#[derive(Debug, Default)]
pub struct Plan {
    pub added: Vec<Intake>,
    pub changed: Vec<Intake>,
    /// Queues of removed intakes, with the name they had.
    pub removed: Vec<(QueueKey, String)>,
    pub unchanged: usize,
}

impl Plan {
    /// Compares `old` and `new` by queue.
    pub fn between(old: &ForwarderConfig, new: &ForwarderConfig) -> Self {
        let before: BTreeMap<QueueKey, &Intake> =
            old.intakes.iter().map(|i| (QueueKey::of(i), i)).collect();
        let after: BTreeMap<QueueKey, &Intake> =
            new.intakes.iter().map(|i| (QueueKey::of(i), i)).collect();
        let mut plan = Plan::default();
        for (key, intake) in &after {
            match before.get(key) {
                None => plan.added.push((*intake).clone()),
                Some(was) if same_intake(was, intake) => plan.unchanged += 1,
                Some(_) => plan.changed.push((*intake).clone()),
            }
        }
        for (key, intake) in &before {
            if !after.contains_key(key) {
                plan.removed.push((*key, intake.name.clone()));
            }
        }
        plan
    }
}

/// Equal in everything that needs the worker restarted. The position in the file (`id`)
/// and the file an entry was read from do not change what the intake does. Nor does its
/// memory share (`queue_size`): `MEMORY_MESSAGES` is divided among the intakes, so adding
/// one changes every share, and restarting every worker for that would drop every sender's
/// connection. A running worker keeps its share until its next start; its ring's size in
/// bytes never changes while the ring file exists anyway.
fn same_intake(a: &Intake, b: &Intake) -> bool {
    let strip = |i: &Intake| {
        let mut i = i.clone();
        i.id = 0;
        i.source = Default::default();
        i.queue_size = 0;
        json(&i)
    };
    strip(a) == strip(b)
}

fn json(value: &Intake) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use sekoia_shared::config::SettingsArgs;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        settings: SettingsArgs,
    }

    /// The configuration of `entries` (one `- name: ...` line per intake, `|` between fields).
    fn config(entries: &[&str]) -> ForwarderConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intakes.yaml");
        let mut yaml = String::from("intakes:\n");
        for entry in entries {
            yaml.push_str(&format!("- {}\n", entry.replace(" | ", "\n  ")));
        }
        std::fs::write(&path, yaml).unwrap();
        let args = Args::parse_from(["test", "--config", path.to_str().unwrap()]);
        sekoia_shared::config::load(args.settings.resolve().unwrap()).unwrap()
    }

    const FW: &str =
        "name: Firewalls | protocol: tcp | port: 20516 | intake_key: K1AAAAAAAAAAAAAAAAAA";
    const PX: &str =
        "name: Proxies | protocol: udp | port: 20517 | intake_key: K2AAAAAAAAAAAAAAAAAA";

    #[test]
    fn intakes_are_matched_by_queue_not_by_position() {
        let plan = Plan::between(&config(&[FW, PX]), &config(&[PX, FW]));
        assert_eq!(plan.unchanged, 2);
        assert!(plan.added.is_empty() && plan.changed.is_empty() && plan.removed.is_empty());
    }

    #[test]
    fn a_new_protocol_on_the_same_port_is_a_removal_and_an_addition() {
        let udp =
            "name: Firewalls | protocol: udp | port: 20516 | intake_key: K1AAAAAAAAAAAAAAAAAA";
        let plan = Plan::between(&config(&[FW]), &config(&[udp]));
        assert_eq!(plan.added.len(), 1);
        assert_eq!(plan.removed.len(), 1);
        assert!(plan.changed.is_empty());
    }

    #[test]
    fn a_new_intake_key_changes_the_intake() {
        let rekeyed =
            "name: Firewalls | protocol: tcp | port: 20516 | intake_key: K9AAAAAAAAAAAAAAAAAA";
        let plan = Plan::between(&config(&[FW, PX]), &config(&[rekeyed, PX]));
        assert_eq!(plan.changed.len(), 1);
        assert_eq!(plan.unchanged, 1);
        assert!(plan.added.is_empty() && plan.removed.is_empty());
    }

    #[test]
    fn a_new_memory_share_alone_restarts_nothing() {
        let old = config(&[FW, PX]);
        let new = config(&[FW]);
        assert_ne!(old.intakes[0].queue_size, new.intakes[0].queue_size);
        assert_eq!(Plan::between(&old, &new).unchanged, 1);
    }

    #[test]
    fn removed_and_added_intakes_are_named() {
        let plan = Plan::between(&config(&[FW, PX]), &config(&[FW]));
        assert_eq!(plan.removed.len(), 1);
        assert_eq!(plan.removed[0].1, "Proxies");
        assert_eq!(plan.unchanged, 1);
        let plan = Plan::between(&config(&[FW]), &config(&[FW, PX]));
        assert_eq!(plan.added.len(), 1);
    }
}
