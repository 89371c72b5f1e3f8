//! Behaviour of `load`: real files in a temporary directory, every problem kind, and the
//! shape of the resulting configuration. `entries` covers one entry's fields and the checks
//! across entries; `files` covers files, tls files, extended files and settings.

mod entries;
mod files;
mod limits;
mod routes;

use std::path::PathBuf;

use super::*;

const K1: &str = "aaaaaaaaaaaaaaaa0001";
const K2: &str = "bbbbbbbbbbbbbbbb0002";
const K3: &str = "cccccccccccccccc0003";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("certs")).expect("mkdir certs");
        Fixture { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        if name.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(&path, private).expect("chmod 600");
        }
        path
    }
    fn settings(&self) -> Settings {
        Settings {
            config_path: self.path("intakes.yaml"),
            memory_messages: 100_000,
            disk_space: 32 << 30,
            region: Region::Fra1,
            destination: Destination {
                host: "intake.sekoia.io".to_string(),
                port: UPLINK_PORT,
                output: Default::default(),
            },
            ca_file: None,
            spool_dir: self.path("spool"),
            certs_dir: self.path("certs"),
            extended_conf_dir: None,
            control_socket: self.path("control.sock"),
            stats_interval_secs: 300,
            stats_file: self.path("stats.log"),
            uplink_connections: 2,
            resolve_hostnames: true,
            resolve_timeout_ms: 1_000,
            metrics_listen: None,
        }
    }
    fn load(&self, main: &str) -> Result<ForwarderConfig, ConfigErrors> {
        self.write("intakes.yaml", main);
        load(self.settings())
    }
    fn ok(&self, main: &str) -> ForwarderConfig {
        match self.load(main) {
            Ok(cfg) => cfg,
            Err(e) => panic!("should load:\n{e}"),
        }
    }
    fn problems(&self, main: &str) -> Vec<String> {
        match self.load(main) {
            Ok(_) => panic!("should be refused:\n{main}"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }
}

fn entry(name: &str, protocol: &str, port: &str, key: &str) -> String {
    format!("- name: {name}\n  protocol: {protocol}\n  port: {port}\n  intake_key: {key}\n")
}

fn only(problems: &[String]) -> &str {
    assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
    &problems[0]
}
