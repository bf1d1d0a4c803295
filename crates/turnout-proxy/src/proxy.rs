//! The data plane's one shared value: each request phase's state (the local answers, the
//! cache, the forwarder with its upstream connections and tunnels, the pages), the router, the
//! settings, and the drain's flags. `request.rs` walks a request through the phases.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use turnout_core::Router;

use crate::body::ProxyBody;
use crate::cache::Cache;
use crate::error::text_response;
use crate::forward::Forwarder;
use crate::local::pages::Pages;
use crate::local::Local;
use crate::settings::ProxySettings;

/// The data plane's state, shared by every connection (one `Arc`).
#[derive(Debug)]
pub(crate) struct Proxy {
    pub(crate) router: Router,
    /// The fixed part of the routing state (it never changes after start-up).
    pub(crate) env: Arc<turnout_core::Env>,
    pub(crate) settings: ProxySettings,
    /// Set once shutdown begins: the health path answers 503 from then on.
    pub(crate) draining: AtomicBool,
    /// Set when another turnout process took over the listening sockets (an in-place
    /// upgrade): the drain then leaves a quiet keep-alive connection open until its next
    /// request (answered with `Connection: close`) or its own idle timeout.
    pub(crate) handed_over: AtomicBool,
    /// Sends requests upstream; owns the upstream connections and the tunnels.
    pub(crate) forwarder: Forwarder,
    /// Upstream assets and static files, in memory.
    pub(crate) cache: Arc<Cache>,
    /// What turnout answers itself: the https redirect, `[[static]]` files.
    pub(crate) local: Local,
    /// The pages of turnout's own answers (`[errors] dir`, maintenance).
    pub(crate) pages: Pages,
    /// `[limits]` (none configured: no request pays for them).
    pub(crate) limiter: Option<crate::limits::Limiter>,
    /// `[[auth]]` (none configured: no request pays for it).
    pub(crate) gate: Option<crate::auth::Gate>,
    /// `[compression]` (none configured: no response is looked at).
    pub(crate) compressor: Option<Arc<crate::compress::Compressor>>,
}

impl Proxy {
    /// A shutdown's drain or a hand-over is under way: HTTP/1 responses say `Connection: close`.
    #[inline]
    pub(crate) fn closing(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || self.handed_over.load(Ordering::Relaxed)
    }

    /// The load balancer's health check: 503 while shutting down, and (unless configured off)
    /// while the active pool has no server that can take a request.
    pub(crate) fn health(&self, h1: bool) -> Response<ProxyBody> {
        if self.draining.load(Ordering::Relaxed) {
            let mut resp = text_response(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
            if h1 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        } else if let Some(reason) = self.router.fleet().hold() {
            // Not joined to the fleet yet, or behind it: the load balancer drains this one.
            let mut resp = text_response(StatusCode::SERVICE_UNAVAILABLE, "");
            *resp.body_mut() = ProxyBody::bytes(bytes::Bytes::from(format!("{reason}\n")));
            resp
        } else if self.env.maintenance.health_fails && self.router.load().maintenance.is_some() {
            text_response(StatusCode::SERVICE_UNAVAILABLE, "down for maintenance\n")
        } else if self.settings.server.health_reflects_pool && self.router.active().available() == 0
        {
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy server in the active pool\n",
            )
        } else {
            text_response(StatusCode::OK, "ok\n")
        }
    }
}
