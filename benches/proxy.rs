//! Requests per second through turnout against the same upstream hit directly, over loopback
//! with HTTP/1.1 keep-alive: the cost of the proxy hop. The README states the ratio.
//!
//! Everything runs in this process on one tokio runtime (upstream, turnout's data plane, client),
//! so the figures are comparable with each other, not with a pinned multi-process setup; for that
//! see ../shared/bench/ (nginx and HAProxy side by side).
//!
//! Run: `cargo bench --bench proxy`

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use turnout_config::Config;
use turnout_core::{Router, RoutingSnapshot};
use turnout_proxy::{DataPlane, ProxySettings};
use turnout_testkit::client::{h2c_client, http_client, HttpClient};
use turnout_testkit::upstream::TestUpstream;

/// Requests per measured iteration, and how many are in flight at once.
const BATCH: usize = 256;
const CONCURRENCY: usize = 32;

fn config(upstream: &str) -> Config {
    let text = format!("[pools.blue]\nservers = [\"{upstream}\"]\n[routing]\nactive = \"blue\"\n");
    Config::parse(&text, std::path::Path::new("bench.toml")).expect("bench config")
}

async fn one(client: &HttpClient, uri: &http::Uri) {
    let req = http::Request::get(uri.clone())
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.request(req).await.expect("response");
    assert!(resp.status().is_success());
    resp.into_body().collect().await.expect("body");
}

async fn batch(client: &HttpClient, uri: &http::Uri) {
    let per_task = BATCH / CONCURRENCY;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let client = client.clone();
            let uri = uri.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    one(&client, &uri).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}

fn proxy_round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (upstream, proxy_addr) = rt.block_on(async {
        let upstream = TestUpstream::start("bench").await;
        let config = config(&upstream.server());
        let router = Router::new(RoutingSnapshot::bootstrap(&config, None).expect("snapshot"));
        let plane = DataPlane::new(
            router,
            ProxySettings::from_config(&config).expect("no CA files to read"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { plane.serve(listener, None, std::future::pending()).await });
        (upstream, addr)
    });
    let direct: http::Uri = format!("http://{}/", upstream.addr).parse().expect("uri");
    let proxied: http::Uri = format!("http://{proxy_addr}/").parse().expect("uri");
    let client = Arc::new(http_client());

    let mut g = c.benchmark_group("http1_keepalive_sequential");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    for (name, uri) in [("direct", &direct), ("via_turnout", &proxied)] {
        g.bench_function(name, |b| b.iter(|| rt.block_on(one(&client, uri))));
    }
    g.finish();

    // HTTP/2 from the client (prior knowledge, one connection, 32 streams at once); turnout
    // speaks HTTP/1.1 to the upstream. Direct is the same upstream over HTTP/2.
    let h2 = Arc::new(h2c_client());
    let mut g = c.benchmark_group("h2c_32_streams");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(8));
    for (name, uri) in [("direct", &direct), ("via_turnout", &proxied)] {
        g.bench_function(name, |b| b.iter(|| rt.block_on(batch(&h2, uri))));
    }
    g.finish();

    let mut g = c.benchmark_group("http1_keepalive_32_concurrent");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(8));
    for (name, uri) in [("direct", &direct), ("via_turnout", &proxied)] {
        g.bench_function(name, |b| b.iter(|| rt.block_on(batch(&client, uri))));
    }
    g.finish();
    drop(upstream);
}

/// A cached asset against the same asset from the upstream directly and through turnout
/// uncached, and a static file (held in memory) from a `[[static]]` directory: 32 keep-alive
/// connections, 256 requests per batch.
fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.js"), vec![b'x'; 4096]).expect("write");
    let (upstream, proxy_addr) = rt.block_on(async {
        let upstream = TestUpstream::start("bench").await;
        let text = format!(
            "[pools.blue]\nservers = [\"{}\"]\n[routing]\nactive = \"blue\"\n\
             [[static]]\nprefix = \"/static/\"\nroot = {:?}\n[cache]\nprefixes = [\"/assets/cached/\"]\n",
            upstream.server(),
            dir.path().display().to_string()
        );
        let config = Config::parse(&text, std::path::Path::new("bench.toml")).expect("config");
        let router = Router::new(RoutingSnapshot::bootstrap(&config, None).expect("snapshot"));
        let plane = DataPlane::new(router, ProxySettings::from_config(&config).expect("no CA files to read"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { plane.serve(listener, None, std::future::pending()).await });
        (upstream, addr)
    });
    let uri = |s: String| -> http::Uri { s.parse().expect("uri") };
    let asset = "/assets/cached/app.js?bytes=4096";
    let plain = "/assets/plain/app.js?bytes=4096";
    let targets = [
        (
            "upstream_direct",
            uri(format!("http://{}{asset}", upstream.addr)),
        ),
        (
            "via_turnout_uncached",
            uri(format!("http://{proxy_addr}{plain}")),
        ),
        (
            "via_turnout_cache_hit",
            uri(format!("http://{proxy_addr}{asset}")),
        ),
        (
            "via_turnout_static_file",
            uri(format!("http://{proxy_addr}/static/app.js")),
        ),
    ];
    let client = Arc::new(http_client());
    let mut g = c.benchmark_group("asset_4k_32_concurrent");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(6));
    for (name, uri) in &targets {
        g.bench_function(*name, |b| b.iter(|| rt.block_on(batch(&client, uri))));
    }
    g.finish();
    drop(upstream);
}

criterion_group!(benches, proxy_round_trip, cache_hit);
criterion_main!(benches);
