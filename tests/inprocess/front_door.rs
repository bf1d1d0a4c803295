//! The front door in paused time: `[limits]` rates per client (a flood from one address is
//! refused while another address is served; behind a trusted proxy the real address is the
//! key, whatever the client writes in `X-Forwarded-For`), dry-run, a pool's own budget kept out
//! of its figures, and connections per client refused at accept. Paused time makes the counts
//! exact: no bucket refills while a test runs unless it moves the clock.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::harness::Running;

/// One HTTP/1.1 keep-alive connection from the local address `from` (127.0.0.x).
pub struct Client {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Client {
    pub async fn connect(from: &str, to: SocketAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{from}:0").parse().expect("an address"))
            .expect("bind a loopback address");
        let stream = socket.connect(to).await.expect("connect");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client { send }
    }

    /// GET `path` with `headers`: the status and the response's headers.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap) {
        let mut req = Request::get(path).header("host", "shop.test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send.ready().await.expect("the connection is open");
        let resp = self
            .send
            .send_request(req.body(Empty::new()).expect("a request"))
            .await
            .expect("an answer");
        let (parts, body) = resp.into_parts();
        body.collect().await.expect("the body");
        (parts.status, parts.headers)
    }

    /// `n` GETs of `path`: how many were answered 200 and how many 429.
    pub async fn flood(
        &mut self,
        n: usize,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (usize, usize) {
        let (mut ok, mut limited) = (0, 0);
        for _ in 0..n {
            match self.get(path, headers).await.0 {
                StatusCode::OK => ok += 1,
                StatusCode::TOO_MANY_REQUESTS => limited += 1,
                other => panic!("unexpected {other}"),
            }
        }
        (ok, limited)
    }
}

/// `/metrics` from the admin port.
async fn metrics(t: &Running) -> String {
    let client = turnout_testkit::client::http_client();
    turnout_testkit::client::get(&client, &format!("{}/metrics", t.admin_base()))
        .await
        .expect("metrics")
        .body
}

const ONE_RATE: &str =
    "\n[limits]\n[[limits.rate]]\nname = \"per-client\"\nrate = \"1/h\"\nburst = 5\n";

#[tokio::test(start_paused = true)]
async fn a_flood_from_one_address_is_refused_while_another_is_served() {
    let t = Running::start(ONE_RATE).await;
    let mut flood = Client::connect("127.0.0.1", t.bound.proxy).await;
    let (ok, limited) = flood.flood(40, "/", &[]).await;
    assert_eq!((ok, limited), (5, 35));
    let (status, headers) = flood.get("/", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // One an hour: the next is most of an hour away, in whole seconds.
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((3000..=3600).contains(&retry), "Retry-After: {retry}");
    // Another address has a burst of its own, untouched by the flood.
    let mut other = Client::connect("127.0.0.2", t.bound.proxy).await;
    assert_eq!(other.flood(5, "/", &[]).await, (5, 0));
    // The health path is never limited.
    assert_eq!(flood.get("/health-check", &[]).await.0, StatusCode::OK);
    let text = metrics(&t).await;
    assert!(
        text.contains("turnout_limited_total{class=\"per-client\",outcome=\"refused\"} 36"),
        "{text}"
    );
    // Refused requests never reached blue, and blue's figures do not count them.
    assert_eq!(t.blue.requests(), 10);
    assert!(
        text.contains("turnout_requests_total{class=\"2xx\",pool=\"blue\"} 10"),
        "{text}"
    );
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn behind_a_trusted_proxy_the_real_address_is_the_key_and_forged_ones_do_not_help() {
    let t = Running::start_routing(ONE_RATE, "trusted_proxies = [\"127.0.0.1\"]").await;
    let mut alb = Client::connect("127.0.0.1", t.bound.proxy).await;
    // The client writes a new address each time; the load balancer appends the real one.
    for i in 0..5 {
        let xff = format!("10.9.9.{i}, 203.0.113.7");
        assert_eq!(
            alb.get("/", &[("x-forwarded-for", &xff)]).await.0,
            StatusCode::OK
        );
    }
    for i in 5..20 {
        let xff = format!("10.9.9.{i}, 203.0.113.7");
        let status = alb.get("/", &[("x-forwarded-for", &xff)]).await.0;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "forged {i}");
    }
    // Another real client behind the same load balancer is its own key.
    let (ok, _) = alb
        .flood(5, "/", &[("x-forwarded-for", "203.0.113.8")])
        .await;
    assert_eq!(ok, 5);
    // A client that reaches turnout directly (an untrusted peer) is keyed by its own address:
    // what it writes in X-Forwarded-For is ignored.
    let mut direct = Client::connect("127.0.0.3", t.bound.proxy).await;
    let (ok, limited) = direct
        .flood(8, "/", &[("x-forwarded-for", "203.0.113.9")])
        .await;
    assert_eq!((ok, limited), (5, 3));
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn dry_run_counts_who_would_be_limited_and_refuses_nobody() {
    let t = Running::start(&ONE_RATE.replace("[limits]\n", "[limits]\ndry_run = true\n")).await;
    let mut c = Client::connect("127.0.0.1", t.bound.proxy).await;
    assert_eq!(c.flood(20, "/", &[]).await, (20, 0));
    let text = metrics(&t).await;
    assert!(
        text.contains("turnout_limited_total{class=\"per-client\",outcome=\"dry_run\"} 15"),
        "{text}"
    );
    assert_eq!(t.blue.requests(), 20);
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_canary_pool_has_its_own_tighter_budget_and_a_path_its_own() {
    let limits = "\n[limits]\n[[limits.rate]]\nname = \"canary\"\nrate = \"1/h\"\nburst = 2\npool = \"green\"\n\n[[limits.rate]]\nname = \"login\"\nrate = \"1/h\"\nburst = 3\npath_prefix = \"/login\"\n";
    let t = Running::start(limits).await;
    let mut c = Client::connect("127.0.0.1", t.bound.proxy).await;
    // Blue (live) is not under the canary's budget; /login is under its own.
    assert_eq!(c.flood(10, "/", &[]).await, (10, 0));
    assert_eq!(c.flood(5, "/login", &[]).await, (3, 2));
    t.wait_healthy("green").await;
    t.switch("green").await;
    assert_eq!(c.flood(6, "/", &[]).await, (2, 4));
    let text = metrics(&t).await;
    assert!(
        text.contains("turnout_requests_total{class=\"2xx\",pool=\"green\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("turnout_requests_total{class=\"4xx\",pool=\"green\"} 0"),
        "{text}"
    );
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_per_client_bound_are_closed_at_accept() {
    let t = Running::start("\n[limits]\nconnections_per_client = 2\n").await;
    let mut a = Client::connect("127.0.0.1", t.bound.proxy).await;
    let mut b = Client::connect("127.0.0.1", t.bound.proxy).await;
    assert_eq!(a.get("/", &[]).await.0, StatusCode::OK);
    assert_eq!(b.get("/", &[]).await.0, StatusCode::OK);
    // The third from the same address is closed unanswered; another address is served.
    let mut third = tokio::net::TcpStream::connect(t.bound.proxy)
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = third.read_to_end(&mut buf).await;
    assert!(
        read.is_err() || buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    let mut other = Client::connect("127.0.0.2", t.bound.proxy).await;
    assert_eq!(other.get("/", &[]).await.0, StatusCode::OK);
    // Once one closes, a new one from the address is let in.
    drop(a);
    turnout_testkit::eventually(10, "a slot frees", || async {
        let mut c = tokio::net::TcpStream::connect(t.bound.proxy)
            .await
            .expect("connect");
        let _ = c
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf).await;
        buf.starts_with(b"HTTP/1.1 200")
    })
    .await;
    let text = metrics(&t).await;
    assert!(
        text.contains("turnout_limited_connections_total{outcome=\"refused\"}"),
        "{text}"
    );
    t.stop().await;
}
