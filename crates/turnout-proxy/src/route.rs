//! The routing decision: one load of the routing snapshot, one decision (preview, rules, fleet
//! mark, stickiness, the weighted draw). The request keeps the pool it is given to its end,
//! whatever switch happens meanwhile.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use turnout_core::pause::Pause;
use turnout_core::snapshot::{Maintenance, Mirror};
use turnout_core::RoutingSnapshot;
use turnout_core::{Pool, Reason, Refusal, RequestInfo};

use crate::body::ProxyBody;
use crate::serve::Downstream;
use crate::Shared;

/// Where a request goes, and the cookies its response sets.
pub(crate) struct Route {
    pub pool: Arc<Pool>,
    pub reason: Reason,
    /// A sticky or preview cookie, a fleet mark.
    cookies: [Option<HeaderValue>; 2],
    /// A rollout's mirror phase copies this request to its pool too.
    pub mirror: Option<Arc<Mirror>>,
}

/// What stands between a request and its pool, from the same snapshot as its route.
pub(crate) enum Gate {
    Open,
    /// Maintenance mode is on, and the request is not on an allow-list.
    Maintenance(Arc<Maintenance>),
    /// A pause holds new requests.
    Paused(Arc<Pause>),
}

impl Shared {
    /// One snapshot load: the route (or why the request is refused), and what holds it first.
    pub(crate) fn route<B>(
        &self,
        req: &Request<B>,
        down: &Downstream,
    ) -> (Result<Route, Refusal>, Gate) {
        let snapshot = self.router.load();
        let info = RequestInfo {
            headers: req.headers(),
            query: req.uri().query(),
            peer: down.peer.ip(),
        };
        let route = self.decide(&snapshot, req, &info);
        let gate = if snapshot.maintenance.is_some() {
            let preview = matches!(&route, Ok(r) if matches!(r.reason, Reason::Preview));
            match snapshot.maintenance_for(req.uri().path(), || snapshot.client_ip(&info), preview)
            {
                Some(m) => Gate::Maintenance(Arc::clone(m)),
                None => Gate::Open,
            }
        } else {
            Gate::Open
        };
        let gate = match (&snapshot.pause, gate) {
            (Some(pause), Gate::Open) => Gate::Paused(Arc::clone(pause)),
            (_, gate) => gate,
        };
        (route, gate)
    }

    fn decide<B>(
        &self,
        snapshot: &RoutingSnapshot,
        req: &Request<B>,
        info: &RequestInfo<'_>,
    ) -> Result<Route, Refusal> {
        let decision = snapshot.decide(info, fastrand::u64(..))?;
        let mirror = snapshot
            .mirror
            .as_ref()
            .filter(|m| {
                !Arc::ptr_eq(&m.pool, decision.pool) && m.takes(req.method(), fastrand::u32(..))
            })
            .cloned();
        Ok(Route {
            pool: Arc::clone(decision.pool),
            reason: decision.reason,
            cookies: decision.cookies.map(|c| c.cloned()),
            mirror,
        })
    }
}

impl Route {
    /// Adds the route's cookies to the response.
    pub fn set_cookies(self, resp: &mut Response<ProxyBody>, down: &Downstream) {
        for cookie in self.cookies.into_iter().flatten() {
            resp.headers_mut()
                .append(header::SET_COOKIE, secure_over_tls(cookie, down));
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
