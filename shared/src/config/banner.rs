//! The start-up block of SPEC §8, byte for byte like the reference's `generate_config.py`:
//!
//! ```text
//! These Intakes have been set up
//! -----------------------------
//! Intake name: Techno1
//! Protocol: tcp
//! Port: 20516
//! Intake key: KEY
//! Queue size: 666667
//!
//! Forwarder monitoring is configured (its reports are not sent yet)
//! Intake key: KEY2
//! Queue size: 666667
//!
//! ```
//!
//! The reference prints "Forwarder monitoring is active"; until the monitoring reports exist
//! we say what is true instead. Every block ends with an empty line; the monitoring block sits where its entry was in
//! load order. The intake name is printed as written (not lower-cased). One difference: the
//! protocol is printed lower-case (`tcp`), where the reference echoed the file's spelling.
//! Warnings (unknown fields, `*.conf` files) are not part of the banner; the caller prints
//! `ForwarderConfig::warnings` after it.

use std::fmt::Write;

use crate::config::ForwarderConfig;

/// The start-up block; ends with `\n` (after the empty line of the last block).
pub fn banner(cfg: &ForwarderConfig) -> String {
    let mut out = String::from("These Intakes have been set up\n-----------------------------\n");
    let stats_at = cfg
        .stats
        .as_ref()
        .map(|s| s.position.min(cfg.intakes.len()));
    for (i, intake) in cfg.intakes.iter().enumerate() {
        if stats_at == Some(i) {
            push_stats(&mut out, cfg);
        }
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "Intake name: {}\nProtocol: {}\nPort: {}\nIntake key: {}\nQueue size: {}\n\n",
            intake.name, intake.protocol, intake.port, intake.intake_key, intake.queue_size
        );
    }
    if stats_at == Some(cfg.intakes.len()) {
        push_stats(&mut out, cfg);
    }
    out
}

fn push_stats(out: &mut String, cfg: &ForwarderConfig) {
    if let Some(stats) = &cfg.stats {
        let _ = write!(
            out,
            "Forwarder monitoring is configured (its reports are not sent yet)\nIntake key: {}\nQueue size: {}\n\n",
            stats.intake_key, stats.queue_size
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{Destination, Intake, Protocol, Region, Settings, StatsIntake};

    fn settings() -> Settings {
        Settings {
            config_path: PathBuf::from("/intakes.yaml"),
            memory_messages: 2_000_000,
            disk_space: 1,
            region: Region::Fra1,
            destination: Destination {
                host: "intake.sekoia.io".to_string(),
                port: 10514,
                output: Default::default(),
            },
            ca_file: None,
            spool_dir: PathBuf::from("/spool"),
            certs_dir: PathBuf::from("/certs"),
            extended_conf_dir: None,
            control_socket: PathBuf::from("/ctl"),
            stats_interval_secs: 300,
            stats_file: PathBuf::from("/stats"),
            uplink_connections: 2,
            resolve_hostnames: true,
            resolve_timeout_ms: 1_000,
            metrics_listen: None,
        }
    }

    fn intake(id: u16, name: &str, protocol: Protocol, port: u16, key: &str) -> Intake {
        Intake {
            id,
            name: name.to_string(),
            metric_name: crate::config::metric_name(name),
            protocol,
            port,
            intake_key: key.to_string(),
            debug: false,
            queue_size: 666_667,
            tls: None,
            limits: Default::default(),
            source: PathBuf::from("/intakes.yaml"),
        }
    }

    #[test]
    fn banner_matches_reference_bytes_with_monitoring_last() {
        let cfg = ForwarderConfig {
            settings: settings(),
            intakes: vec![
                intake(0, "Techno 1", Protocol::Tcp, 20516, "KEY1"),
                intake(1, "Techno2", Protocol::Udp, 20517, "KEY2"),
            ],
            stats: Some(StatsIntake {
                name: "Monitoring".to_string(),
                intake_key: "KEY3".to_string(),
                queue_size: 666_667,
                position: 2,
            }),
            warnings: Vec::new(),
        };
        let expected = "These Intakes have been set up\n\
                        -----------------------------\n\
                        Intake name: Techno 1\nProtocol: tcp\nPort: 20516\nIntake key: KEY1\nQueue size: 666667\n\n\
                        Intake name: Techno2\nProtocol: udp\nPort: 20517\nIntake key: KEY2\nQueue size: 666667\n\n\
                        Forwarder monitoring is configured (its reports are not sent yet)\nIntake key: KEY3\nQueue size: 666667\n\n";
        assert_eq!(banner(&cfg), expected);
    }

    #[test]
    fn monitoring_block_keeps_its_place_in_load_order() {
        let cfg = ForwarderConfig {
            settings: settings(),
            intakes: vec![intake(0, "A", Protocol::Tls, 6514, "K")],
            stats: Some(StatsIntake {
                name: "Monitoring".to_string(),
                intake_key: "S".to_string(),
                queue_size: 5,
                position: 0,
            }),
            warnings: Vec::new(),
        };
        let text = banner(&cfg);
        let stats = text.find("Forwarder monitoring is configured");
        let first = text.find("Intake name: A");
        assert!(stats < first, "{text}");
        assert!(text.contains("Protocol: tls\n"));
    }

    #[test]
    fn banner_without_intakes_is_only_the_header() {
        let cfg = ForwarderConfig {
            settings: settings(),
            intakes: Vec::new(),
            stats: None,
            warnings: Vec::new(),
        };
        assert_eq!(
            banner(&cfg),
            "These Intakes have been set up\n-----------------------------\n"
        );
    }
}
