//! A real app server for tests. Every answer names the server (`x-upstream` header and body), so
//! a test can tell which pool served it. Endpoints:
//!
//! | path | answer |
//! |---|---|
//! | anything else | `NAME\n` |
//! | `/slow?ms=N` | `NAME\n` after N ms |
//! | `/stream?chunks=N&ms=M` | N chunks `NAME i\n`, M ms apart, chunked encoding |
//! | `/headers` | the request's headers as JSON `{"name": [values]}` |
//! | `/upload` | reads the body; `{"bytes": n, "checksum": c}` |
//! | `/download?bytes=N` | N bytes of the test pattern, streamed in 64 KiB chunks |
//! | `/hop` | a response carrying hop-by-hop headers the proxy must strip |
//! | `/ws` | WebSocket echo: a text message `m` comes back as `NAME:m` |
//! | `/vhost-health?host=H&header=N` | 200 when the Host is H and header N is present, else 421 |
//! | `/health` | 200, or 503 after [`TestUpstream::set_healthy`]`(false)` |
//! | `/flaky?on=NAME` | the server named NAME drops the connection unanswered; others: `NAME\n` |
//! | `/page` | an HTML page, `<html>NAME</html>` |
//! | `/assets/...?only=NAME` | 404 but on the server called NAME (an asset of one build) |
//! | `/assets/...?cc=C&bytes=N&ms=M` | `NAME PATH\n` (padded to N bytes), `Cache-Control: C` (default `public, max-age=3600`), an ETag, after M ms |
//!
//! Requests from turnout's health checker (its User-Agent) are counted apart from the others,
//! and are never failed or delayed by [`TestUpstream::set_fail_percent`] and
//! [`TestUpstream::set_delay_ms`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::{fill_pattern, Checksum};

type Body = BoxBody<Bytes, Infallible>;

/// A running test upstream; stops when dropped.
#[derive(Debug)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    counters: Arc<Counters>,
    kill: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Counters {
    requests: AtomicU64,
    checks: AtomicU64,
    /// Connections that carried a request other than a health check: all of them, and those
    /// still open.
    app_connections: AtomicU64,
    open_app_connections: AtomicU64,
    /// Of every 100 requests (health checks aside), this many answer 500.
    fail_percent: AtomicU64,
    /// Added before every answer but health checks'.
    delay_ms: AtomicU64,
    healthy: std::sync::atomic::AtomicBool,
    /// The status code of the last WebSocket close frame `/ws` received (0: none yet).
    ws_close: Arc<AtomicU64>,
}

impl TestUpstream {
    pub async fn start(name: &'static str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Self::serve(name, listener)
    }

