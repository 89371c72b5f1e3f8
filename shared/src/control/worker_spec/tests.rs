use super::*;
use crate::config::fixtures::{intake, settings};
use crate::config::Protocol;

fn spec() -> WorkerSpec {
    let config = ForwarderConfig {
        settings: settings(),
        intakes: vec![intake(0, "Firewalls", Protocol::Tcp, 20516, "KEY1")],
        stats: None,
        warnings: Vec::new(),
    };
    let role = WorkerRole::Ingest {
        intake: Box::new(config.intakes[0].clone()),
    };
    WorkerSpec::new("/dev/shm/x/1".into(), JournalSync::Always, config, role)
}

#[test]
fn a_spec_reads_back_as_written() {
    let bytes = spec().encode().unwrap();
    let read = WorkerSpec::read_from(&bytes[..]).unwrap();
    assert_eq!(read.state_dir, PathBuf::from("/dev/shm/x/1"));
    assert_eq!(read.journal_sync, JournalSync::Always);
    let WorkerRole::Ingest { intake } = read.role else {
        panic!("role changed")
    };
    assert_eq!(intake.port, 20516);
    assert_eq!(read.config.intakes.len(), 1);
}

#[test]
fn another_version_is_refused_by_name() {
    let bytes = spec().encode().unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let other = text.replacen(
        &format!("{MAGIC} {WORKER_SPEC_VERSION} "),
        &format!("{MAGIC} 99 "),
        1,
    );
    let err = WorkerSpec::read_from(other.as_bytes()).unwrap_err();
    assert!(matches!(err, SpecError::Version { found: 99 }), "{err}");
    assert!(err.to_string().contains("different builds"));
}

#[test]
fn a_truncated_spec_is_an_error() {
    let bytes = spec().encode().unwrap();
    let err = WorkerSpec::read_from(&bytes[..bytes.len() - 5]).unwrap_err();
    assert!(matches!(err, SpecError::Truncated { .. }), "{err}");
}

#[test]
fn a_terminal_or_garbage_is_not_a_spec() {
    for input in [
        &b""[..],
        b"hello\n",
        b"sekoia-worker-spec 1\n",
        b"sekoia-worker-spec 1 x\n",
    ] {
        let err = WorkerSpec::read_from(input).unwrap_err();
        assert!(matches!(err, SpecError::NotASpec), "{input:?}: {err}");
    }
}

#[test]
fn an_announced_length_beyond_the_limit_is_refused_before_reading() {
    let header = format!("{MAGIC} {WORKER_SPEC_VERSION} {}\n", MAX_SPEC_BYTES + 1);
    let err = WorkerSpec::read_from(header.as_bytes()).unwrap_err();
    assert!(matches!(err, SpecError::TooLong(_)), "{err}");
}
