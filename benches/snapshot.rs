//! The hot path's small costs, each alone: what every request pays to find its pool (one
//! ArcSwap load, the routing decision, one Arc clone), the same while another thread switches
//! pools as fast as it can, the decision alone in its costliest form (a split, a sticky cookie,
//! preview on, rules that all have to be tried) and each balancer's pick, what a switch costs
//! (build the next snapshot, one pointer store), and the header rewrite every forwarded request
//! gets.
//!
//! Run: `cargo bench --bench snapshot`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use turnout_config::Config;
use turnout_core::{Command, Control, RequestInfo, Router, RoutingSnapshot};

const LOCAL: fn() -> std::net::IpAddr = || std::net::IpAddr::from([127, 0, 0, 1]);

fn router() -> Router {
    let config = Config::parse(
        "[pools.blue]\nservers=[\"127.0.0.1:3000\",\"127.0.0.1:3001\"]\n\
         [pools.green]\nservers=[\"127.0.0.1:4000\",\"127.0.0.1:4001\"]\n[routing]\nactive=\"blue\"\n",
        std::path::Path::new("bench.toml"),
    )
    .expect("config");
    Router::new(RoutingSnapshot::bootstrap(&config, None).expect("snapshot"))
}

fn snapshot(c: &mut Criterion) {
    let router = router();
    c.bench_function(
        "route: load snapshot, pick upstream, count in flight",
        |b| {
            b.iter(|| {
                let headers = http::HeaderMap::new();
                let info = RequestInfo {
                    headers: &headers,
                    query: None,
                    peer: LOCAL(),
                };
                let pool = {
                    let snapshot = router.load();
                    let decision = snapshot.decide(&info, 7).expect("routed");
                    std::sync::Arc::clone(decision.pool)
                };
                let upstream = pool.pick(LOCAL).expect("server").authority.clone();
                let guard = pool.begin_request();
                black_box((&upstream, &guard));
            })
        },
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let control = Control::new(router.clone(), None);
    let mut to_green = true;
    c.bench_function("switch: apply + publish (no state file)", |b| {
        b.iter(|| {
            let to = if to_green { "green" } else { "blue" };
            to_green = !to_green;
            rt.block_on(control.apply(Command::Switch { to: to.into() }, false))
                .expect("switch");
        })
    });
}

fn under_contention(c: &mut Criterion) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let router = router();
    let control = Control::new(router.clone(), None);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let mut switches = 0u64;
            // Bounded: stops when the bench ends, or after ten million switches.
            while !stop.load(Ordering::Relaxed) && switches < 10_000_000 {
                let to = if switches % 2 == 0 { "green" } else { "blue" };
                rt.block_on(control.apply(Command::Switch { to: to.into() }, false))
                    .expect("switch");
                switches += 1;
            }
            switches
        })
    };
    c.bench_function("route while another thread switches without pause", |b| {
        b.iter(|| {
            let pool = router.active();
            black_box(pool.pick(LOCAL).expect("server"));
        })
    });
    stop.store(true, Ordering::Relaxed);
    let switches = writer.join().expect("writer");
    eprintln!("(the writer made {switches} switches meanwhile)");
}

/// The routing decision alone, in its costliest everyday form, and each balancer's pick.
fn decision(c: &mut Criterion) {
    let config = Config::parse(
        r#"
[pools.blue]
servers = ["127.0.0.1:3000", "127.0.0.1:3001", "127.0.0.1:3002"]
[pools.green]
servers = ["127.0.0.1:4000", "127.0.0.1:4001", "127.0.0.1:4002"]
[routing]
active = "blue"
preview_header = "X-Turnout-Pool"
preview_token = "s3cret"
[[routing.rules]]
header = "X-Beta"
equals = "1"
to = "green"
[[routing.rules]]
cookie = "group"
prefix = "beta-"
to = "green"
[[routing.rules]]
query = "variant"
equals = "b"
to = "green"
"#,
        std::path::Path::new("bench.toml"),
    )
    .expect("config");
    let s0 = RoutingSnapshot::bootstrap(&config, None).expect("snapshot");
    let snapshot = Command::Split {
        weights: vec![("blue".into(), 95), ("green".into(), 5)],
    }
    .apply(&s0)
    .expect("split")
    .expect("changed");
    let mut headers = http::HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("cookie", "session=0123456789abcdef; theme=dark; group=prod"),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        headers.insert(k, http::HeaderValue::from_static(v));
    }
    let new_client = RequestInfo {
        headers: &headers,
        query: Some("page=2&sort=price"),
        peer: LOCAL(),
    };
    let mut sticky_headers = headers.clone();
    sticky_headers.insert(
        "cookie",
        http::HeaderValue::from_static(
            "session=0123456789abcdef; theme=dark; group=prod; turnout-pool=green",
        ),
    );
    let returning = RequestInfo {
        headers: &sticky_headers,
        ..new_client
    };
    let mut draw = 0u64;
    c.bench_function(
        "decision: preview off-header, 3 rules missed, split 95/5, new client",
        |b| {
            b.iter(|| {
                draw = draw.wrapping_add(0x9e37_79b9_7f4a_7c15);
                black_box(
                    snapshot
                        .decide(black_box(&new_client), draw)
                        .expect("routed")
                        .pool,
                );
            })
        },
    );
    c.bench_function(
        "decision: same, returning client with its sticky cookie",
        |b| {
            b.iter(|| {
                black_box(
                    snapshot
                        .decide(black_box(&returning), 1)
                        .expect("routed")
                        .pool,
                )
            })
        },
    );

    for balance in [
        "round_robin",
        "weighted",
        "least_requests",
        "ip_hash",
        "random_two_choices",
    ] {
        let config = Config::parse(
            &format!(
                "[pools.blue]\nbalance = \"{balance}\"\nservers = [\"127.0.0.1:3000\", \"127.0.0.1:3001\", \"127.0.0.1:3002\", \"127.0.0.1:3003\"]\n[routing]\nactive = \"blue\"\n"
            ),
            std::path::Path::new("bench.toml"),
        )
        .expect("config");
        let s = RoutingSnapshot::bootstrap(&config, None).expect("snapshot");
        let pool = std::sync::Arc::clone(&s.active);
        c.bench_function(&format!("pick: {balance}, 4 servers"), |b| {
            b.iter(|| black_box(pool.pick(LOCAL).expect("server")))
        });
    }
}

fn header_rewrite(c: &mut Criterion) {
    use http::header::{HeaderMap, HeaderName, HeaderValue};
    use turnout_proxy::headers::{set_forwarded, strip_hop_by_hop};
    // A browser-like request head, with a keep-alive Connection header.
    let mut template = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("connection", "keep-alive"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        template.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let client = HeaderValue::from_static("10.0.1.20");
    c.bench_function("header rewrite: strip hop-by-hop, set X-Forwarded-*", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |headers| {
                let host = headers.get(http::header::HOST).cloned();
                strip_hop_by_hop(headers, false);
                set_forwarded(headers, &client, "http", host, false);
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    snapshot,
    decision,
    under_contention,
    header_rewrite
);
criterion_main!(benches);
