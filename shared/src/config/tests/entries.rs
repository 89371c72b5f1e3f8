//! Per-entry fields and checks across entries.

use super::*;
use crate::config::validate::default_queue_size;

#[test]
fn reference_example_loads_with_ids_metric_names_and_sources() {
    let f = Fixture::new();
    let text = format!(
        "---\nintakes:\n{}{}{}",
        entry("Techno 1", "tcp", "20516", K1),
        entry("Techno2", "UDP", "20517", K2),
        entry("Techno3", "Tcp", "20518", K3)
    );
    let cfg = f.ok(&text);
    assert_eq!(cfg.intakes.len(), 3);
    let first = &cfg.intakes[0];
    assert_eq!(
        (first.id, first.name.as_str(), first.metric_name.as_str()),
        (0, "Techno 1", "techno_1")
    );
    assert_eq!(
        (first.protocol, first.port, first.debug),
        (Protocol::Tcp, 20516, false)
    );
    assert_eq!(first.source, f.path("intakes.yaml"));
    assert_eq!(cfg.intakes[1].protocol, Protocol::Udp);
    assert_eq!(cfg.intakes[2].id, 2);
    assert!(cfg
        .intakes
        .iter()
        .all(|i| i.queue_size == 33_333 && i.tls.is_none()));
    assert!(cfg.stats.is_none() && cfg.warnings.is_empty());
}

#[test]
fn default_queue_size_rounds_half_to_even_like_python() {
    assert_eq!(default_queue_size(100_000, 3), 33_333);
    assert_eq!(default_queue_size(2_000_000, 3), 666_667);
    assert_eq!(default_queue_size(5, 2), 2); // round(2.5) == 2
    assert_eq!(default_queue_size(7, 2), 4); // round(3.5) == 4
    assert_eq!(default_queue_size(1, 3), 1); // never 0
    assert_eq!(default_queue_size(10, 0), 10);
}

#[test]
fn monitoring_entry_counts_in_the_default_share_and_keeps_its_place() {
    let f = Fixture::new();
    let mut s = f.settings();
    s.memory_messages = 2_000_000;
    let text = format!(
        "intakes:\n- name: Monitoring\n  stats: True\n  intake_key: {K3}\n{}{}",
        entry("A", "tcp", "1514", K1),
        entry("B", "udp", "1514", K2)
    );
    f.write("intakes.yaml", &text);
    let cfg = load(s).map_err(|e| e.to_string()).expect("loads");
    let stats = cfg.stats.as_ref().expect("stats entry");
    assert_eq!(
        (stats.name.as_str(), stats.queue_size, stats.position),
        ("Monitoring", 666_667, 0)
    );
    assert_eq!(cfg.intakes[0].queue_size, 666_667);
    assert_eq!(cfg.intakes[0].id, 0);
}

#[test]
fn yaml11_booleans_drive_debug_and_stats() {
    let f = Fixture::new();
    let text = format!(
        "intakes:\n{}  debug: yes\n{}  debug: Off\n  stats: no\n- name: M\n  stats: ON\n  intake_key: {K3}\n",
        entry("A", "tcp", "1", K1),
        entry("B", "tcp", "2", K2)
    );
    let cfg = f.ok(&text);
    assert!(cfg.intakes[0].debug);
    assert!(!cfg.intakes[1].debug, "stats: no is a regular intake");
    assert!(cfg.stats.is_some());
}

#[test]
fn port_given_as_string_and_explicit_queue_size_are_accepted() {
    let f = Fixture::new();
    let cfg = f.ok(&format!(
        "intakes:\n{}  queue_size: \"5000\"\n",
        entry("A", "tcp", "\"20516\"", K1)
    ));
    assert_eq!(
        (cfg.intakes[0].port, cfg.intakes[0].queue_size),
        (20516, 5000)
    );
}

#[test]
fn port_out_of_range_names_file_entry_field_and_fix() {
    let f = Fixture::new();
    let p = f.problems(&format!(
        "intakes:\n{}",
        entry("Techno1", "tcp", "70000", K1)
    ));
    let expected = format!(
        "{}: intake \"Techno1\": field \"port\": 70000 is out of range; use a port between 1 and 65535",
        f.path("intakes.yaml").display()
    );
    assert_eq!(only(&p), expected);
    assert!(
        only(&f.problems(&format!("intakes:\n{}", entry("T", "tcp", "0", K1))))
            .contains("0 is out of range")
    );
    assert!(
        only(&f.problems(&format!("intakes:\n{}", entry("T", "tcp", "http", K1))))
            .contains("not a whole number")
    );
}

#[test]
fn every_missing_field_is_reported_and_nameless_entry_is_shown_by_index() {
    let f = Fixture::new();
    let p = f.problems(&format!(
        "intakes:\n{}- debug: true\n",
        entry("A", "tcp", "1", K1)
    ));
    assert_eq!(p.len(), 4, "{p:#?}");
    for field in ["name", "protocol", "port", "intake_key"] {
        let expected = format!("intake #2: field \"{field}\": is missing");
        assert!(
            p.iter().any(|l| l.contains(&expected)),
            "{expected} not in {p:#?}"
        );
    }
}