    /// On a given address: an app restarted on its port. Retries the bind for up to 5 s while
    /// the previous listener goes away.
    pub async fn start_at(name: &'static str, addr: SocketAddr) -> TestUpstream {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => return Self::serve(name, listener),
                Err(e) if std::time::Instant::now() > deadline => panic!("bind {addr}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn serve(name: &'static str, listener: TcpListener) -> TestUpstream {
        let addr = listener.local_addr().expect("addr");
        let counters = Arc::new(Counters {
            requests: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            app_connections: AtomicU64::new(0),
            open_app_connections: AtomicU64::new(0),
            fail_percent: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            healthy: std::sync::atomic::AtomicBool::new(true),
            ws_close: Arc::new(AtomicU64::new(0)),
        });
        let (kill, killed) = tokio::sync::watch::channel(false);
        let shared = Arc::clone(&counters);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // As a real app server would: without it, small HTTP/2 frames wait on Nagle.
                let _ = stream.set_nodelay(true);
                let counters = Arc::clone(&shared);
                let app_conn = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let this_conn = Arc::clone(&app_conn);
                let service = service_fn(move |req: Request<Incoming>| {
                    let is_check = req
                        .headers()
                        .get(header::USER_AGENT)
                        .is_some_and(|ua| ua == "turnout-health-check");
                    let counter = if is_check {
                        &counters.checks
                    } else {
                        &counters.requests
                    };
                    let nth = counter.fetch_add(1, Ordering::Relaxed);
                    let fail =
                        !is_check && nth % 100 < counters.fail_percent.load(Ordering::Relaxed);
                    let delay = if is_check {
                        0
                    } else {
                        counters.delay_ms.load(Ordering::Relaxed)
                    };
                    if !is_check && !this_conn.swap(true, Ordering::Relaxed) {
                        counters.app_connections.fetch_add(1, Ordering::Relaxed);
                        counters
                            .open_app_connections
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    let healthy = counters.healthy.load(Ordering::Relaxed);
                    let ws_close = Arc::clone(&counters.ws_close);
                    async move {
                        // `/flaky?on=NAME`: the server called NAME drops the connection without
                        // answering (a service error makes hyper close it); the others answer.
                        let flaky_here = req.uri().path() == "/flaky"
                            && req.uri().query() == Some(&format!("on={name}"));
                        if flaky_here {
                            return Err(std::io::Error::other("flaky on purpose"));
                        }
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        if fail {
                            let mut resp = text(name, format!("{name} failed\n"));
                            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            return Ok(resp);
                        }
                        handle(name, healthy, ws_close, req)
                            .await
                            .map_err(|e| match e {})
                    }
                });
                let mut killed = killed.clone();
                let counters = Arc::clone(&shared);
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = killed.wait_for(|k| *k) => {}
                    }
                    if app_conn.load(Ordering::Relaxed) {
                        counters
                            .open_app_connections
                            .fetch_sub(1, Ordering::Relaxed);
                    }
                });
            }
        });
        TestUpstream {
            addr,
            name,
            counters,
            kill,
            task,
        }
    }

    /// Stops the server like a killed process: the port refuses connections and every open
    /// connection is closed.
    pub fn kill(&self) {
        self.task.abort();
        self.kill.send_replace(true);
    }

    /// Makes `/health` answer 503 (false) or 200 (true).
    pub fn set_healthy(&self, healthy: bool) {
        self.counters.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Makes `percent` of every 100 requests (health checks aside) answer 500.
    pub fn set_fail_percent(&self, percent: u64) {
        self.counters.fail_percent.store(percent, Ordering::Relaxed);
    }

    /// Delays every answer (health checks aside) by `ms`.
    pub fn set_delay_ms(&self, ms: u64) {
        self.counters.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// The status code of the last WebSocket close frame this server's `/ws` received (0 if
    /// none).
    pub fn ws_close_code(&self) -> u64 {
        self.counters.ws_close.load(Ordering::Relaxed)
    }

    /// Health checks this server has received.
    pub fn checks(&self) -> u64 {
        self.counters.checks.load(Ordering::Relaxed)
    }

    /// `127.0.0.1:PORT`, as a pool's server entry.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    /// Connections that carried a request other than a health check, since the start.
    pub fn app_connections(&self) -> u64 {
        self.counters.app_connections.load(Ordering::Relaxed)
    }

    /// Of [`TestUpstream::app_connections`], those still open.
    pub fn open_app_connections(&self) -> u64 {
        self.counters.open_app_connections.load(Ordering::Relaxed)
    }

    /// Requests this server has received, health checks not counted.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok())?
    })
}

