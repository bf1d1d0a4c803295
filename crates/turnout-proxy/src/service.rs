//! One request's path through the data plane: the health path, the route (one snapshot load),
//! the forward over the pooled client, and the response back.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use turnout_core::InFlight;

use crate::body::ProxyBody;
use crate::error::{text_response, ProxyError};
use crate::headers::{is_upgrade_request, set_forwarded, strip_hop_by_hop};
use crate::{upgrade, Shared};

/// What one accepted connection knows about its client.
#[derive(Debug, Clone)]
pub(crate) struct Downstream {
    pub peer: SocketAddr,
    /// The client's IP, formatted once per connection for `X-Forwarded-For`.
    pub ip_header: HeaderValue,
}

impl Downstream {
    pub fn new(peer: SocketAddr) -> Downstream {
        let ip_header = HeaderValue::try_from(peer.ip().to_string())
            .expect("an IP address is a valid header value");
        Downstream { peer, ip_header }
    }
}

static SLASH: PathAndQuery = PathAndQuery::from_static("/");

impl Shared {
    pub(crate) async fn handle(
        &self,
        mut req: Request<Incoming>,
        down: &Downstream,
    ) -> Response<ProxyBody> {
        // `Connection: close` means something to HTTP/1 clients only; HTTP/2 forbids it.
        let h1 = req.version() < Version::HTTP_2;
        if req.uri().path() == self.settings.health_path {
            return self.health(h1);
        }
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
        let started = Instant::now();

        // Route: one snapshot load. The request keeps this pool to its end.
        let pool = self.router.active();
        let Some(upstream) = pool.pick() else {
            let err = ProxyError::NoServers {
                pool: pool.name().to_string(),
            };
            tracing::warn!(error = %err, "request refused");
            return err.into_response(h1 && !req.body().is_end_stream());
        };
        let upstream = upstream.clone();
        let guard = pool.begin_request();

        let is_upgrade = is_upgrade_request(req.version(), req.headers());
        let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        let has_body = !body.is_end_stream();
        let method = parts.method.clone();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| SLASH.clone());

        // An HTTP/2 request carries its host in the URI (`:authority`), not in a Host header.
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        strip_hop_by_hop(&mut parts.headers, is_upgrade);
        set_forwarded(&mut parts.headers, &down.ip_header, "http", host.clone());
        if let Some(host) = host {
            parts.headers.entry(header::HOST).or_insert(host);
        }
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(upstream.authority.clone());
        uri.path_and_query = Some(path.clone());
        parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        // Upstreams speak HTTP/1.1 whatever the client spoke.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let outbound = Request::from_parts(parts, body);

        let result = tokio::time::timeout(
            self.settings.response_timeout,
            self.client.request(outbound),
        )
        .await;
        let (resp, err) = match result {
            Ok(Ok(resp)) => (self.respond(resp, guard, client_upgrade, h1), None),
            Ok(Err(source)) if source.is_connect() => self.failed(
                ProxyError::Connect {
                    pool: pool.name().to_string(),
                    upstream: upstream.addr.to_string(),
                    source,
                },
                h1 && has_body,
            ),
            Ok(Err(source)) => self.failed(
                ProxyError::Upstream {
                    pool: pool.name().to_string(),
                    upstream: upstream.addr.to_string(),
                    source,
                },
                h1 && has_body,
            ),
            Err(_) => self.failed(
                ProxyError::Timeout {
                    pool: pool.name().to_string(),
                    upstream: upstream.addr.to_string(),
                    after: self.settings.response_timeout,
                },
                h1 && has_body,
            ),
        };
        // The access log: one line per request, whatever happened.
        tracing::info!(
            target: "turnout::access",
            method = %method,
            path = %path,
            status = resp.status().as_u16(),
            pool = %pool.name(),
            upstream = %upstream.addr,
            client = %down.peer,
            ms = %format_args!("{:.3}", started.elapsed().as_secs_f64() * 1000.0),
            error = err.as_ref().map(|e| tracing::field::display(DisplayChain(e))),
        );
        resp
    }

    /// The synthetic answer for a failed forward, and the failure itself for the logs; the
    /// failure also gets a warning of its own, so `RUST_LOG=warn` still shows why.
    fn failed(&self, err: ProxyError, close: bool) -> (Response<ProxyBody>, Option<ProxyError>) {
        tracing::warn!(error = %DisplayChain(&err), "forwarding failed");
        (err.into_response(close), Some(err))
    }

    fn respond(
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
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        if h1 && self.draining.load(Ordering::Relaxed) {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Response::from_parts(parts, ProxyBody::upstream(body, guard))
    }

    fn health(&self, h1: bool) -> Response<ProxyBody> {
        if self.draining.load(Ordering::Relaxed) {
            let mut resp = text_response(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
            if h1 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        } else {
            text_response(StatusCode::OK, "ok\n")
        }
    }
}

/// An error and its sources on one line, for the log.
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
