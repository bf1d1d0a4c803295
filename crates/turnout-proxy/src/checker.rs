//! Active health checks: every server of every pool (the standby pool too) is probed with a
//! `GET` of its pool's check path (or, for a pool whose check is `type = "grpc"`, a call of
//! the gRPC health-checking protocol's `grpc.health.v1.Health/Check`), on a fresh connection
//! each time, and its `up` flag follows the thresholds. A supervisor task follows the routing snapshot, so a pool changed through the
//! admin API is checked from then on without a restart. The same probe serves the health gate
//! of switches ([`HttpProber`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::AbortHandle;
use turnout_config::HealthCheck;
use turnout_core::control::{Probe, ProbeResult};
use turnout_core::{Pool, PoolName, Router, ServerAddr, Upstream};

use crate::error::DisplayChain;
use crate::forward::clients::PerPool;
use crate::tls::UpstreamTls;

type ProbeClient = Client<crate::forward::clients::Connector, Full<Bytes>>;

/// Each pool's probe clients: HTTP/1.1, and HTTP/2 for the servers of an `h2c` or `h2` pool (an
/// HTTP/2-only app, a gRPC server, answers nothing else; over TLS, ALPN `h2`).
type ProbeClients = PerPool<Probes>;

#[derive(Debug, Clone)]
struct Probes {
    http1: ProbeClient,
    h2: ProbeClient,
}

impl Probes {
    /// The client that speaks what `server` is spoken to in.
    fn for_server(&self, server: &Upstream) -> &ProbeClient {
        if server.h2 {
            &self.h2
        } else {
            &self.http1
        }
    }
}

/// Probes run on a client that keeps no idle connection: each check connects afresh (and, to
/// an `https://` server, handshakes afresh), so a server whose listener died fails its next
/// check.
fn probe_clients(tls: &UpstreamTls) -> ProbeClients {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_max_idle_per_host(0);
    let mut h2 = builder.clone();
    h2.http2_only(true);
    let h2_connectors = PerPool::h2_connectors(tls, &connector);
    let http1 = PerPool::connectors(tls, &connector);
    http1
        .map(|c| builder.build(c.clone()))
        .zip(h2_connectors.map(|c| h2.build(c.clone())), |http1, h2| {
            Probes { http1, h2 }
        })
}

/// One check of one server: `Ok` when it answered the expected status (a gRPC check:
/// SERVING) within the timeout.
async fn probe_once(
    client: &ProbeClient,
    server: &Upstream,
    check: &HealthCheck,
) -> Result<(), String> {
    let scheme = if server.tls { "https" } else { "http" };
    // `port`: the app may answer its checks on a port of its own.
    let authority = match check.port {
        Some(port) => format!("{}:{port}", server.authority.host()),
        None => server.authority.to_string(),
    };
    let path = match check.grpc_service {
        Some(_) => grpc_health::PATH,
        None => check.path.as_str(),
    };
    let uri: Uri = format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| format!("bad check URI: {e}"))?;
    let host = check.host.as_deref().unwrap_or(server.authority.as_str());
    let mut req = Request::get(uri)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "turnout-health-check");
    for (name, value) in &check.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    if let Some(service) = &check.grpc_service {
        let req =
            grpc_health::request(req, service).map_err(|e| format!("bad check request: {e}"))?;
        return match tokio::time::timeout(check.timeout, grpc_health::call(client, req)).await {
            Err(_) => Err(format!(
                "no answer to gRPC Health/Check {service:?} within {}",
                humantime::format_duration(check.timeout)
            )),
            Ok(answer) => answer,
        };
    }
    let req = req
        .body(Full::default())
        .map_err(|e| format!("bad check request: {e}"))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| DisplayChain(&e).to_string())?;
        let status = resp.status();
        // Read the (small) body so the server sees a complete exchange.
        let _ = resp.into_body().collect().await;
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(check.timeout, exchange).await {
        Err(_) => Err(format!(
            "no answer to GET {} within {}",
            check.path,
            humantime::format_duration(check.timeout)
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok(status)) if check.expect_status.contains(status.as_u16()) => Ok(()),
        Ok(Ok(status)) => Err(format!(
            "GET {} answered {}, expected {}",
            check.path,
            status.as_u16(),
            check.expect_status
        )),
    }
}

