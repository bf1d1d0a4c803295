//! The limiter in paused time: rates refill as the clock moves, keys are kept apart, the
//! allow-list and dry-run, in-flight counts, and the division among fleet members.

use super::*;
use http::HeaderValue;

fn limits(text: &str) -> Limits {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[pools.blue]\nservers = [\"127.0.0.1:9\"]\n[pools.green]\nservers = [\"127.0.0.1:9\"]\n[routing]\nactive = \"blue\"\n{text}"
    );
    turnout_config::Config::parse(&config, std::path::Path::new("<test>"))
        .expect("valid")
        .limits
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// Requests from `client` until the first refusal (at most 100), counted.
fn passes(l: &Limiter, client: &str, path: &str, pool: &str, m: &Metrics) -> usize {
    (0..100)
        .take_while(|_| {
            l.check(ip(client), &HeaderMap::new(), path, Some(pool), 1, m)
                .is_ok()
        })
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_client_gets_its_burst_then_the_rate_and_others_are_untouched() {
    let l = Limiter::new(&limits(
        "[[limits.rate]]\nname = \"all\"\nrate = \"2/s\"\nburst = 5\n",
    ))
    .expect("limits");
    let m = Metrics::new();
    assert_eq!(passes(&l, "192.0.2.1", "/", "blue", &m), 5);
    let refused = l
        .check(ip("192.0.2.1"), &HeaderMap::new(), "/", Some("blue"), 1, &m)
        .expect_err("over its burst");
    assert_eq!(refused.class, "all");
    // 2/s: the next request is 500 ms away, told as one whole second.
    assert_eq!(refused.retry_after, Duration::from_secs(1));
    // Another client has its own bucket.
    assert_eq!(passes(&l, "192.0.2.2", "/", "blue", &m), 5);
    // Half a second later one more request fits, and only one.
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(passes(&l, "192.0.2.1", "/", "blue", &m), 1);
    // Once refilled and swept, the keys are gone.
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(l.tracked(), 2);
    l.sweep();
    assert_eq!(l.tracked(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_rate_scoped_to_a_path_or_a_pool_counts_only_those() {
    let l = Limiter::new(&limits(
        "[[limits.rate]]\nname = \"login\"\nrate = \"1/m\"\nburst = 2\npath_prefix = \"/login\"\n\n[[limits.rate]]\nname = \"canary\"\nrate = \"1/h\"\nburst = 3\npool = \"green\"\n",
    ))
    .expect("limits");
    let m = Metrics::new();
    assert_eq!(passes(&l, "192.0.2.1", "/login", "blue", &m), 2);
    assert_eq!(passes(&l, "192.0.2.1", "/home", "blue", &m), 100);
    assert_eq!(passes(&l, "192.0.2.3", "/home", "green", &m), 3);
    let r = l
        .check(
            ip("192.0.2.1"),
            &HeaderMap::new(),
            "/login/x",
            Some("blue"),
            1,
            &m,
        )
        .expect_err("limited");
    assert_eq!(r.class, "login");
    // One a minute: the next is up to a minute away.
    assert!(r.retry_after > Duration::from_secs(50) && r.retry_after <= Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_header_keyed_rate_counts_each_value_and_skips_requests_without_it() {
    let l = Limiter::new(&limits(
        "[[limits.rate]]\nname = \"api\"\nby = \"header:X-Api-Key\"\nrate = \"1/h\"\nburst = 2\n",
    ))
    .expect("limits");
    let m = Metrics::new();
    let with = |key: &str| {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_str(key).expect("value"));
        h
    };
    let client = ip("192.0.2.9");
    for _ in 0..2 {
        assert!(l.check(client, &with("k1"), "/", None, 1, &m).is_ok());
    }
    assert!(l.check(client, &with("k1"), "/", None, 1, &m).is_err());
    assert!(l.check(client, &with("k2"), "/", None, 1, &m).is_ok());
    // Without the header this rate does not count the request.
    for _ in 0..10 {
        assert!(l.check(client, &HeaderMap::new(), "/", None, 1, &m).is_ok());
    }
    // A huge value costs no more than a short one: a hash is kept.
    let huge = "k".repeat(8000);
    assert!(l.check(client, &with(&huge), "/", None, 1, &m).is_ok());
}

#[tokio::test(start_paused = true)]
async fn allow_listed_clients_pass_and_dry_run_only_counts() {
    let l = Limiter::new(&limits(
        "[limits]\nallow = [\"10.0.0.0/8\"]\n[[limits.rate]]\nname = \"all\"\nrate = \"1/h\"\nburst = 1\n",
    ))
    .expect("limits");
    let m = Metrics::new();
    assert_eq!(passes(&l, "10.1.2.3", "/", "blue", &m), 100);
    assert_eq!(passes(&l, "192.0.2.1", "/", "blue", &m), 1);

    let dry = Limiter::new(&limits(
        "[limits]\ndry_run = true\n[[limits.rate]]\nname = \"all\"\nrate = \"1/h\"\nburst = 1\n",
    ))
    .expect("limits");
    let m = Metrics::new();
    assert_eq!(passes(&dry, "192.0.2.1", "/", "blue", &m), 100);
    let gauges = turnout_core::metrics::Gauges {
        generation: 0,
        maintenance: false,
        pause: None,
        started_at: std::time::SystemTime::UNIX_EPOCH,
        pools: Vec::new(),
        fleet: None,
    };
    let text = m.render(&gauges, None, &[]);
    assert!(
        text.contains("turnout_limited_total{class=\"all\",outcome=\"dry_run\"} 99"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_are_bounded_per_client_until_their_guards_drop() {
    let l = Limiter::new(&limits("[limits]\nrequests_per_client = 2\n")).expect("limits");
    let m = Metrics::new();
    let c = ip("192.0.2.1");
    let a = l
        .check(c, &HeaderMap::new(), "/", None, 1, &m)
        .expect("first");
    let b = l
        .check(c, &HeaderMap::new(), "/", None, 1, &m)
        .expect("second");
    let r = l
        .check(c, &HeaderMap::new(), "/", None, 1, &m)
        .expect_err("third");
    assert_eq!(r.class, "in_flight");
    assert!(l
        .check(ip("192.0.2.2"), &HeaderMap::new(), "/", None, 1, &m)
        .is_ok());
    drop(a);
    let c2 = l
        .check(c, &HeaderMap::new(), "/", None, 1, &m)
        .expect("one left");
    drop((b, c2));
    // Nothing in flight: nothing kept for the client.
    assert!(l.requests.as_ref().expect("kept").1.is_empty());
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_bound_are_refused_unless_dry_run() {
    let l = Limiter::new(&limits("[limits]\nconnections_per_client = 1\n")).expect("limits");
    let m = Metrics::new();
    let peer = ip("192.0.2.1");
    let held = l.connection(peer, &m).expect("first");
    assert!(held.is_some());
    assert!(l.connection(peer, &m).is_err());
    drop(held);
    assert!(l.connection(peer, &m).is_ok());
}

#[tokio::test(start_paused = true)]
async fn divided_among_fleet_members_each_gets_its_share() {
    let text = "[fleet]\nname = \"shop\"\netcd = [\"http://127.0.0.1:2379\"]\n[limits]\ndivide_by_fleet = true\n[[limits.rate]]\nname = \"all\"\nrate = \"1/h\"\nburst = 12\n";
    let l = Limiter::new(&limits(text)).expect("limits");
    let m = Metrics::new();
    let count = |client: &str, members| {
        (0..100)
            .take_while(|_| {
                l.check(ip(client), &HeaderMap::new(), "/", None, members, &m)
                    .is_ok()
            })
            .count()
    };
    assert_eq!(count("192.0.2.1", 3), 4);
    assert_eq!(count("192.0.2.2", 1), 12);
    // More members than the burst: no share at all, refused with the period to wait.
    let r = l
        .check(ip("192.0.2.3"), &HeaderMap::new(), "/", None, 13, &m)
        .expect_err("no share");
    assert_eq!(r.retry_after, Duration::from_secs(3600));
    // Not yet in a roster (0 members): counted as one.
    assert_eq!(count("192.0.2.4", 0), 12);
}
