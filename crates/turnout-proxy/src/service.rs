//! One request's path through the data plane: the health path, the route (one snapshot load),
//! the forward over the pooled client, and the response back.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use turnout_core::{InFlight, Pool, RequestInfo, Upstream};

use crate::body::{ProxyBody, UpstreamBody};
use crate::error::{text_response, DisplayChain, ProxyError};
use crate::headers::{is_upgrade_request, set_forwarded, strip_hop_by_hop};
use crate::{upgrade, Shared};

/// What one accepted connection knows about its client.
#[derive(Debug, Clone)]
pub(crate) struct Downstream {
    pub peer: SocketAddr,
    /// The client's IP, formatted once per connection for `X-Forwarded-For`.
    pub ip_header: HeaderValue,
    /// Came in over the HTTPS listener.
    pub https: bool,
}

impl Downstream {
    pub fn new(peer: SocketAddr, https: bool) -> Downstream {
        let ip_header = HeaderValue::try_from(peer.ip().to_string())
            .expect("an IP address is a valid header value");
        Downstream {
            peer,
            ip_header,
            https,
        }
    }

    /// `X-Forwarded-Proto`.
    pub fn proto(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}

/// turnout's cookies (sticky, preview, fleet mark) are made once, `HttpOnly; SameSite=Lax`;
/// over TLS they are also `Secure`, so a browser never sends them back in clear text. (One
/// small allocation, for a response that sets a cookie over TLS.)
fn secure_over_tls(cookie: HeaderValue, down: &Downstream) -> HeaderValue {
    if !down.https {
        return cookie;
    }
    let mut bytes = Vec::with_capacity(cookie.len() + 8);
    bytes.extend_from_slice(cookie.as_bytes());
    bytes.extend_from_slice(b"; Secure");
    HeaderValue::from_bytes(&bytes).unwrap_or(cookie)
}

static SLASH: PathAndQuery = PathAndQuery::from_static("/");

/// Where ACME HTTP-01 challenges are asked for; never redirected to https.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// 308 to the same URL over https on `port` (the method and body are kept by a 308).
fn redirect_https(req: &Request<Incoming>, port: u16) -> Response<ProxyBody> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    let Some(host) = host else {
        return text_response(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: no Host header to redirect to https with\n",
        );
    };
    let target = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
    let location = if port == 443 {
        format!("https://{}{target}", host.host())
    } else if host.host().contains(':') && !host.host().starts_with('[') {
        format!("https://[{}]:{port}{target}", host.host())
    } else {
        format!("https://{}:{port}{target}", host.host())
    };
    let mut resp = text_response(
        StatusCode::PERMANENT_REDIRECT,
        "308 Permanent Redirect: this site is served over https\n",
    );
    match HeaderValue::try_from(location) {
        Ok(location) => {
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        Err(_) => text_response(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: the URL cannot be redirected\n",
        ),
    }
}

/// One access log line: every request gets exactly one, whatever happened to it.
pub(crate) struct Access<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub status: StatusCode,
    pub pool: Option<&'a Pool>,
    /// Why the request went to its pool (`static` for a static file).
    pub route: &'a str,
    /// `HIT` or `MISS` for a request under the cache's prefixes.
    pub cache: Option<&'a str>,
    pub upstream: Option<&'a Upstream>,
    pub client: SocketAddr,
    pub started: Instant,
    pub error: Option<&'a dyn std::error::Error>,
}

impl<'a> Access<'a> {
    /// A response turnout made itself, from no pool (a redirect, a static file).
    pub fn local(
        req: &'a Request<Incoming>,
        status: StatusCode,
        route: &'a str,
        down: &Downstream,
        started: Instant,
    ) -> Access<'a> {
        Access {
            method: req.method(),
            path: req.uri().path(),
            status,
            pool: None,
            route,
            cache: None,
            upstream: None,
            client: down.peer,
            started,
            error: None,
        }
    }

    pub fn log(self) {
        let elapsed = self.started.elapsed();
        if let Some(pool) = self.pool {
            pool.metrics()
                .observe(self.status.as_u16(), elapsed.as_secs_f64());
        }
        tracing::info!(
            target: "turnout::access",
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            pool = self.pool.map(|p| p.name().as_str()),
            route = self.route,
            cache = self.cache,
            upstream = self.upstream.map(|u| u.addr.as_str()),
            client = %self.client,
            ms = %format_args!("{:.3}", elapsed.as_secs_f64() * 1000.0),
            error = self.error.map(|e| tracing::field::display(DisplayChain(e))),
        );
    }
}

