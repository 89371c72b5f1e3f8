//! Resolver behaviours, with an injected lookup function instead of DNS.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Polls `host_for` until it answers `want` (lookups finish on other threads).
fn wait_for_host(resolver: &Resolver, addr: IpAddr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while &*resolver.host_for(addr) != want {
        assert!(
            Instant::now() < deadline,
            "host_for({addr}) never became {want}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A lookup that answers from a mutable table and counts its calls.
fn table_lookup(table: Arc<Mutex<HashMap<IpAddr, String>>>, calls: Arc<AtomicUsize>) -> Lookup {
    Arc::new(move |addr| {
        calls.fetch_add(1, Ordering::SeqCst);
        table.lock().unwrap().get(&addr).cloned()
    })
}

#[test]
fn disabled_resolver_returns_the_ip_text() {
    let resolver = Resolver::new(false);
    assert_eq!(&*resolver.host_for(ip("192.0.2.7")), "192.0.2.7");
    assert_eq!(&*resolver.host_for(ip("2001:db8::1")), "2001:db8::1");
}

#[test]
fn ipv4_mapped_ipv6_is_shown_as_ipv4() {
    let resolver = Resolver::new(false);
    assert_eq!(&*resolver.host_for(ip("::ffff:192.0.2.9")), "192.0.2.9");
}

#[test]
fn first_answer_is_the_ip_then_the_cached_name_with_local_domain_stripped() {
    let table = Arc::new(Mutex::new(HashMap::new()));
    table
        .lock()
        .unwrap()
        .insert(ip("192.0.2.1"), "FW01.Corp.Example.".to_string());
    table
        .lock()
        .unwrap()
        .insert(ip("192.0.2.2"), "db.other.example".to_string());
    let calls = Arc::new(AtomicUsize::new(0));
    let resolver = Resolver::with_lookup(
        table_lookup(table, calls.clone()),
        Some("corp.example".to_string()),
    );
    assert_eq!(&*resolver.host_for(ip("192.0.2.1")), "192.0.2.1");
    wait_for_host(&resolver, ip("192.0.2.1"), "fw01");
    wait_for_host(&resolver, ip("::ffff:192.0.2.2"), "db.other.example");
    for _ in 0..100 {
        resolver.host_for(ip("192.0.2.1"));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one lookup per sender while fresh"
    );
}

#[test]
fn failed_lookup_is_cached_for_the_negative_ttl_then_retried() {
    let table = Arc::new(Mutex::new(HashMap::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let resolver = Resolver::with_lookup(table_lookup(table.clone(), calls.clone()), None)
        .with_ttls(Duration::from_secs(600), Duration::from_millis(200));
    let addr = ip("198.51.100.4");
    assert_eq!(&*resolver.host_for(addr), "198.51.100.4");
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(&*resolver.host_for(addr), "198.51.100.4");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "negative answer is cached");
    table
        .lock()
        .unwrap()
        .insert(addr, "late.example".to_string());
    std::thread::sleep(Duration::from_millis(250));
    wait_for_host(&resolver, addr, "late.example");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn expired_name_is_served_while_its_refresh_runs() {
    let answer = Arc::new(Mutex::new(("old.example".to_string(), Duration::ZERO)));
    let lookup: Lookup = {
        let answer = answer.clone();
        Arc::new(move |_| {
            let (name, delay) = answer.lock().unwrap().clone();
            std::thread::sleep(delay);
            Some(name)
        })
    };
    let resolver = Resolver::with_lookup(lookup, None)
        .with_ttls(Duration::from_millis(100), Duration::from_millis(100));
    let addr = ip("203.0.113.5");
    resolver.host_for(addr);
    wait_for_host(&resolver, addr, "old.example");
    *answer.lock().unwrap() = ("new.example".to_string(), Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        &*resolver.host_for(addr),
        "old.example",
        "stale name while refreshing"
    );
    wait_for_host(&resolver, addr, "new.example");
}

#[test]
fn host_for_never_waits_for_a_slow_lookup() {
    let lookup: Lookup = Arc::new(|_| {
        std::thread::sleep(Duration::from_secs(2));
        Some("slow.example".to_string())
    });
    let resolver = Resolver::with_lookup(lookup, None);
    let started = Instant::now();
    for n in 0..50u8 {
        resolver.host_for(IpAddr::from([10, 0, 0, n]));
    }
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[test]
fn concurrent_lookups_are_bounded_and_the_rest_retried_later() {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let lookup: Lookup = {
        let (active, peak) = (active.clone(), peak.clone());
        Arc::new(move |addr| {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            active.fetch_sub(1, Ordering::SeqCst);
            Some(format!("h{}", addr.to_string().replace('.', "-")))
        })
    };
    let resolver = Resolver::with_lookup(lookup, None);
    let addrs: Vec<IpAddr> = (1..=20u8).map(|n| IpAddr::from([10, 1, 0, n])).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let named = addrs
            .iter()
            .filter(|a| resolver.host_for(**a).starts_with('h'))
            .count();
        if named == addrs.len() {
            break;
        }
        assert!(Instant::now() < deadline, "only {named} names after 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(peak.load(Ordering::SeqCst) <= MAX_CONCURRENT_LOOKUPS);
}

#[test]
fn spoofed_or_malformed_ptr_names_are_refused() {
    assert_eq!(display_name("192.0.2.1", None), None);
    assert_eq!(display_name("::1", None), None);
    assert_eq!(display_name("evil host", None), None);
    assert_eq!(display_name(".", None), None);
    assert_eq!(
        display_name("ok-host_1.example.", None).as_deref(),
        Some("ok-host_1.example")
    );
}

#[test]
fn local_domain_is_stripped_only_on_a_label_boundary() {
    let domain = Some("example.com");
    assert_eq!(display_name("a.example.com", domain).as_deref(), Some("a"));
    assert_eq!(
        display_name("a.b.EXAMPLE.com.", domain).as_deref(),
        Some("a.b")
    );
    assert_eq!(
        display_name("notexample.com", domain).as_deref(),
        Some("notexample.com")
    );
    assert_eq!(
        display_name("example.com", domain).as_deref(),
        Some("example.com")
    );
}

#[test]
fn resolv_conf_last_domain_or_first_search_entry_wins() {
    assert_eq!(resolv_conf_domain("nameserver 1.1.1.1\n"), None);
    assert_eq!(
        resolv_conf_domain("domain corp.example\n").as_deref(),
        Some("corp.example")
    );
    let both = "domain a.example\nsearch b.example c.example\n";
    assert_eq!(resolv_conf_domain(both).as_deref(), Some("b.example"));
    assert_eq!(
        resolv_conf_domain("search x.example.\n# c\n").as_deref(),
        Some("x.example")
    );
}

#[test]
fn system_lookup_of_loopback_answers_without_failing() {
    // Environment-dependent: only checks that the real getnameinfo path runs and that any
    // answer it gives survives display_name.
    if let Some(name) = system_reverse_lookup(ip("127.0.0.1")) {
        assert!(!name.is_empty());
        assert!(
            display_name(&name, None).is_some(),
            "loopback name {name:?}"
        );
    }
    let resolver = Resolver::new(true);
    assert_eq!(
        &*resolver.host_for(ip("127.0.0.1")),
        "127.0.0.1",
        "first answer is the IP"
    );
}

/// A lookup that answers `name` after `delay`, for any address, counting its calls.
fn slow_lookup(name: &'static str, delay: Duration, calls: Arc<AtomicUsize>) -> Lookup {
    Arc::new(move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(delay);
        Some(name.to_string())
    })
}

#[tokio::test]
async fn first_event_of_a_new_sender_waits_for_its_name() {
    let calls = Arc::new(AtomicUsize::new(0));
    let lookup = slow_lookup("slow.example", Duration::from_millis(200), calls.clone());
    let resolver = Resolver::with_lookup(lookup, None).with_wait(Duration::from_secs(5));
    let addr = ip("192.0.2.20");
    let started = Instant::now();
    let first = resolver.host_waiting(addr).await;
    assert_eq!(&*first.host, "slow.example");
    assert!(!first.timed_out);
    assert!(started.elapsed() >= Duration::from_millis(150), "it waited");
    let again = resolver.host_or_wait(addr);
    assert!(
        matches!(again, SenderHost::Known(ref h) if &**h == "slow.example"),
        "known at once afterwards"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn every_waiter_of_one_new_sender_gets_the_name_from_one_lookup() {
    let calls = Arc::new(AtomicUsize::new(0));
    let lookup = slow_lookup("shared.example", Duration::from_millis(200), calls.clone());
    let resolver = Arc::new(Resolver::with_lookup(lookup, None).with_wait(Duration::from_secs(5)));
    let addr = ip("192.0.2.21");
    let waits = (0..3).map(|_| {
        let resolver = resolver.clone();
        tokio::spawn(async move { resolver.host_waiting(addr).await })
    });
    for wait in waits.collect::<Vec<_>>() {
        assert_eq!(&*wait.await.unwrap().host, "shared.example");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn lookup_slower_than_the_wait_falls_back_to_the_ip_then_the_name_follows() {
    let calls = Arc::new(AtomicUsize::new(0));
    let lookup = slow_lookup("late.example", Duration::from_millis(400), calls);
    let resolver = Resolver::with_lookup(lookup, None).with_wait(Duration::from_millis(100));
    let addr = ip("192.0.2.22");
    let started = Instant::now();
    let first = resolver.host_waiting(addr).await;
    assert_eq!(&*first.host, "192.0.2.22");
    assert!(first.timed_out, "the timeout is reported");
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "bounded by the wait"
    );
    // Past the deadline nobody waits for this sender: the IP at once, not timed out again.
    let later = resolver.host_waiting(addr).await;
    assert_eq!(
        later,
        WaitedHost {
            host: Arc::from("192.0.2.22"),
            timed_out: false
        }
    );
    wait_for_host(&resolver, addr, "late.example");
}

#[tokio::test]
async fn zero_wait_never_waits() {
    let calls = Arc::new(AtomicUsize::new(0));
    let lookup = slow_lookup("n.example", Duration::from_millis(200), calls);
    let resolver = Resolver::with_lookup(lookup, None).with_wait(Duration::ZERO);
    let addr = ip("192.0.2.23");
    assert!(matches!(resolver.host_or_wait(addr), SenderHost::Known(_)));
    wait_for_host(&resolver, addr, "n.example");
}

#[tokio::test]
async fn disabled_resolver_never_waits() {
    let resolver = Resolver::new(false);
    let host = resolver.host_or_wait(ip("192.0.2.24"));
    assert!(matches!(host, SenderHost::Known(ref h) if &**h == "192.0.2.24"));
}

#[tokio::test]
async fn expired_name_is_served_without_waiting_while_it_refreshes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let lookup = slow_lookup("kept.example", Duration::from_millis(300), calls.clone());
    let resolver = Resolver::with_lookup(lookup, None)
        .with_ttls(Duration::from_millis(50), Duration::from_millis(50))
        .with_wait(Duration::from_secs(5));
    let addr = ip("192.0.2.25");
    assert_eq!(&*resolver.host_waiting(addr).await.host, "kept.example");
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "no refresh started");
        let host = resolver.host_or_wait(addr);
        assert!(matches!(host, SenderHost::Known(ref h) if &**h == "kept.example"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn new_senders_beyond_the_concurrent_lookups_queue_and_all_get_their_names() {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let lookup: Lookup = {
        let (active, peak) = (active.clone(), peak.clone());
        Arc::new(move |addr| {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            active.fetch_sub(1, Ordering::SeqCst);
            Some(format!("h{}", addr.to_string().replace('.', "-")))
        })
    };
    let resolver = Arc::new(Resolver::with_lookup(lookup, None).with_wait(Duration::from_secs(10)));
    let senders = 4 * MAX_CONCURRENT_LOOKUPS as u8;
    let waits: Vec<_> = (1..=senders)
        .map(|n| {
            let resolver = resolver.clone();
            let addr = IpAddr::from([10, 2, 0, n]);
            tokio::spawn(async move { (addr, resolver.host_waiting(addr).await) })
        })
        .collect();
    let started = Instant::now();
    for wait in waits {
        let (addr, got) = wait.await.unwrap();
        assert!(!got.timed_out, "{addr} timed out");
        assert_eq!(
            &*got.host,
            format!("h{}", addr.to_string().replace('.', "-"))
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "queued lookups run in turn"
    );
    assert!(peak.load(Ordering::SeqCst) <= MAX_CONCURRENT_LOOKUPS);
}
