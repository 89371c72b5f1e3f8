//! Per-intake destinations: `region` and `endpoint` (config/route.rs).

use super::*;

fn base() -> String {
    entry("A", "tcp", "20516", K1)
}

#[test]
fn no_route_fields_mean_the_global_destination() {
    let f = Fixture::new();
    let cfg = f.ok(&format!("intakes:\n{}", base()));
    assert_eq!(cfg.intakes[0].destination, f.settings().destination);
}

#[test]
fn a_region_or_an_endpoint_sets_the_intake_s_destination() {
    let f = Fixture::new();
    let yaml = format!(
        "intakes:\n{}  region: usa1\n{}  endpoint: \"[::1]:6514\"\n",
        base(),
        entry("B", "udp", "20517", K2)
    );
    let cfg = f.ok(&yaml);
    assert_eq!(cfg.intakes[0].destination.host, "intake.usa1.sekoia.io");
    assert_eq!(cfg.intakes[0].destination.port, 10514);
    assert_eq!(cfg.intakes[1].destination.host, "::1");
    assert_eq!(cfg.intakes[1].destination.port, 6514);
}

#[test]
fn the_monitoring_entry_has_its_own_destination() {
    let f = Fixture::new();
    let yaml = format!(
        "intakes:\n{}- name: Monitoring\n  stats: true\n  intake_key: {K2}\n  region: fra2\n",
        base()
    );
    let cfg = f.ok(&yaml);
    let stats = cfg.stats.expect("monitoring entry");
    assert_eq!(stats.destination.host, "intake.fra2.sekoia.io");
}

#[test]
fn bad_routes_are_listed_with_the_field_and_the_fix() {
    let f = Fixture::new();
    let problems = |extra: &str| f.problems(&format!("intakes:\n{}{extra}", base()));
    let unknown = problems("  region: PAR1\n");
    let unknown = only(&unknown);
    assert!(
        unknown.contains("region") && unknown.contains("USA1"),
        "{unknown}"
    );
    let other = problems("  region: other\n");
    assert!(only(&other).contains("endpoint"), "{other:?}");
    let both = problems("  region: FRA2\n  endpoint: example.org\n");
    assert!(only(&both).contains("both"), "{both:?}");
    let bad = problems("  endpoint: \"https://example.org/x\"\n");
    assert!(only(&bad).contains("endpoint"), "{bad:?}");
    f.ok(&format!(
        "intakes:\n{}  region: other\n  endpoint: example.org:6514\n",
        base()
    ));
}

#[test]
fn two_spellings_of_one_place_are_one_destination() {
    let f = Fixture::new();
    let yaml = format!(
        "intakes:\n{}  region: fra1\n{}  endpoint: INTAKE.Sekoia.io\n",
        base(),
        entry("B", "tcp", "20517", K2)
    );
    let cfg = f.ok(&yaml);
    assert!(cfg.intakes[0]
        .destination
        .same_place(&cfg.intakes[1].destination));
}
