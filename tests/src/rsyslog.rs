//! A private rsyslogd configured like the reference image (its template, maxMessageSize,
//! octet-counted TLS forwarding with x509/name), DNS off, forwarding to a test TLS sink.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{wait_until, TestCerts};

pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// What changes between uses of the reference configuration.
pub struct ReferenceConf<'a> {
    /// rsyslog's work directory (its queue files).
    pub work: &'a Path,
    /// CA of the TLS sink (it stands in for the Sekoia.io intake).
    pub ca: &'a Path,
    /// The intake is UDP (imudp) instead of TCP (imtcp).
    pub udp: bool,
    pub port: u16,
    pub sink_port: u16,
    pub intake_key: &'a str,
    /// imtcp `MaxSessions`; 0 keeps the reference's default (200).
    pub max_sessions: usize,
}

/// The reference image's rsyslog.conf + template.j2 for one intake, with only the changes a
/// private test instance needs: its own work directory, DNS off, the sink's CA and address
/// (`127.0.0.1`, peer name `localhost`). imuxsock (the host's /dev/log) and impstats (every
/// 300 s) are left out. The one source of this configuration: the differential tests and the
/// benchmark harness both use it.
pub fn reference_conf(c: &ReferenceConf) -> String {
    let imtcp = if c.max_sessions > 0 {
        format!("module(load=\"imtcp\" MaxSessions=\"{}\")", c.max_sessions)
    } else {
        "module(load=\"imtcp\")".to_string()
    };
    format!(
        r#"global(
    workDirectory="{work}"
    maxMessageSize="250k"
    umask="0022"
    net.enableDNS="off"
    defaultNetstreamDriverCAFile="{ca}"
)
{imtcp}
module(load="imudp")
main_queue(
    queue.filename="sekoia_queue"
    queue.type="LinkedList"
    queue.maxDiskSpace="32g"
    queue.saveOnShutdown="on"
)
input(type="{input}" port="{port}" ruleset="remote{port}")
template(name="SEKOIAIO_{port}_Template" type="string" string="<%pri%>1 %timegenerated:::date-rfc3339% %hostname% %app-name% %procid% LOG [SEKOIA@53288 intake_key=\"{key}\"] %msg:R,ERE,1,FIELD:^[ \t]*(.*)$--end%\n")
ruleset(name="remote{port}" queue.type="LinkedList" queue.filename="sekoia_{port}_queue" queue.saveOnShutdown="on") {{
action(
    name="action{port}"
    type="omfwd"
    protocol="tcp"
    target="127.0.0.1"
    port="{sink_port}"
    TCP_Framing="octet-counted"
    StreamDriver="gtls"
    StreamDriverMode="1"
    StreamDriverAuthMode="x509/name"
    StreamDriverPermittedPeers="localhost"
    Template="SEKOIAIO_{port}_Template"
    )
}}
"#,
        work = c.work.display(),
        ca = c.ca.display(),
        input = if c.udp { "imudp" } else { "imtcp" },
        port = c.port,
        sink_port = c.sink_port,
        key = c.intake_key,
    )
}

pub struct Rsyslog {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Rsyslog {
    /// Starts rsyslogd with one imtcp intake on `port`, forwarding to 127.0.0.1:`sink_port`.
    /// `certs` must be the sink's certificates, issued for `localhost`.
    pub fn start(port: u16, sink_port: u16, certs: &TestCerts, intake_key: &str) -> Self {
        let dir = tempfile::tempdir().expect("rsyslog dir");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        let conf = reference_conf(&ReferenceConf {
            work: &work,
            ca: &certs.ca_pem,
            udp: false,
            port,
            sink_port,
            intake_key,
            max_sessions: 0,
        });
        Self::start_conf(dir, &conf, port)
    }

    /// Starts rsyslogd on `conf` (written into `dir`) and waits until it listens on TCP `port`.
    pub fn start_conf(dir: tempfile::TempDir, conf: &str, port: u16) -> Self {
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).expect("write rsyslog.conf");
        let pid: PathBuf = dir.path().join("rsyslogd.pid");
        let log = std::fs::File::create(dir.path().join("rsyslogd.log")).expect("log");
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(&pid)
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start rsyslogd (apt-get install rsyslog rsyslog-gnutls rsyslog-openssl)");
        let up = wait_until(Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let me = Self { child, dir, port };
        assert!(up, "rsyslogd did not listen on {port}:\n{}", me.log());
        me
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.log")).unwrap_or_default()
    }

    /// Process id of this rsyslogd (the test started it, so it may signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
