//! The routing decision: one load of the routing snapshot, one decision (preview, rules, fleet
//! mark, stickiness, the weighted draw). The request keeps the pool it is given to its end,
//! whatever switch happens meanwhile.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use turnout_core::pause::Pause;
use turnout_core::snapshot::{Maintenance, Mirror, VERSION_COOKIE};
use turnout_core::RoutingSnapshot;
use turnout_core::{Pool, Reason, Refusal, RequestInfo};

use crate::body::ProxyBody;
use crate::downstream::Downstream;
use crate::proxy::Proxy;

/// Where a request goes, and the cookies its response sets.
pub(crate) struct Route {
    pub pool: Arc<Pool>,
    pub reason: Reason,
    /// The pool takes live traffic: a share of new clients in the split (an `[[auth]]` rule
    /// scoped to a pool ends when it goes live).
    pub live: bool,
    /// A sticky or preview cookie, a fleet mark.
    cookies: [Option<HeaderValue>; 2],
    /// A rollout's mirror phase copies this request to its pool too.
    pub mirror: Option<Arc<Mirror>>,
    /// Version-skew protection: an asset this pool answers 404 is asked of this one (the
    /// previous version, while it can serve).
    pub fallback: Option<Arc<Pool>>,
    /// Version-skew protection: a page load whose response is to name its pool's version.
    pub set_version: bool,
}

/// What stands between a request and its pool, from the same snapshot as its route.
pub(crate) enum Admission {
    Open,
    /// Maintenance mode is on, and the request is not on an allow-list.
    Maintenance(Arc<Maintenance>),
    /// A pause holds new requests.
    Paused(Arc<Pause>),
}

impl Proxy {
    /// One snapshot load: the route (or why the request is refused), and what holds it first.
    pub(crate) fn route<B>(
        &self,
        req: &Request<B>,
        down: &Downstream,
    ) -> (Result<Route, Refusal>, Admission) {
        let snapshot = self.router.load();
        let info = RequestInfo {
            headers: req.headers(),
            query: req.uri().query(),
            peer: down.peer.ip(),
        };
        let route = self.decide(&snapshot, req, &info);
        let admission = if snapshot.maintenance.is_some() {
            let preview = matches!(&route, Ok(r) if matches!(r.reason, Reason::Preview));
            match snapshot.maintenance_for(req.uri().path(), || snapshot.client_ip(&info), preview)
            {
                Some(m) => Admission::Maintenance(Arc::clone(m)),
                None => Admission::Open,
            }
        } else {
            Admission::Open
        };
        let admission = match (&snapshot.pause, admission) {
            (Some(pause), Admission::Open) => Admission::Paused(Arc::clone(pause)),
            (_, admission) => admission,
        };
        (route, admission)
    }

    fn decide<B>(
        &self,
        snapshot: &RoutingSnapshot,
        req: &Request<B>,
        info: &RequestInfo<'_>,
    ) -> Result<Route, Refusal> {
        let mut decision = snapshot.decide(info, fastrand::u64(..))?;
        let (mut fallback, mut set_version) = (None, false);
        if let Some(skew) = &snapshot.env.routing.skew {
            let path = req.uri().path();
            // A preview's assets follow the preview itself, and a page loaded by one hands
            // out no version.
            let preview = matches!(decision.reason, Reason::Preview);
            if !skew.covers(path) {
                // A page load: its pool's version is one this instance hands out.
                if !preview {
                    decision.pool.version_given();
                    set_version = decision
                        .pool
                        .cookies()
                        .version
                        .as_ref()
                        .is_some_and(|(_, v)| {
                            turnout_core::decide::cookie_value(req.headers(), VERSION_COOKIE)
                                != Some(v)
                        });
                }
            } else if !preview {
                if let Some(pool) = snapshot.skew_pool(req.headers()) {
                    if !Arc::ptr_eq(pool, decision.pool) {
                        decision.pool = pool;
                        decision.reason = Reason::Skew;
                        decision.cookies = [None, None];
                    }
                }
                if matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
                    fallback = snapshot
                        .previous_primary()
                        .and_then(|name| snapshot.pools.get(name))
                        .filter(|p| !Arc::ptr_eq(p, decision.pool) && p.available() > 0)
                        .cloned();
                }
            }
        }
        let mirror = snapshot
            .mirror
            .as_ref()
            .filter(|m| {
                !Arc::ptr_eq(&m.pool, decision.pool) && m.takes(req.method(), fastrand::u32(..))
            })
            .cloned();
        Ok(Route {
            live: snapshot.weights.get(decision.pool.name().as_str()) > 0,
            pool: Arc::clone(decision.pool),
            reason: decision.reason,
            cookies: decision.cookies.map(|c| c.cloned()),
            mirror,
            fallback,
            set_version,
        })
    }
}

impl Route {
    /// Adds the route's cookies to the response (and, for a page load under version-skew
    /// protection, the cookie naming its pool's version).
    pub fn set_cookies(self, resp: &mut Response<ProxyBody>, down: &Downstream) {
        if self.set_version && resp.status().is_success() && is_html(resp) {
            if let Some((cookie, _)) = &self.pool.cookies().version {
                resp.headers_mut()
                    .append(header::SET_COOKIE, secure_over_tls(cookie.clone(), down));
            }
        }
        for cookie in self.cookies.into_iter().flatten() {
            resp.headers_mut()
                .append(header::SET_COOKIE, secure_over_tls(cookie, down));
        }
    }
}

fn is_html(resp: &Response<ProxyBody>) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/html"))
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
