//! One request in two halves, as rpxy splits `handle_request` and `handle_request_inner`:
//! `Proxy::phases` takes it phase by phase, in the order it meets them (the health path,
//! admission: one valid Host, no CONNECT; its `X-Request-Id`, the body limit, the route
//! ([`crate::route`]: one snapshot load) and what holds it first (maintenance mode answers, a
//! pause waits), local answers ([`crate::local`]), then one pool asked (`Proxy::ask`: the cache,
//! [`crate::cache`], or the forward, [`crate::forward`]) with version-skew protection's one
//! fallback); `Proxy::answer` applies the answer rules once to whatever answered: the route's
//! cookies or the error page, the request id, and the access line ([`crate::access`]).

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use std::sync::Arc;

use crate::access::Access;
use crate::body::{ClientBody, ProxyBody};
use crate::downstream::Downstream;
use crate::error::{text_response, ProxyError};
use crate::headers::is_upgrade_request;
use crate::proxy::Proxy;
use crate::route::{Admission, Route};
use turnout_core::pause::Pause;
use turnout_core::Pool;

/// What a request's phases answered, and which of the answer rules still apply to it.
pub(crate) struct Answered {
    resp: Response<ProxyBody>,
    /// The access line to write with the answer (none for the load balancer's health path).
    access: Option<Access>,
    /// The route of an answer from a pool, and whether the client asked for JSON: the route's
    /// cookies are set, unless the answer is a failure, which gets the error page instead.
    routed: Option<(Route, bool)>,
}

impl Answered {
    /// Answered before any pool was asked: as it is, with its access line.
    fn early(resp: Response<ProxyBody>, access: Access) -> Answered {
        Answered {
            resp,
            access: Some(access),
            routed: None,
        }
    }
}

impl Proxy {
    /// What the client accepts, read before the phases take the request; for
    /// [`Proxy::answer`]. One request is the phases ([`Proxy::phases`]) awaited by the
    /// connection's service itself (no future around them: each layer moved the whole request
    /// future once more, `benches/instructions-per-request.sh`), then the answer rules.
    pub(crate) fn wanted(&self, req: &Request<Incoming>) -> Option<crate::compress::Wanted> {
        self.compressor
            .as_ref()
            .map(|c| c.wanted(req.headers(), req.method() == Method::HEAD))
    }

    /// The answer rules: a pool's answer gets its route's cookies (a failed one sets none: the
    /// client is to come back as if it never had) or, failed, the error page or JSON; the
    /// request id goes on every answer; the access line is written once; then the body is
    /// compressed if the client accepts it (`[compression]`): the access line's time stays the
    /// time to the response head.
    pub(crate) fn answer(
        &self,
        answered: Answered,
        wanted: Option<crate::compress::Wanted>,
        down: &Downstream,
    ) -> Response<ProxyBody> {
        let Answered {
            mut resp,
            access,
            routed,
        } = answered;
        let Some(access) = access else {
            return resp;
        };
        // turnout's own answer (an early one, or a failed forward's) to a gRPC call becomes a
        // gRPC status, never a page; its access line keeps the HTTP status turnout decided.
        let own = routed.is_none() || access.error.is_some();
        let grpc = (access.grpc && own && resp.status().as_u16() >= 400).then_some(access.route);
        if let (None, Some((route, json))) = (grpc, routed) {
            if access.error.is_none() {
                route.set_cookies(&mut resp, down);
            } else {
                self.pages.restyle(&mut resp, json);
            }
        }
        let mut resp = if access.grpc && !own {
            // The app's answer to a gRPC call: logged once the call ends, with its status.
            access.answer_later(resp)
        } else {
            access.answer(resp)
        };
        if let Some(why) = grpc {
            resp = crate::grpc::answer_as_grpc(resp, why);
        }
        if let (Some(c), Some(wanted)) = (&self.compressor, wanted) {
            if c.apply(&mut resp, wanted) {
                if let Some(e) = wanted.encoding {
                    self.env.metrics.compressed(e.token(), "dynamic");
                }
            }
        }
        resp
    }

