//! The routing decision, rule by rule, on snapshots built from real config text.

use std::path::Path;

use http::{HeaderMap, HeaderValue};
use turnout_config::{Config, RuleSpec};

use super::*;
use crate::command::Command;
use crate::snapshot::RoutingSnapshot;

fn snapshot(routing: &str) -> RoutingSnapshot {
    let text = format!(
        "[pools.blue]\nservers=[\"127.0.0.1:3000\"]\n[pools.green]\nservers=[\"127.0.0.1:4000\"]\n\
         [pools.grey]\nservers=[\"127.0.0.1:5000\"]\n[routing]\nactive=\"blue\"\n{routing}\n"
    );
    let config = Config::parse(&text, Path::new("t.toml")).expect("config");
    RoutingSnapshot::bootstrap(&config, None).expect("snapshot")
}

fn apply(s: &RoutingSnapshot, command: Command) -> RoutingSnapshot {
    command.apply(s).expect("valid").expect("a change")
}

fn split(s: &RoutingSnapshot, weights: &[(&str, i64)]) -> RoutingSnapshot {
    let weights = weights.iter().map(|(n, w)| (n.to_string(), *w)).collect();
    apply(s, Command::Split { weights })
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn req<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> RequestInfo<'a> {
    RequestInfo {
        headers,
        query,
        peer: IpAddr::from([192, 0, 2, 1]),
    }
}

/// Where `req` goes, with the Set-Cookie values its response gets.
fn route(s: &RoutingSnapshot, r: &RequestInfo<'_>, draw: u64) -> (String, Reason, Vec<String>) {
    let d = s.decide(r, draw).expect("routed");
    let cookies = d
        .cookies
        .iter()
        .flatten()
        .map(|c| c.to_str().expect("ascii").to_owned())
        .collect();
    (d.pool.name().to_string(), d.reason, cookies)
}

#[test]
fn the_split_lands_within_one_point_over_100k_requests() {
    let none = HeaderMap::new();
    for (blue, green) in [(95, 5), (70, 30), (50, 50), (1, 99)] {
        let s = split(&snapshot(""), &[("blue", blue), ("green", green)]);
        let mut rng = fastrand::Rng::with_seed(blue as u64);
        let n = 100_000;
        let to_green = (0..n)
            .filter(|_| {
                let d = s.decide(&req(&none, None), rng.u64(..)).expect("routed");
                d.pool.name().as_str() == "green"
            })
            .count();
        let share = to_green as f64 * 100.0 / n as f64;
        assert!(
            (share - green as f64).abs() < 1.0,
            "{blue}/{green}: green got {share:.2}%"
        );
    }
}

#[test]
fn a_cookie_keeps_a_client_on_its_pool_and_is_rewritten_when_the_pool_leaves() {
    let s = split(&snapshot(""), &[("blue", 50), ("green", 50)]);
    let none = HeaderMap::new();
    // A new client gets a pool and a cookie naming it.
    // (Draws 0-49 of each 100 land on blue, 50-99 on green.)
    let (pool, reason, cookies) = route(&s, &req(&none, None), 99);
    assert_eq!((pool.as_str(), reason), ("green", Reason::Split));
    assert_eq!(
        cookies,
        ["turnout-pool=green; Path=/; HttpOnly; SameSite=Lax"]
    );
    // With the cookie it stays there whatever the draw, and gets no new cookie.
    let with = headers(&[("cookie", "theme=dark; turnout-pool=green")]);
    for draw in 0..200 {
        assert_eq!(
            route(&s, &req(&with, None), draw),
            ("green".into(), Reason::Sticky, vec![])
        );
    }
    // Green drops to zero: the client moves, and its cookie is rewritten.
    let s = split(&s, &[("blue", 100), ("green", 0)]);
    let (pool, _, cookies) = route(&s, &req(&with, None), 1);
    assert_eq!(pool, "blue");
    assert_eq!(
        cookies,
        ["turnout-pool=blue; Path=/; HttpOnly; SameSite=Lax"]
    );
    // One pool and no cookie: nothing to remember, no cookie.
    assert_eq!(route(&s, &req(&none, None), 1).2, Vec::<String>::new());
    // An unknown pool in the cookie is no way in: it is rewritten too.
    let forged = headers(&[("cookie", "turnout-pool=grey")]);
    assert_eq!(route(&s, &req(&forged, None), 1).0, "blue");
}

