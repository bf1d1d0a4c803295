//! What crosses the proxy: headers both ways, bodies of any size, HTTP/2, balancing, and the
//! answers when an upstream fails.

use std::convert::Infallible;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use turnout_testkit::client::{get, h2c_client, http_client, send};
use turnout_testkit::process::Sandbox;
use turnout_testkit::upstream::TestUpstream;
use turnout_testkit::{fill_pattern, within, Checksum};

use crate::{BlueGreen, BIN};

fn headers_json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn request_headers_lose_hop_by_hop_and_gain_forwarded() {
    let bg = BlueGreen::start().await;
    let req = Request::get(bg.turnout.url("/headers"))
        .header("host", "shop.example")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eDp5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("trailer", "x-sum")
        .header("upgrade", "h2c")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-host", "spoofed.example")
        .header("x-app", "kept")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let a = send(&http_client(), req).await.expect("answer");
    assert_eq!(a.status, 200, "{}", a.body);
    let h = headers_json(&a.body);
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert_eq!(h["host"][0], "shop.example", "Host passes unchanged");
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], "shop.example");
    assert_eq!(h["x-app"][0], "kept");
}

#[tokio::test]
async fn response_headers_lose_hop_by_hop() {
    let bg = BlueGreen::start().await;
    let a = get(&http_client(), &bg.turnout.url("/hop"))
        .await
        .expect("answer");
    assert_eq!(a.status, 200);
    for gone in [
        "x-private",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !a.headers.contains_key(gone),
            "{gone} reached the client: {:?}",
            a.headers
        );
    }
    assert!(a.headers.get("connection").is_none_or(|v| v != "x-private"));
    assert_eq!(a.headers["x-public"], "yes");
    assert_eq!(a.body, "hop\n");
}

#[tokio::test]
async fn http2_prior_knowledge_is_proxied() {
    let bg = BlueGreen::start().await;
    let client = h2c_client();
    let a = get(&client, &bg.turnout.url("/"))
        .await
        .expect("h2c answer");
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue\n"));
    let a = get(&client, &bg.turnout.url("/headers"))
        .await
        .expect("h2c answer");
    let h = headers_json(&a.body);
    assert_eq!(
        h["host"][0],
        bg.turnout.proxy.to_string(),
        "the :authority becomes Host"
    );
    assert_eq!(h["x-forwarded-host"][0], bg.turnout.proxy.to_string());
    // And the health path over h2.
    let a = get(&client, &bg.turnout.url("/health-check"))
        .await
        .expect("h2c health");
    assert_eq!(a.status, 200);
}

const BIG: u64 = 256 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_through_intact_with_flat_memory() {
    let bg = BlueGreen::start().await;
    let mut block = vec![0u8; 1 << 20];
    fill_pattern(&mut block, 0);
    let block = Bytes::from(block);
    let mut expected = Checksum::default();
    for _ in 0..(BIG >> 20) {
        expected.update(&block);
    }
    let chunks = {
        let block = block.clone();
        futures_util::stream::iter(0..(BIG >> 20))
            .map(move |_| Ok::<_, Infallible>(Frame::data(block.clone())))
    };
    use futures_util::StreamExt;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(bg.turnout.url("/upload"))
        .body(StreamBody::new(chunks))
        .expect("request");
    let resp = within(120, "upload", client.request(req))
        .await
        .expect("upload answered");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let got: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(got["bytes"], BIG, "{got}");
    assert_eq!(got["checksum"], expected.0, "the upload arrived changed");
    let peak_mib = bg.turnout.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 64,
        "turnout peaked at {peak_mib} MiB for a 256 MiB upload: it buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_download_streams_through_intact_with_flat_memory() {
    let bg = BlueGreen::start().await;
    let resp = http_client()
        .request(
            Request::get(bg.turnout.url(&format!("/download?bytes={BIG}")))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("download starts");
    assert_eq!(resp.headers()["content-length"], BIG.to_string().as_str());
    let mut body = resp.into_body();
    let (mut got, mut sum, mut want) = (0u64, Checksum::default(), Checksum::default());
    let mut expect_buf = Vec::new();
    within(120, "download", async {
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("frame");
            if let Some(data) = frame.data_ref() {
                expect_buf.resize(data.len(), 0);
                fill_pattern(&mut expect_buf, got);
                want.update(&expect_buf);
                sum.update(data);
                got += data.len() as u64;
            }
        }
    })
    .await;
    assert_eq!(got, BIG);
    assert_eq!(sum.0, want.0, "the download arrived changed");
    let peak_mib = bg.turnout.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 64,
        "turnout peaked at {peak_mib} MiB for a 256 MiB download: it buffered"
    );
}