    /// The phases, in the order a request meets them; each early answer is returned as it is.
    pub(crate) async fn phases(&self, mut req: Request<Incoming>, down: &Downstream) -> Answered {
        // `Connection: close` means something to HTTP/1 clients only; HTTP/2 forbids it.
        let h1 = req.version() < Version::HTTP_2;
        // The load balancer's check: answered first, whatever else is configured; not logged.
        if req.uri().path() == self.settings.server.health_path {
            return Answered {
                resp: self.health(h1),
                access: None,
                routed: None,
            };
        }
        // Written when dropped: with the status set below, or as 499 if the client leaves first.
        let mut access = Access::begin(&req, down);

        if let Some(resp) = refused(&mut req, h1, &mut access) {
            return Answered::early(resp, access);
        }
        // Room for what turnout adds (X-Request-Id, X-Forwarded-For, -Proto, -Host) at once:
        // hyper sizes the map to the parsed headers, and each insert past it grew (and
        // re-hashed) the map again (tests/allocations.rs: 27 -> 23 allocations per request).
        req.headers_mut().reserve(4);
        if self.settings.server.request_id {
            let trusted = self.env.routing.trusted_proxies.contains(&down.peer.ip());
            access.request_id = Some(crate::headers::request_id(req.headers_mut(), trusted));
        }
        if let Some(resp) = self.too_large(&req, h1) {
            access.route = "refused";
            return Answered::early(resp, access);
        }
        let json = crate::local::pages::wants_json(req.headers());
        let (mut routed, mut admission) = self.route(&req, down);
        // `[limits]`, once the pool is known (a rate may be a pool's own). A request refused
        // here names no pool: it never counts in a pool's figures (a rollout's verdict).
        let _in_flight = match self.limits(&req, down, routed.as_ref().ok()) {
            Ok(counted) => counted,
            Err(limited) => {
                access.route = "limited";
                let resp = access.fail(
                    ProxyError::from(limited),
                    h1 && !req.body().is_end_stream(),
                    &self.env.metrics,
                );
                return Answered::early(resp, access);
            }
        };
        // Maintenance answers; a pause holds the request (its body unread) until the resume,
        // then routes it against the state of that moment.
        let mut holds = 0;
        loop {
            match admission {
                Admission::Open => break,
                Admission::Maintenance(m) => {
                    access.route = "maintenance";
                    let mut resp =
                        self.pages
                            .maintenance(&m, self.env.maintenance.retry_after, json);
                    close_if_unread(&mut resp, h1, &req);
                    return Answered::early(resp, access);
                }
                Admission::Paused(pause) => {
                    holds += 1;
                    // Boxed: only a held request pays for the wait's state.
                    let client = self.env.routing.client_ip(&turnout_core::RequestInfo {
                        headers: req.headers(),
                        query: None,
                        peer: down.peer.ip(),
                    });
                    if holds > 3 || !Box::pin(wait_out_pause(&pause, client, &req)).await {
                        access.route = "shed";
                        let mut resp = self.pages.shed(json);
                        close_if_unread(&mut resp, h1, &req);
                        return Answered::early(resp, access);
                    }
                    (routed, admission) = self.route(&req, down);
                }
            }
        }
        // `[[auth]]`: before anything answers from this instance or a pool. A request it
        // refuses names no pool, as a limited one.
        if let Some(gate) = &self.gate {
            let to = routed
                .as_ref()
                .ok()
                .map(|r| (r.pool.name().as_str(), r.live));
            let checked = gate.check(&mut req, to, down, &self.env.metrics);
            // Boxed: only a data plane with rules pays for a check's state.
            if let Err(denied) = Box::pin(checked).await {
                access.route = "auth";
                let mut resp = match denied {
                    crate::auth::Denied::Error { err, challenge } => {
                        let mut resp =
                            access.fail(err, h1 && !req.body().is_end_stream(), &self.env.metrics);
                        if let Some(c) = challenge {
                            resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
                        }
                        resp
                    }
                    crate::auth::Denied::Answer(resp) => *resp,
                };
                close_if_unread(&mut resp, h1, &req);
                return Answered::early(resp, access);
            }
        }
        if let Some(resp) = self.local.answer(&req, down, &mut access).await {
            return Answered::early(resp, access);
        }

        let route = match routed {
            Ok(route) => route,
            Err(refusal) => {
                access.route = "preview";
                let resp = access.fail(
                    ProxyError::from(refusal),
                    h1 && !req.body().is_end_stream(),
                    &self.env.metrics,
                );
                return Answered::early(resp, access);
            }
        };
        access.route = route.reason.as_str();
        access.pool = Some(route.pool.clone());

        let upgrade = is_upgrade_request(
            req.version(),
            req.headers(),
            &self.settings.server.upgrade_protocols,
        );
        // GET and HEAD under `[cache] prefixes`: from memory, or fetched once and kept; the rest
        // is forwarded.
        let cached = self.cache.takes(&req, upgrade);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let body = (!body.is_end_stream()).then_some(body);
        let body = match (&route.mirror, body) {
            // A copy for the mirror (a rollout's mirror phase): forwarded requests only, as
            // before the cache answers any.
            (Some(mirror), body) if !upgrade && !cached => {
                self.forwarder.mirror(mirror, &parts, body, down)
            }
            (_, body) => body.map(ClientBody::new),
        };
        let body = body.map(|b| b.limited(self.settings.server.max_request_body));
        let close = h1 && body.is_some();
        // Version-skew protection: a request without a body that the new version answers 404
        // is asked again of the previous pool (an asset only the old version has).
        let copy = route
            .fallback
            .as_ref()
            .filter(|_| body.is_none() && !upgrade)
            .map(|_| Box::new(copy_head(&parts)));
        let mut resp = self
            .ask(
                &route.pool,
                parts,
                body,
                client_upgrade,
                cached,
                close,
                down,
                &mut access,
            )
            .await;
        if let (Some(old), Some(copy)) = (&route.fallback, copy) {
            if resp.status() == StatusCode::NOT_FOUND && access.error.is_none() {
                drop(resp);
                // Boxed: only this rare path pays for a second answer's state.
                resp = Box::pin(self.ask(old, *copy, None, None, cached, false, down, &mut access))
                    .await;
                access.pool = Some(Arc::clone(old));
                access.route = "skew";
            }
        }
        Answered {
            resp,
            access: Some(access),
            routed: Some((route, json)),
        }
    }