#[test]
fn header_and_address_stickiness_hash_onto_the_split() {
    let s = split(
        &snapshot("sticky = \"header\"\nsticky_header = \"X-User-Id\""),
        &[("blue", 50), ("green", 50)],
    );
    let mut seen = std::collections::BTreeSet::new();
    for user in [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ] {
        let mut h = HeaderMap::new();
        h.insert("x-user-id", HeaderValue::from_static(user));
        let first = route(&s, &req(&h, None), 0);
        assert_eq!(first.1, Reason::Sticky);
        assert!(first.2.is_empty(), "no cookie in header mode");
        for draw in 1..50 {
            assert_eq!(route(&s, &req(&h, None), draw), first, "{user}");
        }
        seen.insert(first.0);
    }
    assert_eq!(seen.len(), 2, "eight users spread over both pools");

    let s = split(
        &snapshot("sticky = \"ip\"\ntrusted_proxies = [\"10.0.0.0/16\"]"),
        &[("blue", 50), ("green", 50)],
    );
    let xff = headers(&[("x-forwarded-for", "198.51.100.7")]);
    let via_alb = |n: u8| RequestInfo {
        headers: &xff,
        query: None,
        peer: IpAddr::from([10, 0, 1, n]),
    };
    // The same client through two load balancer nodes: the same pool.
    let a = route(&s, &via_alb(1), 0);
    for draw in 0..50 {
        assert_eq!(route(&s, &via_alb(2), draw), a);
    }
    assert_eq!(
        s.client_ip(&via_alb(1)),
        "198.51.100.7".parse::<IpAddr>().expect("ip")
    );
    // An untrusted peer's header is ignored.
    let direct = RequestInfo {
        headers: &xff,
        query: None,
        peer: IpAddr::from([192, 0, 2, 9]),
    };
    assert_eq!(s.client_ip(&direct), IpAddr::from([192, 0, 2, 9]));
}

#[test]
fn preview_goes_to_the_named_pool_whatever_the_split() {
    let s = snapshot("preview_header = \"X-Turnout-Pool\"");
    let h = headers(&[("x-turnout-pool", "green")]);
    let (pool, reason, cookies) = route(&s, &req(&h, None), 0);
    assert_eq!((pool.as_str(), reason), ("green", Reason::Preview));
    assert_eq!(
        cookies,
        ["turnout-preview=green; Path=/; HttpOnly; SameSite=Lax"]
    );
    // The cookie alone keeps a browser there.
    let c = headers(&[("cookie", "turnout-preview=green")]);
    assert_eq!(
        route(&s, &req(&c, None), 0),
        ("green".into(), Reason::Preview, vec![])
    );
    // A header naming no pool is refused; a stale cookie is ignored.
    let bad = headers(&[("x-turnout-pool", "purple")]);
    assert_eq!(
        s.decide(&req(&bad, None), 0).err(),
        Some(Refusal::PreviewPool("purple".into()))
    );
    let stale = headers(&[("cookie", "turnout-preview=purple")]);
    assert_eq!(route(&s, &req(&stale, None), 0).0, "blue");

    let s = snapshot("preview_header = \"X-Turnout-Pool\"\npreview_token = \"s3cret\"");
    for value in ["green", "green:wrong", "green:s3cre", ":s3cret"] {
        let mut h = HeaderMap::new();
        h.insert(
            "x-turnout-pool",
            HeaderValue::from_str(value).expect("value"),
        );
        let got = s.decide(&req(&h, None), 0).err();
        let want = if value.starts_with(':') {
            Refusal::PreviewPool(String::new())
        } else {
            Refusal::PreviewToken
        };
        assert_eq!(got, Some(want), "{value}");
    }
    let h = headers(&[("x-turnout-pool", "green:s3cret")]);
    let (pool, _, cookies) = route(&s, &req(&h, None), 0);
    assert_eq!(pool, "green");
    assert_eq!(
        cookies,
        ["turnout-preview=green:s3cret; Path=/; HttpOnly; SameSite=Lax"]
    );
    let forged = headers(&[("cookie", "turnout-preview=green")]);
    assert_eq!(
        route(&s, &req(&forged, None), 0).0,
        "blue",
        "a cookie without the token is ignored"
    );
}