#[test]
fn bad_intake_keys_are_refused_with_the_reference_rule() {
    let f = Fixture::new();
    let short =
        only(&f.problems(&format!("intakes:\n{}", entry("A", "tcp", "1", "abc123")))).to_string();
    assert!(
        short.contains("does not start with 16 letters or digits"),
        "{short}"
    );
    let underscore = f.problems(&format!(
        "intakes:\n{}",
        entry("A", "tcp", "1", "INTAKE_KEY_FOR_TECHNO_1")
    ));
    assert!(only(&underscore).contains("field \"intake_key\""));
    // Anything may follow the first 16 characters, except what breaks structured data.
    f.ok(&format!(
        "intakes:\n{}",
        entry("A", "tcp", "1", "aaaaaaaaaaaaaaaa-_.x")
    ));
    for bad in [
        "aaaaaaaaaaaaaaaa\"x",
        "aaaaaaaaaaaaaaaa\\x",
        "aaaaaaaaaaaaaaaa]x",
    ] {
        let key = format!("'{bad}'");
        let p = f.problems(&format!("intakes:\n{}", entry("A", "tcp", "1", &key)));
        assert!(
            only(&p).contains("would break the structured data"),
            "{p:#?}"
        );
    }
}

#[test]
fn intake_key_read_as_a_number_asks_for_quotes() {
    let f = Fixture::new();
    let p = f.problems(&format!(
        "intakes:\n{}",
        entry("A", "tcp", "1", "1234567890123456")
    ));
    assert!(only(&p).contains("write the key in quotes"), "{p:#?}");
    f.ok(&format!(
        "intakes:\n{}",
        entry("A", "tcp", "1", "\"1234567890123456\"")
    ));
}

#[test]
fn unknown_protocol_is_refused() {
    let f = Fixture::new();
    let p = f.problems(&format!("intakes:\n{}", entry("A", "http", "1", K1)));
    assert!(only(&p)
        .contains("field \"protocol\": \"http\" is not a known protocol; use tcp, udp or tls"));
}

#[test]
fn same_port_twice_in_the_tcp_space_is_refused_but_udp_may_share_it() {
    let f = Fixture::new();
    let clash = f.problems(&format!(
        "intakes:\n{}{}",
        entry("A", "tcp", "1514", K1),
        entry("B", "tcp", "1514", K2)
    ));
    assert!(only(&clash).contains(
        "intake \"B\": field \"port\": TCP (tcp and tls) port 1514 is already used by \"A\""
    ));
    f.write("certs/server.key", "k");
    f.write("certs/server.crt", "c");
    let tls = f.problems(&format!(
        "intakes:\n{}{}",
        entry("A", "tcp", "1514", K1),
        entry("B", "tls", "1514", K2)
    ));
    assert!(only(&tls).contains("already used"));
    let udp = f.problems(&format!(
        "intakes:\n{}{}",
        entry("A", "udp", "514", K1),
        entry("B", "UDP", "514", K2)
    ));
    assert!(only(&udp).contains("UDP port 514"));
    f.ok(&format!(
        "intakes:\n{}{}",
        entry("A", "tcp", "514", K1),
        entry("B", "udp", "514", K2)
    ));
}

#[test]
fn monitoring_entry_rules() {
    let f = Fixture::new();
    let stats =
        |name: &str, key: &str| format!("- name: {name}\n  stats: true\n  intake_key: {key}\n");
    let two = f.problems(&format!("intakes:\n{}{}", stats("M1", K1), stats("M2", K2)));
    assert!(only(&two).contains("a second monitoring entry"));
    let port = f.problems(&format!("intakes:\n{}  port: 514\n", stats("M", K1)));
    assert!(only(&port).contains("does not listen on a port"));
    let cfg = f.ok(&format!("intakes:\n{}  protocol: tcp\n", stats("M", K1)));
    let warnings: Vec<String> = cfg.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("ignored for the monitoring entry"),
        "{warnings:#?}"
    );
    // A monitoring entry alone is not warned about: its reports are sent.
    let cfg = f.ok(&format!(
        "intakes:
{}",
        stats("M", K1)
    ));
    assert!(cfg.warnings.is_empty(), "{:#?}", cfg.warnings);
}

#[test]
fn unknown_field_is_a_warning_suggesting_the_closest_known_one() {
    let f = Fixture::new();
    let text = format!("intakes:\n- name: A\n  protcol: tcp\n  port: 1\n  intake_key: {K1}\n");
    let p = f.problems(&text);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p[0].contains("field \"protocol\": is missing"));
    assert!(p[1]
        .contains("field \"protcol\": warning: unknown field, ignored; did you mean `protocol`?"));
    let text = format!(
        "intakes:\n{}  colour: blue\n  Queue_Size: 5\n",
        entry("A", "tcp", "1", K1)
    );
    let cfg = f.ok(&text);
    let w: Vec<String> = cfg.warnings.iter().map(ToString::to_string).collect();
    assert!(
        w[0].contains("field \"colour\": unknown field, ignored; remove it; known fields are"),
        "{w:#?}"
    );
    assert!(w[1].contains("did you mean `queue_size`?"), "{w:#?}");
    let protcol = f.load(&format!(
        "intakes:\n- name: A\n  protcol: tcp\n  port: 1\n  intake_key: {K1}\n"
    ));
    assert!(protcol.is_err());
}

#[test]
fn protcol_suggests_protocol() {
    let (what, fix) = crate::config::entry::unknown_field("protcol");
    assert_eq!(
        (what.as_str(), fix.as_str()),
        ("unknown field, ignored", "did you mean `protocol`?")
    );
}

#[test]
fn several_problems_are_listed_at_once() {
    let f = Fixture::new();
    let text = format!(
        "intakes:\n{}{}{}- just a string\n",
        entry("A", "tcp", "99999", "short"),
        entry("B", "smtp", "25", K2),
        entry("C", "udp", "-3", K3)
    );
    let err = f.load(&text).map(|_| ()).expect_err("refused");
    assert_eq!(err.0.len(), 5, "{err}");
    assert!(err.to_string().starts_with("5 configuration problems:\n"));
}