/// What a retry needs to send the request again: kept only for pools with more than one
/// server, where a retry is possible at all (a single-server pool pays nothing for it).
struct RetryCopy {
    method: Method,
    headers: http::HeaderMap,
    idempotent: bool,
    /// The body comes back here if the first attempt never read it.
    reclaim: Option<tokio::sync::oneshot::Receiver<Incoming>>,
    has_body: bool,
}

impl RetryCopy {
    /// The request again, for `upstream`, if it can still be sent: its body was never read,
    /// or it had none.
    fn take_request(
        &mut self,
        path: &PathAndQuery,
        upstream: &Upstream,
    ) -> Option<Request<UpstreamBody>> {
        let body = if self.has_body {
            UpstreamBody::Incoming(self.reclaim.as_mut()?.try_recv().ok()?)
        } else {
            UpstreamBody::Empty
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = upstream_uri(upstream, path);
        *req.headers_mut() = std::mem::take(&mut self.headers);
        Some(req)
    }
}

pub(crate) fn upstream_uri(upstream: &Upstream, path: &PathAndQuery) -> Uri {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if upstream.tls {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    uri.authority = Some(upstream.authority.clone());
    uri.path_and_query = Some(path.clone());
    Uri::from_parts(uri).expect("scheme, authority and path make a URI")
}

/// The request never left: the pooled connection it was given had closed first (hyper calls
/// that canceled). Safe to send again, whatever the method.
fn never_sent(e: &hyper_util::client::legacy::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_canceled)
}

/// The attempt failed because the client's request body did (the client went away mid-upload,
/// stalled, or sent a malformed chunk), not the upstream: hyper reports that as a "user body"
/// error whose cause is the error of the body turnout was passing through.
pub(crate) fn client_body_fault(
    e: &hyper_util::client::legacy::Error,
) -> Option<crate::error::ClientFault> {
    use crate::error::ClientFault;
    let user = crate::error::chain(e)
        .filter_map(|err| err.downcast_ref::<hyper::Error>())
        .find(|h| h.is_user())?;
    let client = std::error::Error::source(user)?.downcast_ref::<hyper::Error>()?;
    Some(
        if matches!(
            crate::deadlines::deadline_of(client),
            Some(crate::deadlines::Deadline::Body(_))
        ) {
            ClientFault::Stalled
        } else if client.is_incomplete_message() || client.is_closed() || ended_early(client) {
            ClientFault::Gone
        } else {
            ClientFault::Malformed
        },
    )
}

/// The body's connection ended before the body did ("end of file before message length
/// reached", a reset).
fn ended_early(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    crate::error::chain(e)
        .find_map(|err| err.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
            )
        })
}

/// How one attempt at an upstream ended.
pub(crate) enum Attempt {
    Answered(Response<Incoming>),
    Failed(hyper_util::client::legacy::Error),
    TimedOut,
}

impl Attempt {
    /// The answer, or the failure as the error that names the pool and the server.
    pub(crate) fn into_result(
        self,
        pool: &Pool,
        upstream: &Upstream,
        timeout: std::time::Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (p, u) = (pool.name().to_string(), upstream.addr.to_string());
        match self {
            Attempt::Answered(resp) => Ok(resp),
            Attempt::Failed(source) => match client_body_fault(&source) {
                Some(why) => Err(ProxyError::ClientBody { why, source }),
                None if source.is_connect() => Err(ProxyError::Connect {
                    pool: p,
                    upstream: u,
                    source,
                }),
                None => Err(ProxyError::Upstream {
                    pool: p,
                    upstream: u,
                    source,
                }),
            },
            Attempt::TimedOut => Err(ProxyError::Timeout {
                pool: p,
                upstream: u,
                after: timeout,
            }),
        }
    }
}

/// The access line of a request whose client went away before its response was ready (hyper
/// drops the request's future then): logged with nginx's 499 when dropped still armed.
struct Abandoned {
    method: Method,
    path: Option<PathAndQuery>,
    client: SocketAddr,
    started: Instant,
    pool: Option<Arc<Pool>>,
    armed: bool,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        Access {
            method: &self.method,
            path: self.path.as_ref().map_or("/", PathAndQuery::path),
            status: CLIENT_CLOSED,
            pool: self.pool.as_deref(),
            route: "aborted",
            cache: None,
            upstream: None,
            client: self.client,
            started: self.started,
            error: None,
        }
        .log();
    }
}