#[tokio::test]
async fn servers_of_a_pool_take_turns() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&sandbox.config(&[("blue", &[a.server(), b.server()])], "blue", ""));
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    let client = http_client();
    let mut bodies = Vec::new();
    for _ in 0..6 {
        bodies.push(get(&client, &turnout.url("/")).await.expect("get").body);
    }
    let first = bodies[0].clone();
    let second = if first == "a\n" { "b\n" } else { "a\n" };
    let want: Vec<&str> = (0..6)
        .map(|i| if i % 2 == 0 { first.as_str() } else { second })
        .collect();
    assert_eq!(bodies, want);
    assert_eq!((a.requests(), b.requests()), (3, 3));
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_with_a_reason_in_the_log() {
    // A port that was just free: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let blue = TestUpstream::start("blue").await;
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&sandbox.config(
        &[("blue", &[blue.server()]), ("green", &[dead.to_string()])],
        "green",
        "",
    ));
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    let a = get(&http_client(), &turnout.url("/"))
        .await
        .expect("answer");
    assert_eq!(a.status, 502, "{}", a.body);
    assert!(a.body.contains("Bad Gateway"), "{}", a.body);
    turnout_testkit::eventually(5, "the log names the cause", || async {
        turnout
            .find_log("status=502")
            .is_some_and(|l| l.contains("cannot connect") && l.contains(&dead.to_string()))
    })
    .await;
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    let bg = BlueGreen::start_with("\n[upstream]\nresponse_timeout = \"300ms\"\n").await;
    let a = get(&http_client(), &bg.turnout.url("/slow?ms=5000"))
        .await
        .expect("answer");
    assert_eq!(a.status, 504, "{}", a.body);
    assert!(a.body.contains("Gateway Timeout"), "{}", a.body);
    turnout_testkit::eventually(5, "the log says why", || async {
        bg.turnout
            .find_log("status=504")
            .is_some_and(|l| l.contains("no response within"))
    })
    .await;
    // Fast requests still pass.
    assert_eq!(bg.body("/").await, "blue\n");
}

#[tokio::test]
async fn connect_is_refused_with_405() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bg = BlueGreen::start().await;
    let mut conn = tokio::net::TcpStream::connect(bg.turnout.proxy)
        .await
        .expect("connect");
    conn.write_all(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    within(5, "the 405", conn.read_to_string(&mut answer))
        .await
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert_eq!(bg.blue.requests(), 0, "nothing reached the upstream");
}

/// One retry rule for every path: a request that timed out is not sent again, neither a proxied
/// GET nor the fetch that fills the cache (which, before the forwarder was one, retried it),
/// while a GET whose server dropped the connection still goes on to the other server.
#[tokio::test]
async fn a_timed_out_request_is_not_retried_on_any_path() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let sandbox = Sandbox::new(BIN);
    sandbox.write_config(&sandbox.config(
        &[("blue", &[a.server(), b.server()])],
        "blue",
        "[upstream]\nresponse_timeout = \"300ms\"\n[cache]\nprefixes = [\"/assets/\"]\n",
    ));
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    let client = http_client();
    for (n, path) in ["/slow?ms=3000", "/assets/slow.js?ms=3000"]
        .iter()
        .enumerate()
    {
        let answer = get(&client, &turnout.url(path)).await.expect("answer");
        assert_eq!(answer.status, 504, "{path}: {}", answer.body);
        let sent = (n + 1) as u64;
        assert_eq!(a.requests() + b.requests(), sent, "{path} was sent again");
    }
    // `/flaky?on=a`: server a drops the connection unanswered, and the GET goes on to b.
    for _ in 0..2 {
        let answer = get(&client, &turnout.url("/flaky?on=a"))
            .await
            .expect("answer");
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "b\n"));
    }
    turnout_testkit::eventually(5, "both 504s are logged, once each", || async {
        turnout.logs().matches("status=504").count() == 2
    })
    .await;
}

/// An app server that closes idle keep-alive connections sooner than turnout would (as many
/// do, after a few seconds) makes no request fail: a connection it closed is never used again.
#[tokio::test]
async fn connections_the_app_closed_while_idle_are_not_used() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A minimal app: answers one request per connection with a keep-alive response (no
    // `Connection: close`), then closes the connection 50 ms later.
    let app = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = app.local_addr().expect("addr");
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = std::sync::Arc::clone(&served);
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = app.accept().await else {
                continue;
            };
            let count = std::sync::Arc::clone(&count);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /health") {
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            });
        }
    });
    let sandbox = Sandbox::new(BIN);
    // Health checks go to /health (the default is `/`, which this app would count as a
    // request: one landing inside the loop made this test flaky).
    let mut config = sandbox.config(&[("blue", &[addr.to_string()])], "blue", "workers = 1\n");
    config.push_str("\n[health]\npath = \"/health\"\n");
    sandbox.write_config(&config);
    let turnout = sandbox.start().await.unwrap_or_else(|e| panic!("{e}"));
    let client = http_client();
    let before = served.load(std::sync::atomic::Ordering::Relaxed);
    for i in 0..10 {
        let a = get(&client, &turnout.url("/")).await.expect("answer");
        assert_eq!(
            (a.status.as_u16(), a.body.as_str()),
            (200, "ok\n"),
            "request {i}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    assert_eq!(
        served.load(std::sync::atomic::Ordering::Relaxed) - before,
        10
    );
    assert!(
        turnout.find_log("status=502").is_none(),
        "{}",
        turnout.logs()
    );
    server.abort();
}
