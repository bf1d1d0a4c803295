//! How soon a switch is visible: the time from the admin call's return to the first response
//! on a new client connection, when that response must come from the pool just switched to,
//! beside the same request with no switch before it. The two should be the same: the switch
//! is one pointer store done before the admin call returns, so the next request already routes
//! to the new pool, and nothing is left to wait for.
//!
//! The real admin API (axum, over a keep-alive connection) and the real data plane run in this
//! process. Each switch is also checked, untimed: the first response and five more, each on a
//! new connection, must all come from the new pool ("stable at once").
//!
//! Run: `cargo bench --bench switch`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use turnout_config::Config;
use turnout_core::{Control, Router, RoutingSnapshot};
use turnout_proxy::{DataPlane, ProxySettings};
use turnout_testkit::client::{http_client, HttpClient};
use turnout_testkit::upstream::TestUpstream;

/// One request on a new connection, sent in one write; the answer's body (the pool's colour).
async fn colour_on_new_connection(proxy: SocketAddr) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::with_capacity(256);
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8(answer).expect("utf-8");
    let (_, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    body.trim_end().to_string()
}

async fn switch(client: &HttpClient, admin: SocketAddr, to: &str) {
    let req = http::Request::post(format!("http://{admin}/v1/switch"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!("{{\"to\":\"{to}\"}}"))))
        .expect("request");
    let resp = client.request(req).await.expect("admin answer");
    assert!(
        resp.status().is_success(),
        "switch to {to}: {}",
        resp.status()
    );
    resp.into_body().collect().await.expect("admin body");
}

fn switch_visible(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (_upstreams, proxy, admin) = rt.block_on(async {
        let blue = TestUpstream::start("blue").await;
        let green = TestUpstream::start("green").await;
        let text = format!(
            "[pools.blue]\nservers = [\"{}\"]\n[pools.green]\nservers = [\"{}\"]\n\
             [routing]\nactive = \"blue\"\n",
            blue.server(),
            green.server()
        );
        let config =
            Config::parse(&text, std::path::Path::new("bench.toml")).expect("bench config");
        let router = Router::new(RoutingSnapshot::bootstrap(&config, None).expect("snapshot"));
        let plane = DataPlane::new(
            router.clone(),
            ProxySettings::from_config(&config).expect("no CA files to read"),
        );
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (proxy, admin) = (
            proxy_listener.local_addr().expect("addr"),
            admin_listener.local_addr().expect("addr"),
        );
        tokio::spawn(async move {
            plane
                .serve(proxy_listener, None, std::future::pending())
                .await
        });
        let control = Control::new(router, None);
        tokio::spawn(turnout_admin::serve(
            admin_listener,
            control,
            turnout_admin::AdminPolicy::default(),
            None,
            std::future::pending(),
        ));
        ((blue, green), proxy, admin)
    });
    let admin_client = http_client();

    let mut g = c.benchmark_group("switch_visible");
    g.bench_function("first response on a new connection, no switch", |b| {
        b.iter(|| rt.block_on(colour_on_new_connection(proxy)))
    });
    g.bench_function(
        "first response on a new connection, after the switch call returns",
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut timed = Duration::ZERO;
                    for i in 0..iters {
                        let to = if i % 2 == 0 { "green" } else { "blue" };
                        switch(&admin_client, admin, to).await;
                        let returned = Instant::now();
                        let first = colour_on_new_connection(proxy).await;
                        timed += returned.elapsed();
                        assert_eq!(first, to, "the first response after the switch returned");
                        for _ in 0..5 {
                            assert_eq!(colour_on_new_connection(proxy).await, to, "stable");
                        }
                    }
                    timed
                })
            })
        },
    );
    g.finish();
}

criterion_group!(benches, switch_visible);
criterion_main!(benches);