    /// Asks `pool` for the request and gives its answer: through the cache (`cached`: a GET or
    /// HEAD without a body under its prefixes) or forwarded (an upgrade's tunnel set up when
    /// `client_upgrade`); a failure answered as such (`close`: the request's body may be left
    /// unread), the server used and the failure noted in `access`.
    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &self,
        pool: &Arc<Pool>,
        parts: http::request::Parts,
        body: Option<ClientBody>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        cached: bool,
        close: bool,
        down: &Downstream,
        access: &mut Access,
    ) -> Response<ProxyBody> {
        if cached {
            return self
                .cache
                .cached(&self.forwarder, parts, pool, down, access)
                .await;
        }
        let upgrade = client_upgrade.is_some();
        match self
            .forwarder
            .forward(
                pool,
                parts,
                body,
                upgrade,
                access.grpc_deadline(),
                down,
                &mut access.upstream,
            )
            .await
        {
            Ok((resp, guard)) => {
                let resp = self.forwarder.respond(resp, guard, client_upgrade);
                if access.grpc {
                    // The call's stream may be ended by turnout: at its deadline, or when its
                    // pool's long calls are closed from now on (a close that came while its
                    // answer's head was awaited is not seen; that wait is bounded).
                    crate::grpc::cut(resp, access.grpc_deadline(), pool.closing())
                } else {
                    resp
                }
            }
            Err(err) => access.fail(err, close, &self.env.metrics),
        }
    }

    /// `[limits]` for this request, routed by `route`: passes (with its in-flight count, held
    /// to the response head) or is over a limit.
    fn limits(
        &self,
        req: &Request<Incoming>,
        down: &Downstream,
        route: Option<&Route>,
    ) -> Result<Option<crate::limits::Counted>, crate::limits::Limited> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        let client = self.env.routing.client_ip(&turnout_core::RequestInfo {
            headers: req.headers(),
            query: None,
            peer: down.peer.ip(),
        });
        limiter.check(
            client,
            req.headers(),
            req.uri().path(),
            route.map(|r| r.pool.name().as_str()),
            self.router.fleet().member_count(),
            &self.env.metrics,
        )
    }

    /// 413 for a request whose declared length is over `[server] max_request_body`, before any
    /// of its body is read (a body without a length is counted as it streams: `ClientBody`).
    fn too_large(&self, req: &Request<Incoming>, h1: bool) -> Option<Response<ProxyBody>> {
        let limit = self.settings.server.max_request_body?;
        let declared = req.body().size_hint().exact()?;
        if declared <= limit {
            return None;
        }
        let mut resp = text_response(StatusCode::PAYLOAD_TOO_LARGE, crate::error::TOO_LARGE);
        close_if_unread(&mut resp, h1, req);
        Some(resp)
    }
}