fn query_str(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

/// `total` bytes of JSON naming the server: an array of records, padded to the size.
pub fn json_body(name: &str, total: usize) -> Vec<u8> {
    let mut out = b"[".to_vec();
    let mut i = 0u64;
    while out.len() + 80 < total {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(
            format!(
                "{{\"id\":{i},\"server\":\"{name}\",\"sku\":\"SKU-{:06}\",\"in_stock\":{}}}",
                i * 7919 % 1_000_000,
                i % 3 == 0
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.push(b']');
    out.resize(total.max(out.len()), b' ');
    out.truncate(total.max(2));
    out
}

fn text(name: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .header("x-upstream", name)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(body.into()).boxed())
        .expect("response")
}

async fn handle(
    name: &'static str,
    healthy: bool,
    ws_close: Arc<AtomicU64>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let resp = match req.uri().path() {
        "/health" if !healthy => {
            let mut resp = text(name, "unhealthy\n");
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            resp
        }
        // A check that passes only with the Host given in `host=` and the header named in
        // `header=` (a virtual-host app behind its own health route).
        "/vhost-health" => {
            let want_host = query_str(&req, "host").unwrap_or_default();
            let want_header = query_str(&req, "header").unwrap_or_default();
            let host_ok = req
                .headers()
                .get(header::HOST)
                .is_some_and(|h| h.as_bytes() == want_host.as_bytes());
            let header_ok =
                want_header.is_empty() || req.headers().contains_key(want_header.as_str());
            let mut resp = text(
                name,
                format!("host ok: {host_ok}, header ok: {header_ok}\n"),
            );
            if !(host_ok && header_ok) {
                *resp.status_mut() = StatusCode::MISDIRECTED_REQUEST;
            }
            resp
        }
        "/slow" => {
            let ms = query(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(name, format!("{name}\n"))
        }
        "/stream" => {
            let chunks = query(&req, "chunks").unwrap_or(5);
            let ms = query(&req, "ms").unwrap_or(100);
            let stream = futures_util::stream::unfold(0u64, move |i| async move {
                if i >= chunks {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let frame = Frame::data(Bytes::from(format!("{name} {i}\n")));
                Some((Ok::<_, Infallible>(frame), i + 1))
            });
            Response::builder()
                .header("x-upstream", name)
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("response")
        }
        "/headers" => {
            let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in req.headers() {
                map.entry(k.to_string())
                    .or_default()
                    .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
            }
            text(name, serde_json::to_vec(&map).expect("json"))
        }
        "/upload" => {
            let mut body = req.into_body();
            let (mut bytes, mut sum) = (0u64, Checksum::default());
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return Ok(text(name, "broken upload").map(|b| b));
                };
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    sum.update(data);
                }
            }
            text(
                name,
                serde_json::json!({ "bytes": bytes, "checksum": sum.0 }).to_string(),
            )
        }
        "/download" => {
            let total = query(&req, "bytes").unwrap_or(1 << 20);
            const CHUNK: u64 = 64 * 1024;
            let stream = futures_util::stream::unfold(0u64, move |sent| async move {
                if sent >= total {
                    return None;
                }
                let mut buf = vec![0u8; CHUNK.min(total - sent) as usize];
                fill_pattern(&mut buf, sent);
                let n = buf.len() as u64;
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(buf))), sent + n))
            });
            Response::builder()
                .header("x-upstream", name)
                .header(header::CONTENT_LENGTH, total)
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("response")
        }
        "/hop" => Response::builder()
            .header("x-upstream", name)
            .header(header::CONNECTION, "x-private")
            .header("x-private", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header(header::TRAILER, "x-sum")
            .header(header::UPGRADE, "h2c")
            .header("x-public", "yes")
            .body(Full::new(Bytes::from_static(b"hop\n")).boxed())
            .expect("response"),
        "/ws" => {
            let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
                return Ok(Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .body(Full::new(Bytes::from_static(b"not a websocket request\n")).boxed())
                    .expect("response"));
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            let ws_close = Arc::clone(&ws_close);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("{name}:{t}")),
                        Message::Close(frame) => {
                            let code = frame.map_or(0, |f| u16::from(f.code));
                            ws_close.store(u64::from(code), Ordering::Relaxed);
                            break;
                        }
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, "websocket")
                .header(
                    header::SEC_WEBSOCKET_ACCEPT,
                    derive_accept_key(key.as_bytes()),
                )
                .header("x-upstream", name)
                .body(Full::new(Bytes::new()).boxed())
                .expect("response")
        }
        // JSON of `bytes` bytes (default 16 KiB), the same for the same size, in `chunks` chunks
        // `ms` apart; `encoded=gzip` says Content-Encoding: gzip (an app that compressed it).
        "/json" => {
            let total = query(&req, "bytes").unwrap_or(16 * 1024) as usize;
            let chunks = query(&req, "chunks").unwrap_or(1).max(1) as usize;
            let ms = query(&req, "ms").unwrap_or(0);
            let body = json_body(name, total);
            let step = total.div_ceil(chunks).max(1);
            let parts: Vec<Bytes> = body.chunks(step).map(Bytes::copy_from_slice).collect();
            let stream = futures_util::stream::iter(parts.into_iter().enumerate()).then(
                move |(i, part)| async move {
                    if i > 0 && ms > 0 {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    Ok::<_, Infallible>(Frame::data(part))
                },
            );
            let mut resp = Response::builder()
                .header("x-upstream", name)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ETAG, format!("\"{name}-json-{total}\""))
                .header(header::CONTENT_LENGTH, total);
            if let Some(enc) = query_str(&req, "encoded") {
                resp = resp.header(header::CONTENT_ENCODING, enc);
            }
            resp.body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("response")
        }
        // A page: HTML naming the server.
        "/page" => Response::builder()
            .header("x-upstream", name)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Full::new(Bytes::from(format!("<html>{name}</html>\n"))).boxed())
            .expect("response"),
        // An asset only the server called NAME has (its build's chunk): 404 elsewhere.
        p if p.starts_with("/assets/")
            && query_str(&req, "only").is_some_and(|only| only != name) =>
        {
            let mut resp = text(name, format!("{name}: no {p} in this build\n"));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
        p if p.starts_with("/assets/") => {
            if let Some(ms) = query(&req, "ms") {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let mut body = format!("{name} {p}\n").into_bytes();
            if let Some(n) = query(&req, "bytes") {
                body.resize(n as usize, b'.');
            }
            let cc = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("cc=")))
                .map_or_else(
                    || "public, max-age=3600".to_owned(),
                    |v| v.replace("%20", " ").replace("%2C", ","),
                );
            let mut resp = text(name, body);
            let h = resp.headers_mut();
            h.insert(header::CACHE_CONTROL, cc.parse().expect("header value"));
            h.insert(
                header::ETAG,
                format!("\"{name}-1\"").parse().expect("header value"),
            );
            if let Some(vary) = req.headers().get("x-test-vary").cloned() {
                h.insert(header::VARY, vary);
            }
            resp
        }
        _ => text(name, format!("{name}\n")),
    };
    Ok(resp)
}
