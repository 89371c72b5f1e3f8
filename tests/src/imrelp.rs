//! rsyslog's RELP server (`imrelp`, Debian package `rsyslog-relp`) as the destination of the
//! RELP output: TLS with the test CA through OpenSSL (which, unlike GnuTLS, accepts clients
//! without a certificate, as Sekoia's RELP intake does), writing every message it receives,
//! as received, one per line, to a file that outlives restarts.
//!
//! The main queue is `Direct`: the message is written to the file before imrelp answers the
//! command, so "acknowledged" means "in the file" and a `kill -9` of this rsyslogd cannot lose
//! an acknowledged event (with rsyslog's default in-memory queue it could).

use std::path::PathBuf;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::rsyslog::Rsyslog;
use crate::{free_tcp_port, TestCerts};

pub struct Imrelp {
    running: Option<Rsyslog>,
    conf: String,
    pub port: u16,
    /// What it received, one message per line.
    pub out: PathBuf,
    _out_dir: tempfile::TempDir,
}

impl Imrelp {
    /// Starts it on a free port with the server certificate of `certs`.
    pub fn start(certs: &TestCerts) -> Self {
        let port = free_tcp_port();
        let out_dir = tempfile::tempdir().expect("imrelp out dir");
        let out = out_dir.path().join("received.log");
        let conf = format!(
            r#"global(maxMessageSize="300k")
main_queue(queue.type="Direct")
module(load="imrelp" tls.tlslib="openssl")
input(type="imrelp" port="{port}" maxDataSize="300k" tls="on"
      tls.cacert="{ca}" tls.mycert="{cert}" tls.myprivkey="{key}")
template(name="asReceived" type="string" string="%rawmsg%\n")
action(type="omfile" file="{out}" template="asReceived")
"#,
            ca = certs.ca_pem.display(),
            cert = certs.server_cert.display(),
            key = certs.server_key.display(),
            out = out.display(),
        );
        let mut me = Self {
            running: None,
            conf,
            port,
            out,
            _out_dir: out_dir,
        };
        me.restart();
        me
    }

    /// Starts rsyslogd again (after `kill9`) on the same port and file.
    pub fn restart(&mut self) {
        let dir = tempfile::tempdir().expect("rsyslog dir");
        let conf = format!(
            "global(workDirectory=\"{}\")\n{}",
            dir.path().display(),
            self.conf
        );
        self.running = Some(Rsyslog::start_conf(dir, &conf, self.port));
    }

    /// `kill -9` of the rsyslogd.
    pub fn kill9(&mut self) {
        // Rsyslog's drop sends SIGKILL and reaps it.
        self.running = None;
    }

    /// SIGSTOP: it keeps its sockets and answers nothing.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if let Some(r) = &self.running {
            let pid = i32::try_from(r.pid()).expect("pid");
            kill(Pid::from_raw(pid), signal).expect("signal the test's rsyslogd");
        }
    }

    /// Every line received so far, each with its final `\n`.
    pub fn lines(&self) -> Vec<Vec<u8>> {
        let bytes = std::fs::read(&self.out).unwrap_or_default();
        bytes
            .split_inclusive(|b| *b == b'\n')
            .filter(|l| l.ends_with(b"\n"))
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// rsyslogd's own log, for assertion messages.
    pub fn log(&self) -> String {
        self.running.as_ref().map(Rsyslog::log).unwrap_or_default()
    }
}

impl Drop for Imrelp {
    fn drop(&mut self) {
        // A paused rsyslogd is resumed first so that its SIGKILL is not held back.
        self.resume();
    }
}
