//! A private syslog-ng (and its `loggen`) from the Debian `syslog-ng-core` package unpacked
//! into a folder of its own: the package conflicts with rsyslog, which the other tests need,
//! so `.ci/run` downloads it and unpacks it with `dpkg -x` instead of installing it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

/// Where `.ci/run` unpacks the package; `SYSLOG_NG_ROOT` overrides it.
pub const DEFAULT_ROOT: &str = "/opt/sekoia-test-peers/syslog-ng";

/// The unpacked package's root (it holds `usr/sbin/syslog-ng`); panics with the fix if absent,
/// so a machine without it fails the interop tests instead of skipping them.
pub fn root() -> PathBuf {
    let root = PathBuf::from(std::env::var("SYSLOG_NG_ROOT").unwrap_or(DEFAULT_ROOT.into()));
    assert!(
        root.join("usr/sbin/syslog-ng").is_file(),
        "syslog-ng not found under {}: run .ci/run (apt-get download syslog-ng-core, dpkg -x \
         it into that folder) or set SYSLOG_NG_ROOT",
        root.display()
    );
    root
}

/// The package's version, as `syslog-ng --version` prints it on its first line.
pub fn version() -> String {
    let out = command(&root(), "usr/sbin/syslog-ng")
        .arg("--version")
        .output()
        .expect("syslog-ng --version");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A command for one of the package's programs, with its private libraries and plugins.
fn command(root: &Path, program: &str) -> Command {
    let mut cmd = Command::new(root.join(program));
    cmd.env("LD_LIBRARY_PATH", root.join("usr/lib/syslog-ng"))
        .env("SYSLOGNG_PREFIX", root.join("usr"))
        .env("TZ", "UTC");
    cmd
}

/// `loggen` from the package, ready for its arguments.
pub fn loggen() -> Command {
    command(&root(), "usr/bin/loggen")
}

/// A running syslog-ng in the foreground with its own persist, pid and control files.
pub struct SyslogNg {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl SyslogNg {
    /// Starts syslog-ng on `body` (everything after the `@version` line) and waits until it
    /// accepts connections on TCP `listen_port`.
    pub fn start(body: &str, listen_port: u16) -> Self {
        let root = root();
        let dir = tempfile::tempdir().expect("syslog-ng dir");
        let conf = dir.path().join("syslog-ng.conf");
        std::fs::write(&conf, format!("@version: 3.38\n{body}")).expect("write conf");
        let log = std::fs::File::create(dir.path().join("syslog-ng.log")).expect("log");
        let child = command(&root, "usr/sbin/syslog-ng")
            .arg("-F")
            .arg("-e")
            .arg("-f")
            .arg(&conf)
            .arg("--module-path")
            .arg(root.join("usr/lib/syslog-ng/3.38"))
            .arg("-R")
            .arg(dir.path().join("persist"))
            .arg("-p")
            .arg(dir.path().join("pid"))
            .arg("-c")
            .arg(dir.path().join("ctl"))
            .arg("--no-caps")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start syslog-ng");
        let me = Self { child, dir };
        let up = wait_until(Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", listen_port)).is_ok()
        });
        assert!(
            up,
            "syslog-ng did not listen on {listen_port}:\n{}",
            me.log()
        );
        me
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("syslog-ng.log")).unwrap_or_default()
    }
}

impl Drop for SyslogNg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
