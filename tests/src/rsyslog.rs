//! A private rsyslogd configured like the reference image (its template, maxMessageSize,
//! octet-counted TLS forwarding with x509/name), DNS off, forwarding to a test TLS sink.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{wait_until, TestCerts};

pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

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
        let conf = format!(
            r#"global(
    workDirectory="{work}"
    maxMessageSize="250k"
    net.enableDNS="off"
    defaultNetstreamDriverCAFile="{ca}"
)
module(load="imtcp")
input(type="imtcp" port="{port}" ruleset="remote{port}")
template(name="SEKOIAIO_test_Template" type="string" string="<%pri%>1 %timegenerated:::date-rfc3339% %hostname% %app-name% %procid% LOG [SEKOIA@53288 intake_key=\"{key}\"] %msg:R,ERE,1,FIELD:^[ \t]*(.*)$--end%\n")
ruleset(name="remote{port}" queue.type="LinkedList" queue.filename="sekoia_test_queue" queue.saveOnShutdown="on") {{
action(
    name="actiontest"
    type="omfwd"
    protocol="tcp"
    target="127.0.0.1"
    port="{sink_port}"
    TCP_Framing="octet-counted"
    StreamDriver="gtls"
    StreamDriverMode="1"
    StreamDriverAuthMode="x509/name"
    StreamDriverPermittedPeers="localhost"
    Template="SEKOIAIO_test_Template"
    )
}}
"#,
            work = work.display(),
            ca = certs.ca_pem.display(),
            key = intake_key,
        );
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
            .expect("start rsyslogd (apt-get install rsyslog rsyslog-gnutls)");
        let up = wait_until(Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "rsyslogd did not listen on {port}");
        Self { child, dir, port }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.log")).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
