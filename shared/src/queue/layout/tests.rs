use super::*;

fn key(s: &str) -> Option<QueueKey> {
    s.parse().ok()
}

#[test]
fn keys_print_and_parse_back_exactly() {
    let k = QueueKey {
        protocol: Protocol::Tls,
        port: 6514,
    };
    assert_eq!(k.to_string(), "tls-6514");
    assert_eq!(key("tls-6514"), Some(k));
    for bad in [
        "",
        "tcp",
        "tcp-",
        "tcp-0",
        "tcp-065",
        "tcp-65536",
        "sctp-1",
        "tcp-1-2",
        "tcp-+1",
        "Stats",
        "stats-1",
    ] {
        assert_eq!(key(bad), None, "{bad}");
    }
}

#[test]
fn the_monitoring_queue_is_named_stats_and_parses_back() {
    assert_eq!(QueueKey::STATS.to_string(), "stats");
    assert_eq!(key("stats"), Some(QueueKey::STATS));
    let spool = SpoolDir::new(Path::new("/s"));
    assert_eq!(
        spool.journal_dir(QueueKey::STATS),
        Path::new("/s/journal-stats")
    );
}

#[test]
fn instance_name_depends_on_spool_dir_only() {
    assert_eq!(
        instance_name(Path::new("/a/b")),
        instance_name(Path::new("/a/b"))
    );
    assert_ne!(
        instance_name(Path::new("/a/b")),
        instance_name(Path::new("/a/c"))
    );
}

#[test]
fn ring_keys_and_disk_keys_come_back_from_the_names_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let instance = InstanceDir::create(&tmp.path().join("shm"), &tmp.path().join("spool")).unwrap();
    let tcp = key("tcp-514").unwrap();
    let udp = key("udp-2").unwrap();
    for name in [
        "intake-tcp-514.ring",
        "intake-udp-2.ring",
        "intake-tcp-514.ring.producer.lock",
        "intake-x.ring",
        "other.ring",
    ] {
        std::fs::write(instance.dir().join(name), b"").unwrap();
    }
    assert_eq!(instance.ring_keys().unwrap(), vec![tcp, udp]);
    assert_eq!(
        instance.ring_path(tcp),
        instance.path().join("intake-tcp-514.ring")
    );

    let spool = SpoolDir::new(&tmp.path().join("spool"));
    for d in [
        "journal-tcp-514",
        "saved-tcp-514",
        "saved-udp-2",
        "journal-bad",
        "unrelated",
    ] {
        std::fs::create_dir_all(spool.path().join(d)).unwrap();
    }
    std::fs::write(spool.path().join("journal-tls-9"), b"a file, not a folder").unwrap();
    assert_eq!(spool.keys_on_disk(), vec![tcp, udp]);
    assert_eq!(spool.journal_dir(udp), spool.path().join("journal-udp-2"));
}

#[test]
fn a_ring_moved_aside_keeps_its_bytes_and_frees_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let instance = InstanceDir::create(&tmp.path().join("shm"), tmp.path()).unwrap();
    let k = key("tcp-1").unwrap();
    std::fs::write(instance.ring_path(k), b"garbage").unwrap();
    let aside = instance.quarantine_ring(k).unwrap();
    assert!(!instance.ring_path(k).exists());
    assert_eq!(std::fs::read(&aside).unwrap(), b"garbage");
    assert!(instance.ring_keys().unwrap().is_empty());
}

#[test]
fn a_lock_is_held_by_one_holder_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let instance = InstanceDir::create(&tmp.path().join("shm"), tmp.path()).unwrap();
    let lock = InstanceDir::consumer_lock_name("tcp-514".parse().unwrap());
    let first = instance.try_lock(&lock).unwrap();
    assert!(first.is_some());
    assert!(instance.try_lock(&lock).unwrap().is_none());
    drop(first);
    assert!(instance.try_lock(&lock).unwrap().is_some());
}