/// Starts the checks and keeps them in line with the routing state; runs until aborted.
pub fn spawn_health_checks(router: Router, tls: &UpstreamTls) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(router, probe_clients(tls)))
}

async fn supervise(router: Router, clients: ProbeClients) {
    let mut changes = router.subscribe();
    let mut running: HashMap<
        (PoolName, ServerAddr),
        (Arc<turnout_core::ServerHealth>, AbortHandle),
    > = HashMap::new();
    loop {
        let snapshot = router.snapshot();
        let mut wanted = HashSet::new();
        for (name, pool) in &snapshot.pools {
            let check = &pool.settings().check;
            if !check.enabled {
                continue;
            }
            for server in pool.servers() {
                let key = (name.clone(), server.addr.clone());
                wanted.insert(key.clone());
                if let Some((health, _)) = running.get(&key) {
                    if Arc::ptr_eq(health, &server.health) {
                        continue;
                    }
                }
                let task = tokio::spawn(check_loop(
                    clients.for_pool(name.as_str()).for_server(server).clone(),
                    name.clone(),
                    server.clone(),
                    check.clone(),
                    Arc::clone(&snapshot.env),
                ));
                if let Some((_, old)) =
                    running.insert(key, (Arc::clone(&server.health), task.abort_handle()))
                {
                    old.abort();
                }
            }
        }
        running.retain(|key, (_, task)| {
            let keep = wanted.contains(key);
            if !keep {
                task.abort();
            }
            keep
        });
        if changes.changed().await.is_err() {
            break;
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

async fn check_loop(
    client: ProbeClient,
    pool: PoolName,
    server: Upstream,
    check: HealthCheck,
    env: Arc<turnout_core::Env>,
) {
    let (mut passes, mut fails) = (0u32, 0u32);
    loop {
        let result = probe_once(&client, &server, &check).await;
        server.health.record_check(&result);
        match &result {
            Ok(()) => {
                passes = passes.saturating_add(1);
                fails = 0;
                if server.health.end_ejection(None) {
                    tracing::info!(%pool, server = %server.addr, "ejection ended: the server passed its check");
                }
                if !server.health.is_up() && passes >= check.healthy_threshold {
                    server.health.set_up(true);
                    tracing::info!(%pool, server = %server.addr, passes, "server healthy");
                    env.events
                        .push("health", format!("{pool} {} is up again", server.addr));
                }
            }
            Err(why) => {
                fails = fails.saturating_add(1);
                passes = 0;
                if server.health.is_up() && fails >= check.unhealthy_threshold {
                    server.health.set_up(false);
                    tracing::warn!(%pool, server = %server.addr, fails, error = %why, "server unhealthy");
                    env.events
                        .push("health", format!("{pool} {} is down: {why}", server.addr));
                }
            }
        }
        tokio::time::sleep(check.interval).await;
    }
}

/// The health gate's probe: every server of the pool, at once, with the pool's check.
#[derive(Debug, Clone)]
pub struct HttpProber {
    clients: ProbeClients,
}

impl HttpProber {
    /// A prober trusting what `tls` trusts for `https://` servers.
    pub fn new(tls: &UpstreamTls) -> HttpProber {
        HttpProber {
            clients: probe_clients(tls),
        }
    }
}

impl Probe for HttpProber {
    fn probe(&self, pool: Arc<Pool>) -> Pin<Box<dyn Future<Output = Vec<ProbeResult>> + Send>> {
        let client = self.clients.for_pool(pool.name().as_str()).clone();
        Box::pin(async move {
            let check = &pool.settings().check;
            let probes = pool.servers().iter().map(|server| {
                let client = &client;
                let client = client.for_server(server);
                async move { (server.addr.clone(), probe_once(client, server, check).await) }
            });
            futures_util::future::join_all(probes).await
        })
    }
}

/// The gRPC health-checking protocol (grpc/grpc doc/health-checking.md): a unary call of
/// `grpc.health.v1.Health/Check` with a `HealthCheckRequest`, passing when the answer is
/// status OK with a `HealthCheckResponse` of SERVING. The two messages are declared here with
/// prost's derive (one field each) rather than generated from the .proto by a build step.
mod grpc_health {
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use http::{header, HeaderValue, Method, Request};
    use http_body_util::{BodyExt, Full, Limited};
    use prost::Message;

    use super::ProbeClient;
    use crate::error::DisplayChain;

    pub(super) const PATH: &str = "/grpc.health.v1.Health/Check";

    /// The most of an answer read: a `HealthCheckResponse` is a few bytes.
    const MAX_ANSWER: usize = 64 * 1024;

    #[derive(Clone, PartialEq, prost::Message)]
    struct HealthCheckRequest {
        #[prost(string, tag = "1")]
        service: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct HealthCheckResponse {
        /// UNKNOWN 0, SERVING 1, NOT_SERVING 2, SERVICE_UNKNOWN 3 (of Watch only).
        #[prost(int32, tag = "1")]
        status: i32,
    }

    const SERVING: i32 = 1;

    /// `req` (its URI, Host and headers set) made the call asking about `service`.
    pub(super) fn request(
        req: http::request::Builder,
        service: &str,
    ) -> Result<Request<Full<Bytes>>, http::Error> {
        let message = HealthCheckRequest {
            service: service.to_owned(),
        };
        // One length-prefixed message: not compressed (0), its length (big-endian), itself.
        let mut frame = BytesMut::with_capacity(5 + message.encoded_len());
        frame.put_u8(0);
        frame.put_u32(message.encoded_len() as u32);
        message
            .encode(&mut frame)
            .expect("the buffer was sized for the message");
        req.method(Method::POST)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .body(Full::new(frame.freeze()))
    }

    /// The call, and what its answer says.
    pub(super) async fn call(
        client: &ProbeClient,
        req: Request<Full<Bytes>>,
    ) -> Result<(), String> {
        let resp = client
            .request(req)
            .await
            .map_err(|e| DisplayChain(&e).to_string())?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!(
                "gRPC Health/Check answered HTTP {}",
                resp.status().as_u16()
            ));
        }
        let (parts, body) = resp.into_parts();
        // A trailers-only answer carries its status in the head.
        let head_status = status(&parts.headers);
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("gRPC Health/Check answer unread: {e}"))?;
        let trailer_status = body.trailers().and_then(status);
        match trailer_status.or(head_status) {
            Some((0, _)) => {}
            Some((code, message)) => {
                return Err(format!(
                    "gRPC Health/Check answered status {code}{}{}",
                    if message.is_empty() { "" } else { ": " },
                    message
                ))
            }
            None => return Err("gRPC Health/Check answered no grpc-status".into()),
        }
        let mut frame = body.to_bytes();
        if frame.len() < 5 || frame[0] != 0 {
            return Err("gRPC Health/Check answered no (uncompressed) message".into());
        }
        frame.advance(1);
        let len = frame.get_u32() as usize;
        if frame.len() != len {
            return Err("gRPC Health/Check answered a message of the wrong length".into());
        }
        let answer = HealthCheckResponse::decode(frame)
            .map_err(|e| format!("gRPC Health/Check answered a malformed message: {e}"))?;
        match answer.status {
            SERVING => Ok(()),
            2 => Err("gRPC Health/Check answered NOT_SERVING".into()),
            other => Err(format!(
                "gRPC Health/Check answered status {other}, not SERVING"
            )),
        }
    }

    /// `grpc-status` and `grpc-message` (up to 200 characters, control characters as spaces),
    /// when there is a status.
    fn status(headers: &http::HeaderMap) -> Option<(u16, String)> {
        let code = crate::grpc::status_of(headers)?;
        let message = headers
            .get(&crate::grpc::GRPC_MESSAGE)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        let message = String::from_utf8_lossy(message)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        Some((code, message))
    }
}

#[cfg(test)]
mod tests {
    //! The gRPC check against real HTTP/2 servers (the h2 crate) that answer it well and
    //! badly: each bad answer fails the check, saying what was wrong.

    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Response};

    use super::*;

    /// An answer of a health server: the HTTP status, the body, and the trailers'
    /// `grpc-status` (`None`: no trailers).
    type Answer = (u16, Bytes, Option<&'static str>);

    /// An HTTP/2 server on `127.0.0.1:0` answering every request with `answer` (a body of a
    /// message framed as gRPC frames it: `frame(...)`).
    async fn health_server(answer: Answer) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((_req, mut respond))) = conn.accept().await {
                        let (status, body, grpc_status) = answer.clone();
                        let head = Response::builder()
                            .status(status)
                            .header("content-type", "application/grpc")
                            .body(())
                            .expect("a head");
                        let Ok(mut send) = respond.send_response(head, false) else {
                            return;
                        };
                        let _ = send.send_data(body, grpc_status.is_none());
                        if let Some(code) = grpc_status {
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", HeaderValue::from_static(code));
                            trailers.insert("grpc-message", HeaderValue::from_static("said\tso"));
                            let _ = send.send_trailers(trailers);
                        }
                    }
                });
            }
        });
        addr
    }

    fn frame(flag: u8, len: u32, message: &[u8]) -> Bytes {
        let mut f = vec![flag];
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(message);
        Bytes::from(f)
    }

    async fn check(answer: Answer) -> Result<(), String> {
        check_at(health_server(answer).await, Duration::from_secs(5)).await
    }

    async fn check_at(addr: std::net::SocketAddr, timeout: Duration) -> Result<(), String> {
        let backend = turnout_config::Backend::parse(&turnout_config::ServerEntry {
            addr: addr.to_string(),
            weight: 1,
        })
        .expect("a server");
        let mut server = Upstream::new(backend, Arc::default(), Arc::default(), None);
        server.h2 = true;
        let clients = probe_clients(&UpstreamTls::load(&Default::default()).expect("no CA"));
        let check = HealthCheck {
            grpc_service: Some("shop.Orders".into()),
            timeout,
            ..HealthCheck::default()
        };
        probe_once(
            clients.for_pool("blue").for_server(&server),
            &server,
            &check,
        )
        .await
    }

    #[tokio::test]
    async fn a_grpc_check_passes_on_serving_only_and_says_what_was_wrong() {
        // SERVING (status = 1: field 1, varint 1).
        assert_eq!(
            check((200, frame(0, 2, &[0x08, 1]), Some("0"))).await,
            Ok(())
        );
        for (answer, says) in [
            ((200, frame(0, 2, &[0x08, 2]), Some("0")), "NOT_SERVING"),
            // An empty message: UNKNOWN.
            ((200, frame(0, 0, &[]), Some("0")), "status 0, not SERVING"),
            ((200, frame(0, 0, &[]), Some("12")), "status 12: said so"),
            ((500, Bytes::new(), None), "HTTP 500"),
            ((200, frame(0, 2, &[0x08, 1]), None), "no grpc-status"),
            ((200, frame(0, 2, &[0x08, 1]), Some("OK")), "no grpc-status"),
            (
                (200, frame(1, 2, &[0x08, 1]), Some("0")),
                "no (uncompressed) message",
            ),
            (
                (200, frame(0, 9, &[0x08, 1]), Some("0")),
                "the wrong length",
            ),
            ((200, frame(0, 2, &[0xff, 0xff]), Some("0")), "malformed"),
            (
                (200, Bytes::from_static(&[0, 0]), Some("0")),
                "no (uncompressed) message",
            ),
            (
                (200, Bytes::from(vec![0u8; 200 * 1024]), Some("0")),
                "answer unread",
            ),
        ] {
            let e = check(answer.clone()).await.expect_err("the check fails");
            assert!(e.contains(says), "{answer:?}: {e}");
        }
        // A server that takes the connection and never says a word: the check's timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr");
        let keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                held.push(socket);
            }
        });
        let e = check_at(addr, Duration::from_millis(200))
            .await
            .expect_err("no answer");
        assert!(
            e.contains("no answer to gRPC Health/Check \"shop.Orders\" within 200ms"),
            "{e}"
        );
        keep.abort();
    }
}
