//! Forwarding: a request sent to a server of its pool over a kept-alive connection ([`conns`],
//! dialled through [`clients`]),
//! with the one retry rule every path uses (proxied requests and cache fills alike), the
//! passive health accounting of each attempt, and the upstream's answer turned into the
//! client's response (an upgrade into a tunnel, [`upgrade`]).

pub(crate) mod clients;
pub(crate) mod conns;
mod mirror;
mod retry;
mod upgrade;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header;
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use std::time::Duration;
use turnout_config::ServerAddr;

use tokio_util::task::TaskTracker;
use turnout_core::{Env, InFlight, Pool, RequestInfo, Upstream};

use self::conns::Stale;
use self::retry::{retryable, Attempt, RetryCopy};
use crate::body::{ClientBody, ProxyBody, UpstreamBody};
use crate::downstream::Downstream;
use crate::error::{text_response, DisplayChain, ProxyError};
use crate::headers::{set_forwarded, strip_hop_by_hop};

static SLASH: PathAndQuery = PathAndQuery::from_static("/");

/// How often a held request looks for a server again.
const HOLD_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// The forwarder: sends a request to a server of its pool under the one retry rule, counts
/// each attempt for or against that server's passive health, and turns the answer into the
/// client's response (an upgrade into a tunnel). It owns the upstream connections and the open
/// tunnels; it reads only the fixed part of the routing state.
#[derive(Debug)]
pub(crate) struct Forwarder {
    /// The upstream connections, kept alive per worker thread.
    pub(crate) upstreams: Arc<conns::Upstreams>,
    /// Open tunnels, so shutdown can wait for them.
    pub(crate) tunnels: TaskTracker,
    env: Arc<Env>,
    response_timeout: Duration,
    hold_when_unavailable: Option<Duration>,
    body_timeout: Duration,
}

impl Forwarder {
    /// `response_timeout` bounds each attempt to its response head, `hold_when_unavailable` is
    /// how long a request waits for a pool with no server able to take it, `body_timeout` how
    /// long a response body may stall.
    pub(crate) fn new(
        upstreams: conns::Upstreams,
        env: Arc<Env>,
        response_timeout: Duration,
        hold_when_unavailable: Option<Duration>,
        body_timeout: Duration,
    ) -> Forwarder {
        Forwarder {
            upstreams: Arc::new(upstreams),
            tunnels: TaskTracker::new(),
            env,
            response_timeout,
            hold_when_unavailable,
            body_timeout,
        }
    }

    /// The fixed part of the routing state it reads (the metrics, the events).
    pub(crate) fn env(&self) -> &Env {
        &self.env
    }