/// A body-less request's head again, for a second pool (version-skew protection's fallback).
fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

/// `Connection: close` on an HTTP/1 answer given while the request's body is still unread.
fn close_if_unread(resp: &mut Response<ProxyBody>, h1: bool, req: &Request<Incoming>) {
    if h1 && !req.body().is_end_stream() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Holds a request while `pause` is on ([`Pause::wait`]), counted by its head's size.
async fn wait_out_pause(pause: &Pause, client: std::net::IpAddr, req: &Request<Incoming>) -> bool {
    // What a held request costs, roughly: its head.
    let bytes = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    pause.wait(client, bytes as u64).await
}

/// The answer to a request refused before anything reads it: CONNECT (a reverse proxy has nothing to
/// tunnel to), and a request without exactly one valid Host (or with conflicting lengths). An
/// absolute-form target's authority, or HTTP/2's `:authority`, becomes the one Host.
fn refused(
    req: &mut Request<Incoming>,
    h1: bool,
    access: &mut Access,
) -> Option<Response<ProxyBody>> {
    let mut resp = if req.method() == Method::CONNECT {
        text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed: CONNECT is not served here\n",
        )
    } else {
        let (version, authority) = (req.version(), req.uri().authority().cloned());
        match crate::headers::normalize_request(version, authority.as_ref(), req.headers_mut()) {
            Ok(()) => return None,
            Err(bad) => {
                let resp = text_response(StatusCode::BAD_REQUEST, bad.public_text());
                access.failed(bad);
                resp
            }
        }
    };
    if h1 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    access.route = "refused";
    Some(resp)
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
            |s: &'static Proxy, (req, down): (Request<Incoming>, &'static Downstream)| {
                s.phases(req, down)
            },
        );
        eprintln!("Proxy::phases' future: {size} bytes");
        assert!(size <= 4096, "Proxy::phases' future is {size} bytes");
        // 64 bytes until the upstream body's stall deadline (a lazily made timer, its state and
        // its length in milliseconds) added 16, and 80 until the in-flight guard held an HTTP/2
        // stream's token (a connection's open streams, counted to the response's last byte)
        // for 8 more; a file's reader stays boxed.
        let body = std::mem::size_of::<ProxyBody>();
        assert!(body <= 88, "ProxyBody grew to {body} bytes");
    }
}
