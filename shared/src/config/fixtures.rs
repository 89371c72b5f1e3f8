//! Test fixtures: a complete `Settings` and `Intake`, written once so that a new field is
//! added in one place.

use std::path::PathBuf;

use crate::config::{Destination, Intake, Protocol, Region, Settings};

pub(crate) fn settings() -> Settings {
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

pub(crate) fn intake(id: u16, name: &str, protocol: Protocol, port: u16, key: &str) -> Intake {
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
        destination: settings().destination,
        source: PathBuf::from("/intakes.yaml"),
    }
}
