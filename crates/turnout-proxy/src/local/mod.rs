//! What turnout answers itself, from no pool: the load balancer's health path, the redirect of
//! plain requests to https, and `[[static]]` files ([`files`]).

pub mod files;
pub mod pages;

use std::sync::atomic::Ordering;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::Access;
use crate::body::ProxyBody;
use crate::error::text_response;
use crate::serve::Downstream;
use crate::Shared;

/// Where ACME HTTP-01 challenges are asked for; never redirected to https.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

impl Shared {
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
        } else if self.env.maintenance.health_fails && self.router.load().maintenance.is_some() {
            text_response(StatusCode::SERVICE_UNAVAILABLE, "down for maintenance\n")
        } else if self.settings.health_reflects_pool && self.router.active().available() == 0 {
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy server in the active pool\n",
            )
        } else {
            text_response(StatusCode::OK, "ok\n")
        }
    }

    /// The answer turnout gives itself, if the request gets one: a 308 to https
    /// (`redirect_https`; never for ACME HTTP-01 challenges, which a renewal needs over plain
    /// HTTP), or a file of a `[[static]]` directory. `None`: the request goes to a pool.
    pub(crate) async fn local(
        &self,
        req: &Request<Incoming>,
        down: &Downstream,
        access: &mut Access,
    ) -> Option<Response<ProxyBody>> {
        if let Some(port) = self.settings.redirect_https_port {
            if !down.https && !req.uri().path().starts_with(ACME_CHALLENGE) {
                access.route = "redirect";
                return Some(redirect_https(req, port));
            }
        }
        let dir = self.files.matches(req.uri().path())?;
        access.route = "static";
        // Boxed: the file path's future is over 2 KiB, and inline it would grow the future of
        // every request, proxied ones too. A static file pays one allocation.
        Some(Box::pin(self.files.serve(dir, req)).await)
    }
}

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
