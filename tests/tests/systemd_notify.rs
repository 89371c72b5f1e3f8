//! The supervisor under systemd's `Type=notify` with `WatchdogSec=`: it says READY=1 once
//! started, then WATCHDOG=1 every half period from its loop, and STOPPING=1 at a stop.
//! systemd is played by a datagram socket named in NOTIFY_SOCKET, as systemd passes it.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use sekoia_tests::{free_tcp_port, ForwarderBuilder, TestCerts, TlsSink};

#[test]
fn supervisor_feeds_the_systemd_watchdog_every_half_period() {
    let certs = TestCerts::new(&["127.0.0.1", "localhost"]);
    let sink = TlsSink::start(&certs);
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&path).expect("bind notify socket");
    systemd
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let port = free_tcp_port();
    let yaml = format!(
        "---\nintakes:\n- name: Firewalls\n  protocol: tcp\n  port: {port}\n  intake_key: WatchdogKey0123456789\n"
    );
    // 400 ms: a keep-alive every 200 ms.
    let mut fwd = ForwarderBuilder::new(&yaml, sink.port)
        .ca_file(&certs.ca_pem)
        .env("NOTIFY_SOCKET", path.to_str().expect("utf-8 path"))
        .env("WATCHDOG_USEC", "400000")
        .start();

    let mut states: Vec<(Instant, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 256];
    while Instant::now() < deadline && states.iter().filter(|(_, s)| s == "WATCHDOG=1").count() < 6
    {
        if let Ok(n) = systemd.recv(&mut buf) {
            states.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    let names: Vec<&str> = states.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        names.first(),
        Some(&"READY=1"),
        "{names:?}\n{}",
        fwd.stderr()
    );
    let pings: Vec<Instant> = states
        .iter()
        .filter(|(_, s)| s == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(pings.len() >= 6, "{names:?}\n{}", fwd.stderr());
    // Every half period (the loop turns at least once a second; 200 ms here), never a burst.
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(150) && gap <= Duration::from_secs(3),
            "keep-alive gap {gap:?}"
        );
    }

    assert!(fwd.terminate(Duration::from_secs(30)).success());
    let mut rest = Vec::new();
    while let Ok(n) = systemd.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|s| s == "STOPPING=1"), "{rest:?}");
}
