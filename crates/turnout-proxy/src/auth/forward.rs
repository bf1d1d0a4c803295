//! Forward auth (`kind = "forward"`), as nginx's `auth_request` and Traefik's ForwardAuth: a
//! `GET` to the auth service with the request's headers (not its body) and
//! `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` and `-For`. Its 2xx lets the request on,
//! with the chosen headers of its answer copied onto it; its 401, 403 or redirect is the
//! client's answer; anything else, a timeout, or no answer fails closed with turnout's own 502
//! or 503.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderName, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::Verdict;
use crate::body::ProxyBody;
use crate::downstream::Downstream;
use crate::tls::UpstreamTls;

pub(super) type AuthClient = Client<crate::forward::clients::Connector, Empty<Bytes>>;

/// The most of an auth service's answer body passed on to the client.
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// The client the auth rules share: keep-alive connections to the auth service and the ALB's
/// key server, trusting the system's roots.
pub(super) fn client(tls: &UpstreamTls) -> AuthClient {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    let connector = crate::forward::clients::PerPool::connectors(tls, &http)
        .for_pool("")
        .clone();
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

#[derive(Debug)]
pub(super) struct Forward {
    client: AuthClient,
    url: Uri,
    timeout: Duration,
    copy_headers: Vec<HeaderName>,
}

/// Request headers never sent to the auth service: hop-by-hop and framing ones (its request
/// has no body), and the forwarding headers turnout writes itself.
fn not_sent(name: &HeaderName) -> bool {
    use http::header::*;
    [
        CONNECTION,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        TE,
        TRAILER,
        UPGRADE,
        EXPECT,
        HOST,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("x-forwarded-")
}

/// Headers of the auth service's refusal passed on to the client.
const ANSWER_HEADERS: [HeaderName; 5] = [
    header::WWW_AUTHENTICATE,
    header::LOCATION,
    header::SET_COOKIE,
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
];

impl Forward {
    pub fn new(
        client: AuthClient,
        url: Uri,
        timeout: Duration,
        copy_headers: Vec<HeaderName>,
    ) -> Forward {
        Forward {
            client,
            url,
            timeout,
            copy_headers,
        }
    }

    pub async fn check<B>(&self, req: &mut Request<B>, down: &Downstream) -> Result<(), Verdict> {
        let mut ask = Request::get(self.url.clone())
            .body(Empty::new())
            .expect("a GET of a valid URI");
        let headers = ask.headers_mut();
        for (name, value) in req.headers() {
            if !not_sent(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let forwarded = |v: &str| HeaderValue::from_str(v).ok();
        let host = req.headers().get(header::HOST).cloned();
        let pairs = [
            ("x-forwarded-method", forwarded(req.method().as_str())),
            (
                "x-forwarded-proto",
                Some(HeaderValue::from_static(if down.https {
                    "https"
                } else {
                    "http"
                })),
            ),
            ("x-forwarded-host", host),
            (
                "x-forwarded-uri",
                req.uri()
                    .path_and_query()
                    .and_then(|p| forwarded(p.as_str())),
            ),
            ("x-forwarded-for", Some(forwarded_for(req.headers(), down))),
        ];
        for (name, value) in pairs {
            if let Some(v) = value {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        let answer = match tokio::time::timeout(self.timeout, self.client.request(ask)).await {
            Err(_) => {
                return Err(Verdict::Unavailable {
                    why: format!("{} took over {:?}", self.url, self.timeout),
                    answered: false,
                })
            }
            Ok(Err(e)) => {
                return Err(Verdict::Unavailable {
                    why: format!("{}: {}", self.url, crate::error::DisplayChain(&e)),
                    answered: false,
                })
            }
            Ok(Ok(answer)) => answer,
        };
        let status = answer.status();
        let (parts, body) = answer.into_parts();
        // Read whole (bounded, within the timeout), so the connection is kept for the next.
        let body =
            tokio::time::timeout(self.timeout, Limited::new(body, MAX_ANSWER_BODY).collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| b.to_bytes());
        if status.is_success() {
            for name in &self.copy_headers {
                for value in parts.headers.get_all(name) {
                    req.headers_mut().append(name.clone(), value.clone());
                }
            }
            return Ok(());
        }
        let passes = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            || status.is_redirection();
        match (passes, body) {
            (true, Some(body)) => {
                let mut resp = Response::new(ProxyBody::bytes(body));
                *resp.status_mut() = status;
                for name in &ANSWER_HEADERS {
                    for value in parts.headers.get_all(name) {
                        resp.headers_mut().append(name.clone(), value.clone());
                    }
                }
                Err(Verdict::Answer(Box::new(resp)))
            }
            (true, None) => Err(Verdict::Unavailable {
                why: format!(
                    "{} answered {status} with a body that failed or is over {MAX_ANSWER_BODY} bytes",
                    self.url
                ),
                answered: true,
            }),
            (false, _) => Err(Verdict::Unavailable {
                why: format!(
                    "{} answered {status} (2xx lets a request on; 401, 403 or 3xx refuses it)",
                    self.url
                ),
                answered: true,
            }),
        }
    }
}

/// The request's `X-Forwarded-For` with this hop's peer appended, as the app will see it.
fn forwarded_for(headers: &http::HeaderMap, down: &Downstream) -> HeaderValue {
    let earlier: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if earlier.is_empty() {
        return down.ip_header.clone();
    }
    let mut chain = earlier.join(&b", "[..]);
    chain.extend_from_slice(b", ");
    chain.extend_from_slice(down.ip_header.as_bytes());
    HeaderValue::from_bytes(&chain).unwrap_or_else(|_| down.ip_header.clone())
}