#[test]
fn rules_match_in_order_and_fall_through_to_the_split() {
    let spec = |json: &str| serde_json::from_str::<RuleSpec>(json).expect("rule");
    let s = apply(
        &snapshot(""),
        Command::SetRules {
            rules: vec![
                spec(r#"{"header":"X-Beta","equals":"1","to":"green"}"#),
                spec(r#"{"cookie":"group","prefix":"test-","to":"grey"}"#),
                spec(r#"{"query":"variant","equals":"b c","to":"green"}"#),
                spec(r#"{"header":"X-Beta","prefix":"","to":"grey"}"#.replace(r#""prefix":"""#, r#""prefix":"1""#).as_str()),
            ],
        },
    );
    type Headers = &'static [(&'static str, &'static str)];
    let cases: [(Headers, Option<&str>, &str, Reason); 7] = [
        (&[("x-beta", "1")], None, "green", Reason::Rule(0)),
        // Rule 0 wants exactly "1"; rule 3 takes the prefix.
        (&[("x-beta", "12")], None, "grey", Reason::Rule(3)),
        (
            &[("cookie", "a=b; group=test-7")],
            None,
            "grey",
            Reason::Rule(1),
        ),
        // First match wins: rule 0 before rule 1.
        (
            &[("x-beta", "1"), ("cookie", "group=test-7")],
            None,
            "green",
            Reason::Rule(0),
        ),
        (&[], Some("x=1&variant=b%20c"), "green", Reason::Rule(2)),
        (&[], Some("variant=b%20cd"), "blue", Reason::Split),
        (
            &[("cookie", "group=prod")],
            Some("variant"),
            "blue",
            Reason::Split,
        ),
    ];
    for (h, q, pool, reason) in cases {
        let h = headers(h);
        let (got, why, _) = route(&s, &req(&h, q), 0);
        assert_eq!((got.as_str(), why), (pool, reason), "{h:?} {q:?}");
    }
    // Preview beats rules.
    let s2 = apply(
        &snapshot("preview_header = \"X-Turnout-Pool\""),
        Command::SetRules {
            rules: vec![spec(r#"{"header":"X-Beta","equals":"1","to":"green"}"#)],
        },
    );
    let h = headers(&[("x-beta", "1"), ("x-turnout-pool", "grey")]);
    assert_eq!(route(&s2, &req(&h, None), 0).0, "grey");
}

#[test]
fn bad_splits_and_rules_are_refused_by_name() {
    let s = snapshot("");
    let err = |c: Command| c.apply(&s).expect_err("refused").to_string();
    let weights = |w: &[(&str, i64)]| Command::Split {
        weights: w.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
    };
    assert!(err(weights(&[("blue", -5)])).contains("weight -5 for pool \"blue\""));
    assert!(err(weights(&[("blue", 0), ("green", 0)])).contains("every weight is zero"));
    assert!(err(weights(&[("purple", 5)])).contains("unknown pool \"purple\""));
    let rule = |json: &str| Command::SetRules {
        rules: vec![serde_json::from_str(json).expect("json")],
    };
    assert!(
        err(rule(r#"{"header":"x","equals":"1","to":"purple"}"#)).contains("rule 1: unknown pool")
    );
    assert!(err(rule(r#"{"equals":"1","to":"green"}"#)).contains("rule 1: give exactly one"));
    assert!(matches!(
        weights(&[("blue", -5)]).apply(&s),
        Err(CoreError::Invalid(_))
    ));
    // A split is one step for rollback: it restores the split before.
    let s1 = split(&s, &[("blue", 90), ("green", 10)]);
    let s2 = apply(&s1, Command::Switch { to: "green".into() });
    assert_eq!(s2.weights.to_string(), "green=100");
    let s3 = apply(&s2, Command::Rollback);
    assert_eq!(s3.weights.to_string(), "blue=90 green=10");
    assert_eq!(s3.active.name().as_str(), "blue");
    // A pool with weight, or that a rule sends to, keeps its servers.
    let empty_green = Command::PutPool {
        name: "green".into(),
        servers: vec![],
    };
    assert!(matches!(
        empty_green.apply(&s3),
        Err(CoreError::PoolInUse { .. })
    ));
}

#[test]
fn secrets_compare_whole() {
    use crate::decide::same_secret;
    assert!(same_secret(b"s3cret", b"s3cret"));
    assert!(!same_secret(b"s3cret", b"s3creT"));
    assert!(!same_secret(b"s3cret", b"s3cre"));
    assert!(!same_secret(b"", b"x"));
    assert!(same_secret(b"", b""));
}
