//! The request path's routing work allocates nothing: the decision in each of its forms, every
//! balancer's pick, and the in-flight guards, measured with a counting allocator.

use std::net::IpAddr;
use std::path::Path;

use http::{HeaderMap, HeaderValue};
use turnout_config::Config;
use turnout_core::{Command, RequestInfo, RoutingSnapshot};

fn snapshot(routing: &str, balance: &str) -> RoutingSnapshot {
    let text = format!(
        "[pools.blue]\nbalance = \"{balance}\"\nservers = [\"127.0.0.1:3000\", {{ addr = \"127.0.0.1:3001\", weight = {w} }}, \"127.0.0.1:3002\"]\n\
         [pools.green]\nservers = [\"127.0.0.1:4000\"]\n[routing]\nactive = \"blue\"\n{routing}\n",
        w = if balance == "round_robin" { 1 } else { 2 }
    );
    let config = Config::parse(&text, Path::new("t.toml")).expect("config");
    let s0 = RoutingSnapshot::bootstrap(&config, None).expect("snapshot");
    Command::Split {
        weights: vec![("blue".into(), 95), ("green".into(), 5)],
    }
    .apply(&s0)
    .expect("split")
    .expect("changed")
}

#[test]
fn routing_a_request_allocates_nothing() {
    let rules = "preview_header = \"X-Turnout-Pool\"\npreview_token = \"t\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n\
                 [[routing.rules]]\nheader = \"X-Beta\"\nequals = \"1\"\nto = \"green\"\n\
                 [[routing.rules]]\ncookie = \"group\"\nprefix = \"beta-\"\nto = \"green\"\n\
                 [[routing.rules]]\nquery = \"v\"\nequals = \"b c\"\nto = \"green\"\n";
    let mut requests: Vec<(HeaderMap, Option<&str>)> = Vec::new();
    for (pairs, query) in [
        (vec![], None),
        (vec![("cookie", "session=1; turnout-pool=green")], None),
        (vec![("cookie", "session=1; group=beta-7")], Some("a=1")),
        (vec![("x-beta", "1")], None),
        (vec![("x-turnout-pool", "green:t")], None),
        (vec![("cookie", "turnout-preview=green:t")], None),
        (
            vec![("x-forwarded-for", "198.51.100.7, 127.0.0.2")],
            Some("a=1&v=b%20c"),
        ),
    ] {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, HeaderValue::from_static(v));
        }
        requests.push((h, query));
    }
    let modes = [
        "",
        "sticky = \"header\"\nsticky_header = \"X-User-Id\"\n",
        "sticky = \"ip\"\n",
        "sticky = \"none\"\n",
    ];
    for balance in [
        "round_robin",
        "weighted",
        "least_requests",
        "ip_hash",
        "random_two_choices",
    ] {
        for mode in modes {
            let s = snapshot(&format!("{mode}{rules}"), balance);
            // Warm up: the first clone of a shared header value may promote its buffer once.
            for (h, q) in &requests {
                let info = RequestInfo {
                    headers: h,
                    query: *q,
                    peer: IpAddr::from([127, 0, 0, 1]),
                };
                let d = s.decide(&info, 3).expect("routed");
                let _ = d.cookies.map(|c| c.cloned());
            }
            let info = allocation_counter::measure(|| {
                for draw in 0..50u64 {
                    for (h, q) in &requests {
                        let req = RequestInfo {
                            headers: h,
                            query: *q,
                            peer: IpAddr::from([127, 0, 0, 1]),
                        };
                        let d = s
                            .decide(&req, draw.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                            .expect("routed");
                        let cookies = d.cookies.map(|c| c.cloned());
                        let pool = std::sync::Arc::clone(d.pool);
                        let server = pool.pick(|| s.client_ip(&req)).expect("server");
                        let mut guard = pool.begin_request();
                        guard.on_server(server);
                        std::hint::black_box((&cookies, &guard));
                    }
                }
            });
            assert_eq!(
                info.count_total, 0,
                "balance {balance}, mode {mode:?}: {info:?}"
            );
        }
    }
}
