//! What turnout answers itself, from no pool: the load balancer's health path, the redirect of
//! plain requests to https, and `[[static]]` files ([`files`]).

pub mod files;
pub mod pages;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::Access;
use crate::body::ProxyBody;
use crate::downstream::Downstream;
use crate::error::text_response;

/// Where ACME HTTP-01 challenges are asked for; never redirected to https.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// The local answers' state: the `[[static]]` directories and where to redirect plain requests.
#[derive(Debug)]
pub(crate) struct Local {
    files: files::StaticFiles,
    /// The plain listener answers 308 to `https://` on this port (but for the health path).
    redirect_https_port: Option<u16>,
}

impl Local {
    pub(crate) fn new(files: files::StaticFiles, redirect_https_port: Option<u16>) -> Local {
        Local {
            files,
            redirect_https_port,
        }
    }

    /// The answer turnout gives itself, if the request gets one: a 308 to https
    /// (`redirect_https`; never for ACME HTTP-01 challenges, which a renewal needs over plain
    /// HTTP), or a file of a `[[static]]` directory. `None`: the request goes to a pool.
    pub(crate) async fn answer(
        &self,
        req: &Request<Incoming>,
        down: &Downstream,
        access: &mut Access,
    ) -> Option<Response<ProxyBody>> {
        if let Some(port) = self.redirect_https_port {
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