/// nginx's "client closed request": logged, never sent.
pub(crate) const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

impl Shared {
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        down: &Downstream,
    ) -> Response<ProxyBody> {
        if req.uri().path() == self.settings.health_path {
            return self.health(req.version() < Version::HTTP_2);
        }
        let mut abandoned = Abandoned {
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            client: down.peer,
            started: Instant::now(),
            pool: None,
            armed: true,
        };
        let resp = self.answer(req, down, &mut abandoned).await;
        abandoned.armed = false;
        resp
    }

    /// Everything but the health path; `abandoned` logs the request if it is dropped first.
    async fn answer(
        &self,
        mut req: Request<Incoming>,
        down: &Downstream,
        abandoned: &mut Abandoned,
    ) -> Response<ProxyBody> {
        // `Connection: close` means something to HTTP/1 clients only; HTTP/2 forbids it.
        let h1 = req.version() < Version::HTTP_2;
        if req.method() == Method::CONNECT {
            // A reverse proxy is no forward proxy: nothing to tunnel to.
            let mut resp = text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 Method Not Allowed: CONNECT is not served here\n",
            );
            if h1 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return resp;
        }
        let started = abandoned.started;

        // One Host (and one Content-Length), valid, before anything reads them.
        let checked = {
            let (version, authority) = (req.version(), req.uri().authority().cloned());
            crate::headers::normalize_request(version, authority.as_ref(), req.headers_mut())
        };
        if let Err(bad) = checked {
            let mut resp = text_response(StatusCode::BAD_REQUEST, bad.public_text());
            if h1 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let mut access = Access::local(&req, resp.status(), "refused", down, started);
            access.error = Some(&bad);
            access.log();
            return resp;
        }

        // `redirect_https`: plain requests go to the https URL; the health path stays (the
        // load balancer's plain check) and so do ACME HTTP-01 challenges (a renewal needs them).
        if let Some(port) = self.settings.redirect_https_port {
            if !down.https && !req.uri().path().starts_with(ACME_CHALLENGE) {
                let resp = redirect_https(&req, port);
                Access::local(&req, resp.status(), "redirect", down, started).log();
                return resp;
            }
        }

        // `[[static]]` directories are served from disk here, never forwarded.
        if let Some(dir) = self.files.matches(req.uri().path()) {
            // Boxed: the file path's future is over 2 KiB, and inline it would grow the
            // future of every request, proxied ones too. A static file pays one allocation.
            let resp = Box::pin(self.files.serve(dir, &req)).await;
            Access::local(&req, resp.status(), "static", down, started).log();
            return resp;
        }

        // Route: one snapshot load, one decision (preview, rules, fleet mark, stickiness, the
        // weighted draw). The request keeps this pool to its end.
        let peer = down.peer.ip();
        let decided = {
            let snapshot = self.router.load();
            let info = RequestInfo {
                headers: req.headers(),
                query: req.uri().query(),
                peer,
            };
            snapshot
                .decide(&info, fastrand::u64(..))
                .map(|d| (Arc::clone(d.pool), d.cookies.map(|c| c.cloned()), d.reason))
        };
        let (pool, set_cookies, reason) = match decided {
            Ok(d) => d,
            Err(refusal) => {
                let err = ProxyError::from(refusal);
                let resp = err.into_response(h1 && !req.body().is_end_stream());
                Access {
                    method: req.method(),
                    path: req.uri().path(),
                    status: resp.status(),
                    pool: None,
                    route: "preview",
                    cache: None,
                    upstream: None,
                    client: down.peer,
                    started,
                    error: Some(&err),
                }
                .log();
                return resp;
            }
        };
        // GET and HEAD under `[cache] prefixes`: from memory, or fetched once and kept.
        if matches!(*req.method(), Method::GET | Method::HEAD)
            && self.cache.covers(req.uri().path())
            && req.body().is_end_stream()
            && !req.headers().contains_key(header::AUTHORIZATION)
            && !is_upgrade_request(req.version(), req.headers(), &self.settings.upgrades)
        {
            let (parts, _empty) = req.into_parts();
            // For the log line: handles on the request's own bytes, not copies.
            let (method, target) = (parts.method.clone(), parts.uri.path_and_query().cloned());
            let (mut resp, label) = self.cached(parts, Arc::clone(&pool), down, h1).await;
            for cookie in set_cookies.into_iter().flatten() {
                resp.headers_mut()
                    .append(header::SET_COOKIE, secure_over_tls(cookie, down));
            }
            Access {
                method: &method,
                path: target.as_ref().map_or("/", PathAndQuery::path),
                status: resp.status(),
                pool: Some(&pool),
                route: reason.as_str(),
                cache: Some(label),
                upstream: None,
                client: down.peer,
                started,
                error: None,
            }
            .log();
            return resp;
        }

        let client_ip = || {
            let info = RequestInfo {
                headers: req.headers(),
                query: None,
                peer,
            };
            self.env.routing.client_ip(&info)
        };
        let Some(first) = pool.pick(client_ip) else {
            let err = ProxyError::NoHealthyServer {
                pool: pool.name().to_string(),
            };
            let resp = err.into_response(h1 && !req.body().is_end_stream());
            Access {
                method: req.method(),
                path: req.uri().path(),
                status: resp.status(),
                pool: Some(&pool),
                route: reason.as_str(),
                cache: None,
                upstream: None,
                client: down.peer,
                started,
                error: Some(&err),
            }
            .log();
            return resp;
        };
        let mut guard = pool.begin_request();
        guard.on_server(first);
        abandoned.pool = Some(Arc::clone(&pool));

        let is_upgrade = is_upgrade_request(req.version(), req.headers(), &self.settings.upgrades);
        let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        let has_body = !body.is_end_stream();
        let method = parts.method.clone();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| SLASH.clone());
        self.outbound_headers(&mut parts.headers, down, is_upgrade);

        // A retry needs a copy of the request, so keep one only where a retry is possible.
        let (body, mut retry) = if pool.servers().len() > 1 && !is_upgrade {
            let (body, reclaim) = if has_body {
                let (body, rx) = UpstreamBody::reclaimable(body);
                (body, Some(rx))
            } else {
                (UpstreamBody::Incoming(body), None)
            };
            let copy = RetryCopy {
                method: method.clone(),
                headers: parts.headers.clone(),
                idempotent: matches!(
                    method,
                    Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
                ),
                reclaim,
                has_body,
            };
            (body, Some(copy))
        } else {
            (UpstreamBody::Incoming(body), None)
        };

        parts.uri = upstream_uri(first, &path);
        // Upstreams speak HTTP/1.1 whatever the client spoke.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let mut upstream = first;
        let own_retry = retry.is_some();
        let mut attempt = self
            .send(pool.name(), Request::from_parts(parts, body), own_retry)
            .await;

        // One retry, on another server: after a failed connect or a request that never went
        // out (its pooled connection had closed) for any method, after a reset before the
        // response for an idempotent one, and only if the body was never read.
        if let (Attempt::Failed(e), Some(copy)) = (&attempt, retry.as_mut()) {
            let upstreams_fault = client_body_fault(e).is_none();
            if upstreams_fault && (e.is_connect() || never_sent(e) || copy.idempotent) {
                if let Some(second) = pool.pick_other(first) {
                    if let Some(again) = copy.take_request(&path, second) {
                        self.passive_failure(&pool, first);
                        tracing::debug!(pool = %pool.name(), from = %first.addr, to = %second.addr, error = %DisplayChain(e), "retrying on another server");
                        pool.metrics().retried();
                        upstream = second;
                        guard.on_server(second);
                        attempt = self.send(pool.name(), again, own_retry).await;
                    }
                }
            }
        }

        let (resp, err) = match attempt.into_result(&pool, upstream, self.settings.response_timeout)
        {
            Ok(resp) => {
                if matches!(resp.status().as_u16(), 502..=504) {
                    self.passive_failure(&pool, upstream);
                } else {
                    upstream.health.record_success();
                }
                let mut resp = self.respond(resp, guard, client_upgrade, h1);
                for cookie in set_cookies.into_iter().flatten() {
                    resp.headers_mut()
                        .append(header::SET_COOKIE, secure_over_tls(cookie, down));
                }
                (resp, None)
            }
            Err(err) => self.failed(&pool, upstream, err, h1 && has_body),
        };
        Access {
            method: &method,
            path: path.path(),
            status: resp.status(),
            pool: Some(&pool),
            route: reason.as_str(),
            cache: None,
            upstream: Some(upstream),
            client: down.peer,
            started,
            error: err.as_ref().map(|e| e as &dyn std::error::Error),
        }
        .log();
        resp
    }

    /// One attempt, bounded by the response timeout. `own_retry`: turnout retries this one
    /// itself, on another server (see `Shared::client_own_retry`).
    pub(crate) async fn send(
        &self,
        pool: &turnout_core::PoolName,
        req: Request<UpstreamBody>,
        own_retry: bool,
    ) -> Attempt {
        let client = if own_retry {
            &self.client_own_retry
        } else {
            &self.client
        }
        .for_pool(pool.as_str());
        match tokio::time::timeout(self.settings.response_timeout, client.request(req)).await {
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

    /// Counts a failure against `server`; a streak of them ejects it for a while.
    pub(crate) fn passive_failure(&self, pool: &Pool, server: &Upstream) {
        let Some((epoch, length)) = server.health.record_failure(&pool.settings().passive) else {
            return;
        };
        tracing::warn!(
            pool = %pool.name(),
            server = %server.addr,
            ejected_for = %humantime::format_duration(length),
            "server ejected after failing requests in a row"
        );
        self.router
            .snapshot()
            .env
            .metrics
            .ejected(pool.name().as_str(), server.addr.as_str());
        let health = Arc::clone(&server.health);
        let (pool, addr) = (pool.name().clone(), server.addr.clone());
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            if health.end_ejection(Some(epoch)) {
                tracing::info!(%pool, server = %addr, "ejection over; the server takes requests again");
            }
        });
    }

    /// A forward to `server` failed: count it against the server, and give the synthetic answer
    /// and the failure itself for the logs. The failure also gets a warning of its own, so
    /// `RUST_LOG=warn` still shows why.
    fn failed(
        &self,
        pool: &Pool,
        server: &Upstream,
        err: ProxyError,
        close: bool,
    ) -> (Response<ProxyBody>, Option<ProxyError>) {
        if let ProxyError::ClientBody { why, .. } = &err {
            self.env.metrics.client_cutoff(why.label());
        }
        if err.is_clients_fault() {
            // The client broke its own request: the server did nothing wrong.
            tracing::info!(error = %DisplayChain(&err), "the client's request body failed");
            return (err.into_response(true), Some(err));
        }
        self.passive_failure(pool, server);
        tracing::warn!(error = %DisplayChain(&err), "forwarding failed");
        (err.into_response(close), Some(err))
    }

    pub(crate) fn respond(
        &self,
        mut resp: Response<Incoming>,
        guard: InFlight,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        h1: bool,
    ) -> Response<ProxyBody> {
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_upgrade)) =
            (resp.status(), client_upgrade)
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let (mut parts, _empty) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            upgrade::spawn_tunnel(
                &self.tunnels,
                client_upgrade,
                upstream_upgrade,
                guard.into_tunnel(),
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
        if h1 && self.draining.load(Ordering::Relaxed) {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Response::from_parts(
            parts,
            ProxyBody::upstream(body, guard, self.settings.upstream_body_timeout),
        )
    }

    /// The load balancer's health check: 503 while shutting down, and (unless configured off)
    /// while the active pool has no server that can take a request.
    fn health(&self, h1: bool) -> Response<ProxyBody> {
        if self.draining.load(Ordering::Relaxed) {
            let mut resp = text_response(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
            if h1 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        } else if self.settings.health_reflects_pool && self.router.active().available() == 0 {
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy server in the active pool\n",
            )
        } else {
            text_response(StatusCode::OK, "ok\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, without calling it.
    fn future_size<A, B, F: std::future::Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request's future is as large as its largest path, and each one is allocated and
    /// moved as a whole (an HTTP/2 stream is a task of its own): the static-file and cache-miss
    /// paths, several KiB, are boxed so that proxied requests do not carry them. Inline, this
    /// future was 7.9 KiB and HTTP/2 proxying 11% slower (benches/h2-idle.sh).
    #[test]
    fn a_request_future_stays_small() {
        let size = future_size(
            |s: &'static Shared, (req, down): (Request<Incoming>, &'static Downstream)| {
                s.handle(req, down)
            },
        );
        assert!(size <= 4096, "Shared::handle's future is {size} bytes");
        // 64 bytes until the upstream body's stall deadline (a lazily made timer, its state and
        // its length in milliseconds) added 16; a file's reader stays boxed.
        let body = std::mem::size_of::<ProxyBody>();
        assert!(body <= 80, "ProxyBody grew to {body} bytes");
    }
}