    /// Sends a request to a server of `pool` (the balancer's pick) and, when [`retryable`]
    /// allows, once more to another one. `body` is `None` for a request without one; `upgrade`
    /// keeps the request's `Upgrade` headers (an upgrade is never retried); `deadline` is a
    /// gRPC call's (each attempt waits for its answer's head no longer). `used` names the
    /// server last tried, for the access log. Every attempt counts for or against its server's
    /// passive health, but for a failure of the client's own body; an upstream's failure is
    /// logged here as a warning.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn forward(
        &self,
        pool: &Arc<Pool>,
        mut parts: Parts,
        mut body: Option<ClientBody>,
        upgrade: bool,
        deadline: Option<tokio::time::Instant>,
        down: &Downstream,
        used: &mut Option<ServerAddr>,
    ) -> Result<(Response<Incoming>, InFlight), ProxyError> {
        // Whether the client is still sending its body when the response timeout ends.
        let body_read = body
            .as_mut()
            .filter(|b| !http_body::Body::is_end_stream(*b))
            .map(ClientBody::watch_end);
        let first = {
            let info = RequestInfo {
                headers: &parts.headers,
                query: None,
                peer: down.peer.ip(),
            };
            pool.pick(|| self.env.routing.client_ip(&info))
        };
        // `hold_when_unavailable`: a pool with no server able to take the request (an app
        // restarting) is waited for, up to this deadline, instead of answered 503 or 502 at once.
        let hold_until = self
            .hold_when_unavailable
            .filter(|_| !upgrade)
            .map(|d| tokio::time::Instant::now() + d);
        let first = match (first, hold_until) {
            (Some(first), _) => Some(first),
            // Boxed (here and below): only a request that waits pays for the wait's state.
            (None, Some(until)) => {
                Box::pin(self.wait_for_server(pool, down, &parts.headers, until)).await
            }
            (None, None) => None,
        };
        let Some(first) = first else {
            return Err(ProxyError::NoHealthyServer {
                pool: pool.name().to_string(),
            });
        };
        let mut guard = pool.begin_request();
        guard.on_server(first);
        *used = Some(first.addr.clone());

        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| SLASH.clone());
        self.outbound_headers(&mut parts.headers, down, upgrade);
        // A retry needs a copy of the request, so keep one only where a retry is possible:
        // another server, a hold, or an HTTP/2 app, which may refuse a stream unprocessed
        // after its body went (the body is kept to send again, up to its limit).
        let replay = pool.settings().protocol.is_h2();
        let (body, mut retry) =
            if (pool.servers().len() > 1 || hold_until.is_some() || replay) && !upgrade {
                let (body, reclaim) = match body {
                    Some(body) => {
                        let (body, rx) =
                            UpstreamBody::reclaimable(crate::body::Returned::unread(body), replay);
                        (body, Some(rx))
                    }
                    None => (UpstreamBody::Empty, None),
                };
                let copy = RetryCopy {
                    method: parts.method.clone(),
                    headers: parts.headers.clone(),
                    idempotent: matches!(
                        parts.method,
                        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
                    ),
                    reclaim,
                    replay,
                };
                (body, Some(copy))
            } else {
                (
                    body.map_or(UpstreamBody::Empty, UpstreamBody::Incoming),
                    None,
                )
            };
        // A gRPC call's own deadline (`grpc-timeout`, read once into its access record) bounds
        // the wait too, when it is sooner.
        let timeout = deadline.map_or(self.response_timeout, |d| {
            d.saturating_duration_since(tokio::time::Instant::now())
                .min(self.response_timeout)
        });
        // Origin form: the connection is to the server already.
        parts.uri = Uri::from(path.clone());
        // Upstreams speak HTTP/1.1 whatever the client spoke.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        // With a retry of its own, turnout sends a request that an idle connection's close
        // returned unsent to another server (the one whose connections just closed is likely
        // down); a pool of one server can only try a fresh connection to the same one.
        let stale = if pool.servers().len() > 1 && retry.is_some() {
            Stale::Report
        } else {
            Stale::Redial
        };
        let mut upstream = first;
        let mut attempt = self
            .send(
                pool,
                first,
                Request::from_parts(parts, body),
                stale,
                timeout,
            )
            .await;

        // One retry on another server; under `hold_when_unavailable`, as many more as the hold
        // allows, each under the same rule (`retryable`).
        let mut retried = false;
        while let Some(copy) = retry.as_mut().filter(|c| retryable(&attempt, c.idempotent)) {
            let other = if retried {
                None
            } else {
                pool.pick_other(upstream)
            };
            let next = match (other, hold_until) {
                (Some(next), _) => next,
                // Under a hold, the same rule again once a server can take it: a request that
                // never reached an app, or an idempotent one whose app went away before its
                // answer began (an app killed mid-request, as a restart does).
                (None, Some(until)) => {
                    match Box::pin(self.wait_for_server(pool, down, &copy.headers, until)).await {
                        Some(next) => next,
                        None => break,
                    }
                }
                // No other server: an HTTP/2 app that refused the stream unprocessed (a burst
                // past its stream limit before its SETTINGS arrived, say) takes it once more.
                (None, None) if !retried && attempt.is_refused() => upstream,
                _ => break,
            };
            let Some(again) = copy.take_request(&path).await else {
                break;
            };
            // Counted here, once a retry follows (a failure that ends the request is counted
            // below); a stream the app refused is no sign of a failing server.
            if !attempt.is_refused() {
                self.passive_failure(pool, upstream);
            }
            if let Attempt::Failed(e) = &attempt {
                tracing::debug!(pool = %pool.name(), from = %upstream.addr, to = %next.addr, error = ?e, "retrying");
            }
            pool.metrics().retried();
            retried = true;
            upstream = next;
            guard.on_server(next);
            *used = Some(next.addr.clone());
            attempt = self.send(pool, next, again, stale, timeout).await;
        }

        let uploading = body_read.is_some_and(|done| !done.load(Ordering::Relaxed));
        let refused = attempt.is_refused();
        match attempt.into_result(pool, upstream, timeout, uploading) {
            Ok(resp) => {
                if matches!(resp.status().as_u16(), 502..=504) {
                    self.passive_failure(pool, upstream);
                } else {
                    upstream.health.record_success();
                }
                Ok((resp, guard))
            }
            Err(err) => {
                if !err.is_clients_fault() {
                    if !refused {
                        self.passive_failure(pool, upstream);
                    }
                    // Its own line, so `RUST_LOG=warn` still shows why.
                    tracing::warn!(error = %DisplayChain(&err), "forwarding failed");
                }
                Err(err)
            }
        }
    }

    /// One attempt, bounded by `timeout` (the response timeout, or a shorter gRPC deadline).
    async fn send(
        &self,
        pool: &Pool,
        upstream: &Upstream,
        req: Request<UpstreamBody>,
        stale: Stale,
        timeout: Duration,
    ) -> Attempt {
        let sent = self
            .upstreams
            .send(pool.name().as_str(), upstream, req, stale);
        match tokio::time::timeout(timeout, sent).await {
            Ok(Ok(resp)) => Attempt::Answered(resp),
            Ok(Err(e)) => Attempt::Failed(e),
            Err(_) => Attempt::TimedOut,
        }
    }

    /// The headers of a request on its way upstream: hop-by-hop ones gone (but an allowed
    /// upgrade's), `X-Forwarded-*` set (`X-Forwarded-Host` from the request's one Host, which
    /// `normalize_request` made sure of, an HTTP/2 `:authority` included), `Forwarded` and
    /// `X-Real-IP` only from a trusted proxy, the preview token taken out.
    pub(crate) fn outbound_headers(
        &self,
        headers: &mut http::HeaderMap,
        down: &Downstream,
        upgrade: bool,
    ) {
        strip_hop_by_hop(headers, upgrade);
        let routing = &self.env.routing;
        let trusted = routing.trusted_proxies.contains(&down.peer.ip());
        let host = headers.get(header::HOST).cloned();
        set_forwarded(headers, &down.ip_header, down.proto(), host, trusted);
        if let Some(preview) = routing.preview.as_ref().filter(|p| p.token.is_some()) {
            crate::headers::strip_preview_token(headers, &preview.header, &preview.cookie);
        }
    }

    /// Waits until `pool` has a server to take a request (polled every 50 ms: only a request
    /// under `hold_when_unavailable` whose pool has none pays for it), or `until` passes.
    async fn wait_for_server<'p>(
        &self,
        pool: &'p Pool,
        down: &Downstream,
        headers: &http::HeaderMap,
        until: tokio::time::Instant,
    ) -> Option<&'p Upstream> {
        let info = RequestInfo {
            headers,
            query: None,
            peer: down.peer.ip(),
        };
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                return None;
            }
            tokio::time::sleep_until(until.min(now + HOLD_POLL)).await;
            if let Some(server) = pool.pick(|| self.env.routing.client_ip(&info)) {
                return Some(server);
            }
        }
    }

    /// Counts a failure against `server`; a streak of them ejects it for a while.
    fn passive_failure(&self, pool: &Pool, server: &Upstream) {
        let Some((epoch, length)) = server.health.record_failure(&pool.settings().passive) else {
            return;
        };
        tracing::warn!(
            pool = %pool.name(),
            server = %server.addr,
            ejected_for = %humantime::format_duration(length),
            "server ejected after failing requests in a row"
        );
        self.env
            .metrics
            .ejected(pool.name().as_str(), server.addr.as_str());
        self.env.events.push(
            "ejected",
            format!(
                "{} {} ejected for {} after failing requests in a row",
                pool.name(),
                server.addr,
                humantime::format_duration(length)
            ),
        );
        let health = Arc::clone(&server.health);
        let (pool, addr) = (pool.name().clone(), server.addr.clone());
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            if health.end_ejection(Some(epoch)) {
                tracing::info!(%pool, server = %addr, "ejection over; the server takes requests again");
            }
        });
    }

    pub(crate) fn respond(
        &self,
        mut resp: Response<Incoming>,
        mut guard: InFlight,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        // An HTTP/2 stream counts as open on its connection until the response's last byte.
        if let Some(conns::StreamToken(token)) = resp.extensions_mut().remove() {
            guard.hold(token);
        }
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_upgrade)) =
            (resp.status(), client_upgrade)
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let websocket = resp
                .headers()
                .get(http::header::UPGRADE)
                .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
            let (mut parts, _empty) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            upgrade::spawn_tunnel(
                &self.tunnels,
                client_upgrade,
                upstream_upgrade,
                guard.into_tunnel(),
                websocket,
            );
            return Response::from_parts(parts, ProxyBody::empty());
        }
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // A switch nobody asked for (or to a protocol not allowed): never tunneled.
            tracing::warn!("the upstream switched protocols for a request that asked for no allowed upgrade; answered 502");
            return text_response(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: the app server switched protocols unasked\n",
            );
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        // An HTTP/1.0 upstream must not turn the client's keep-alive connection into a
        // one-shot one: the client gets turnout's HTTP version, not the upstream's.
        parts.version = Version::HTTP_11;
        Response::from_parts(parts, ProxyBody::upstream(body, guard, self.body_timeout))
    }
}
