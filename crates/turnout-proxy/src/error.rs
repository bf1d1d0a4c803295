//! What can fail on the request path, and the one place that picks each failure's status: the
//! upstream's side failing is a 502 or 504, having nothing to send to is a 503.

use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

/// nginx's "client closed request": logged, never sent.
pub(crate) const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// How a client broke its own request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// A malformed body (a bad chunk): 400.
    Malformed,
    /// The client went away before its body ended: logged 499.
    Gone,
    /// No byte of the body for `client_body_timeout`: 408.
    Stalled,
    /// Longer than `[server] max_request_body`: 413.
    TooLarge,
}

impl ClientFault {
    pub fn status(self) -> StatusCode {
        match self {
            ClientFault::Malformed => StatusCode::BAD_REQUEST,
            ClientFault::Gone => CLIENT_CLOSED,
            ClientFault::Stalled => StatusCode::REQUEST_TIMEOUT,
            ClientFault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The reason in `turnout_client_cutoffs_total`.
    pub fn label(self) -> &'static str {
        match self {
            ClientFault::Malformed => "bad_request",
            ClientFault::Gone => "client_abort",
            ClientFault::Stalled => "body_timeout",
            ClientFault::TooLarge => "body_too_large",
        }
    }
}

/// What can fail on the request path; [`ProxyError::status`] picks the answer by which side
/// failed (the upstream's: 502/503/504; the client's: 4xx).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Every server of the pool is down or ejected (503).
    #[error("pool {pool} has no healthy server")]
    NoHealthyServer {
        /// The pool.
        pool: String,
    },
    /// The connection to a server failed (502).
    #[error("cannot connect to upstream {upstream} (pool {pool})")]
    Connect {
        /// The pool.
        pool: String,
        /// The server.
        upstream: String,
        /// The connector's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server broke off the exchange (502).
    #[error("upstream {upstream} (pool {pool}) failed")]
    Upstream {
        /// The pool.
        pool: String,
        /// The server.
        upstream: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// No response head within `upstream.response_timeout` (504).
    #[error("upstream {upstream} (pool {pool}) sent no response within {after:?}")]
    Timeout {
        /// The pool.
        pool: String,
        /// The server.
        upstream: String,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The upstream's body broke off while it was read to be cached.
    #[error("the response body from pool {pool} broke off: {source}")]
    Body {
        /// The pool.
        pool: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The client's request body failed on its way upstream: it went away mid-upload (logged
    /// 499), stalled (408) or was malformed (400). Never counted against the server.
    #[error("the client's request body failed")]
    ClientBody {
        /// What the client did.
        why: ClientFault,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The response timeout ran out while the client was still sending its request body: the
    /// client's slowness, not the server's (408, never counted against the server).
    #[error("the request body was still arriving from the client when upstream {upstream} (pool {pool}) had had {after:?} to answer (upstream.response_timeout)")]
    SlowUpload {
        /// The pool.
        pool: String,
        /// The server that waited.
        upstream: String,
        /// The response timeout.
        after: Duration,
    },
    /// A preview header that cannot be honoured (wrong token, no such pool).
    #[error(transparent)]
    Preview(#[from] turnout_core::Refusal),
    /// Over a `[limits]` bound (429, `Retry-After`; never counted against a pool).
    #[error("over the limit {class:?} ([limits]); retry after {retry_after:?}")]
    Limited {
        /// The key class: the rate's name, or `in_flight`.
        class: String,
        /// When the client may try again.
        retry_after: Duration,
    },
    /// An `[[auth]]` rule refused the request: no credentials, wrong ones, a token that does
    /// not verify (401; never counted against a pool).
    #[error("refused by [[auth]] {rule:?}: {why}")]
    Unauthenticated {
        /// The rule.
        rule: String,
        /// Why, for the log (never the client).
        why: String,
    },
    /// An `[[auth]]` rule could not decide: its auth service or key server is down, slow, or
    /// answered what it should not (the request fails closed: 503, or 502 for a bad answer).
    #[error("[[auth]] {rule:?} could not check the request: {why}")]
    AuthUnavailable {
        /// The rule.
        rule: String,
        /// What failed, for the log.
        why: String,
        /// It answered, wrongly (502), rather than not at all (503).
        answered: bool,
    },
}

impl ProxyError {
    /// The client caused it, not the upstream: no passive failure, no retry.
    pub fn is_clients_fault(&self) -> bool {
        matches!(
            self,
            ProxyError::ClientBody { .. } | ProxyError::SlowUpload { .. }
        )
    }

    /// The status the client is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::ClientBody { why, .. } => why.status(),
            ProxyError::SlowUpload { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoHealthyServer { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } | ProxyError::Body { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Preview(turnout_core::Refusal::PreviewToken) => StatusCode::FORBIDDEN,
            ProxyError::Preview(turnout_core::Refusal::PreviewPool(_)) => StatusCode::BAD_REQUEST,
            ProxyError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::AuthUnavailable { answered: true, .. } => StatusCode::BAD_GATEWAY,
            ProxyError::AuthUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The short text the client sees; the details (addresses, causes) go to the log only.
    fn public_text(&self) -> &'static str {
        match self {
            ProxyError::NoHealthyServer { .. } => {
                "503 Service Unavailable: no healthy app server to send this request to\n"
            }
            ProxyError::Connect { .. } => "502 Bad Gateway: the app server is unreachable\n",
            ProxyError::Upstream { .. } | ProxyError::Body { .. } => {
                "502 Bad Gateway: the app server failed to answer\n"
            }
            ProxyError::Timeout { .. } => {
                "504 Gateway Timeout: the app server took too long to answer\n"
            }
            ProxyError::SlowUpload { .. } => {
                "408 Request Timeout: the request body was still arriving when the time to answer ran out\n"
            }
            ProxyError::ClientBody {
                why: ClientFault::Stalled,
                ..
            } => "408 Request Timeout: the request body stopped coming\n",
            ProxyError::ClientBody {
                why: ClientFault::TooLarge,
                ..
            } => TOO_LARGE,
            ProxyError::ClientBody { .. } => {
                "400 Bad Request: the request body broke off or was malformed\n"
            }
            ProxyError::Preview(turnout_core::Refusal::PreviewToken) => {
                "403 Forbidden: the preview header needs POOL:TOKEN with the right token\n"
            }
            ProxyError::Preview(turnout_core::Refusal::PreviewPool(_)) => {
                "400 Bad Request: the preview header names no pool\n"
            }
            ProxyError::Limited { .. } => {
                "429 Too Many Requests: slow down, and retry after the seconds in Retry-After\n"
            }
            ProxyError::Unauthenticated { .. } => {
                "401 Unauthorized: this address needs credentials\n"
            }
            ProxyError::AuthUnavailable { answered: true, .. } => {
                "502 Bad Gateway: the authentication service failed to answer\n"
            }
            ProxyError::AuthUnavailable { .. } => {
                "503 Service Unavailable: the authentication service is unreachable\n"
            }
        }
    }

    /// The synthetic response. `close` asks the client to reconnect (its request body may be
    /// left unread on this connection).
    pub fn into_response(&self, close: bool) -> Response<ProxyBody> {
        let mut resp = text_response(self.status(), self.public_text());
        match self {
            ProxyError::NoHealthyServer { .. } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ProxyError::Limited { retry_after, .. } => {
                // Whole seconds, rounded up: a client retrying at once would be refused again.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        if close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The answer to a request body over `[server] max_request_body`.
pub(crate) const TOO_LARGE: &str =
    "413 Content Too Large: the request body is longer than this server takes\n";

/// A short `text/plain` response that is never cached.
pub(crate) fn text_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::from_static(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `e` and each of its sources, outermost first.
pub(crate) fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |err| err.source())
}

/// An error and its sources on one line ("client error (Connect): tcp connect error:
/// Connection refused (os error 111)"), for logs, health-check reports and the admin CLI.
#[derive(Debug)]
pub struct DisplayChain<'a>(pub &'a (dyn std::error::Error + 'a));

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

impl From<crate::limits::Limited> for ProxyError {
    fn from(l: crate::limits::Limited) -> Self {
        ProxyError::Limited {
            class: l.class,
            retry_after: l.retry_after,
        }
    }
}
