//! The access log: one record per request, begun when the request arrives, filled in by each
//! phase it passes (the pool, why that pool, the cache's verdict, the server, the failure), and
//! written exactly once: with the response's status when there is one, or as nginx's 499
//! ("client closed request") when the client went away first and hyper dropped the request.

mod line;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use turnout_config::{LogFormat, ServerAddr};
use turnout_core::Pool;

use crate::body::ProxyBody;
use crate::downstream::Downstream;
use crate::error::{DisplayChain, ProxyError, CLIENT_CLOSED};

pub use line::{set_access_sink, AccessSink};

/// One request's access line, written when it is dropped.
pub(crate) struct Access {
    method: Method,
    /// A handle on the request's own bytes, not a copy.
    target: Option<PathAndQuery>,
    client: SocketAddr,
    started: Instant,
    /// The pool that answers (its metrics count the request when the line is written).
    pub pool: Option<Arc<Pool>>,
    /// Why the request went where it did: the routing reason, or what answered it locally
    /// (`static`, `redirect`, `refused`).
    pub route: &'static str,
    /// `HIT` or `MISS` for a request under the cache's prefixes.
    pub cache: Option<&'static str>,
    /// The server the request was last sent to.
    pub upstream: Option<ServerAddr>,
    /// Why the request failed (boxed: only a failure pays for it).
    pub error: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// Set by [`Access::finish`]; still `None` when the request was abandoned.
    status: Option<StatusCode>,
    /// The request's `X-Request-Id`, returned with the response and logged.
    pub request_id: Option<HeaderValue>,
    /// A gRPC call: turnout's own answers to it are gRPC statuses ([`crate::grpc`]).
    pub grpc: bool,
    /// How the app said a gRPC call ended (`grpc-status`, in the trailers or a trailers-only
    /// head), [`NO_STATUS`] until then. A byte (the codes are 0 to 16), and the deadline below
    /// a `u32`: every request's future holds this record, and these fit where a `bool` did.
    grpc_status: u8,
    /// A gRPC call's deadline (`grpc-timeout`), in milliseconds from `started`;
    /// [`NO_DEADLINE`] when it has none (or is not a gRPC call).
    grpc_deadline_ms: u32,
}

const NO_STATUS: u8 = u8::MAX;
const NO_DEADLINE: u32 = u32::MAX;

/// A gRPC call's line, told of the trailers (their `grpc-status`) and written when dropped.
impl crate::body::Watcher for Access {
    fn trailers(&mut self, trailers: &http::HeaderMap) {
        self.grpc_trailers(trailers);
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl Access {
    pub fn begin<B>(req: &Request<B>, down: &Downstream) -> Access {
        let grpc = crate::grpc::is_grpc(req.headers());
        Access {
            method: req.method().clone(),
            target: req.uri().path_and_query().cloned(),
            client: down.peer,
            started: Instant::now(),
            pool: None,
            route: "",
            cache: None,
            upstream: None,
            error: None,
            status: None,
            request_id: None,
            grpc,
            grpc_status: NO_STATUS,
            grpc_deadline_ms: match grpc.then(|| crate::grpc::grpc_timeout(req.headers())) {
                Some(Some(t)) => u32::try_from(t.as_micros().div_ceil(1000))
                    .map_or(NO_DEADLINE - 1, |ms| ms.min(NO_DEADLINE - 1)),
                _ => NO_DEADLINE,
            },
        }
    }

    /// A gRPC call's deadline (`grpc-timeout` from when the request came), if it has one.
    pub fn grpc_deadline(&self) -> Option<tokio::time::Instant> {
        (self.grpc_deadline_ms != NO_DEADLINE).then(|| {
            tokio::time::Instant::from_std(self.started)
                + Duration::from_millis(self.grpc_deadline_ms.into())
        })
    }

    /// The `grpc-status` the call ended with, once known.
    fn grpc_status(&self) -> Option<u16> {
        (self.grpc_status != NO_STATUS).then_some(u16::from(self.grpc_status))
    }

    /// `resp`, an app's answer to a gRPC call, with the request's id on it; its line is written
    /// once the call has ended (the trailers' `grpc-status`, or a trailers-only head's), with
    /// the call's whole time.
    pub fn answer_later(mut self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        if let Some(id) = &self.request_id {
            parts
                .headers
                .insert(crate::headers::X_REQUEST_ID.clone(), id.clone());
        }
        self.status = Some(parts.status);
        self.grpc_trailers(&parts.headers);
        Response::from_parts(parts, ProxyBody::watched(body, Box::new(self)))
    }

    /// Reads `grpc-status` from a call's trailers (or trailers-only head).
    pub fn grpc_trailers(&mut self, headers: &http::HeaderMap) {
        if let Some(code) = crate::grpc::status_of(headers) {
            // 0 to 16: a byte.
            self.grpc_status = code as u8;
        }
    }

    /// Records the failure behind the answer.
    pub fn failed(&mut self, error: impl std::error::Error + Send + Sync + 'static) {
        self.error = Some(Box::new(error));
    }

    /// The answer to a request that failed (its forward, or its preview header), the failure
    /// recorded for its line. `close`: the request body may be left unread. A failure of the
    /// client's own (a broken body, an upload slower than the response timeout) is counted as
    /// the client's cut-off, not the server's.
    pub fn fail(
        &mut self,
        err: ProxyError,
        close: bool,
        metrics: &turnout_core::Metrics,
    ) -> Response<ProxyBody> {
        let resp = match &err {
            ProxyError::ClientBody { why, .. } => {
                // The client broke its own request: the server did nothing wrong.
                metrics.client_cutoff(why.label());
                tracing::info!(error = %DisplayChain(&err), "the client's request body failed");
                err.into_response(true)
            }
            ProxyError::SlowUpload { .. } => {
                metrics.client_cutoff("slow_upload");
                tracing::info!(error = %DisplayChain(&err), "a slow upload outlasted the response timeout");
                err.into_response(true)
            }
            _ => err.into_response(close),
        };
        self.failed(err);
        resp
    }

    /// Writes the line with the status the client is answered with.
    pub fn finish(mut self, status: StatusCode) {
        self.status = Some(status);
    }

    /// `resp` with the request's id on it, its line written.
    pub fn answer<B>(self, mut resp: Response<B>) -> Response<B> {
        if let Some(id) = &self.request_id {
            resp.headers_mut()
                .insert(crate::headers::X_REQUEST_ID.clone(), id.clone());
        }
        self.finish(resp.status());
        resp
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        let (status, route) = match self.status {
            Some(status) => (status, self.route),
            None => (CLIENT_CLOSED, "aborted"),
        };
        let elapsed = self.started.elapsed();
        if let Some(pool) = &self.pool {
            // A gRPC call that ended in a server-side failure (UNAVAILABLE, INTERNAL, ...: the
            // codes of `[grpc] error_codes`) is an error in the pool's figures (the rollout's
            // verdict, the dashboard) though its HTTP status is 200; one the client caused
            // (NOT_FOUND, ...) is not.
            let counted = match self.grpc_status() {
                Some(code) => {
                    pool.metrics().grpc_call(code);
                    if pool.settings().grpc_errors.contains(code) {
                        500
                    } else {
                        status.as_u16()
                    }
                }
                None => status.as_u16(),
            };
            pool.metrics().observe(counted, elapsed.as_secs_f64());
        }
        if !tracing::enabled!(target: "turnout::access", tracing::Level::INFO) {
            return;
        }
        match line::sink() {
            Some((sink, LogFormat::Text)) => sink.append(&mut |out| {
                line::prefix(out, SystemTime::now());
                self.fields(&mut line::Text(out), status, route, elapsed);
                out.push(b'\n');
            }),
            Some((sink, LogFormat::Json)) => sink.append(&mut |out| {
                line::json_begin(out, SystemTime::now());
                self.fields(&mut line::Json(out), status, route, elapsed);
                line::json_end(out);
            }),
            None => self.event(status, route, elapsed),
        }
    }
}

impl Access {
    /// The line's fields, in either format; in the text one each with its leading space, as
    /// [`Access::event`] has the fmt layer write them.
    fn fields(
        &self,
        out: &mut impl line::Fields,
        status: StatusCode,
        route: &str,
        elapsed: Duration,
    ) {
        out.string("method", self.method.as_str(), false);
        let path = self.target.as_ref().map_or("/", PathAndQuery::path);
        out.string("path", path, false);
        out.number("status", status.as_u16().into());
        if let Some(code) = self.grpc_status() {
            out.number("grpc_status", code.into());
        }
        if let Some(pool) = &self.pool {
            out.string("pool", pool.name().as_str(), true);
        }
        out.string("route", route, true);
        if let Some(cache) = self.cache {
            out.string("cache", cache, true);
        }
        if let Some(upstream) = &self.upstream {
            out.string("upstream", upstream.as_str(), true);
        }
        out.address("client", &self.client);
        if let Some(id) = self.request_id.as_ref().and_then(|id| id.to_str().ok()) {
            out.string("request_id", id, true);
        }
        out.millis("ms", elapsed);
        if let Some(error) = self.error.as_deref() {
            out.display("error", &DisplayChain(error));
        }
    }

    /// The line as a `tracing` event, when no [`AccessSink`] takes it.
    fn event(&self, status: StatusCode, route: &str, elapsed: Duration) {
        tracing::info!(
            target: "turnout::access",
            method = %self.method,
            path = %self.target.as_ref().map_or("/", PathAndQuery::path),
            status = status.as_u16(),
            grpc_status = self.grpc_status(),
            pool = self.pool.as_ref().map(|p| p.name().as_str()),
            route,
            cache = self.cache,
            upstream = self.upstream.as_ref().map(ServerAddr::as_str),
            client = %self.client,
            request_id = self.request_id.as_ref().and_then(|id| id.to_str().ok()),
            ms = %Millis(elapsed),
            error = self.error.as_deref().map(|e| tracing::field::display(DisplayChain(e))),
        );
    }
}

/// A duration in milliseconds with three decimals, from whole microseconds: integer formatting
/// (a float's `{:.3}` took a slow path of its own on every line).
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = self.0.as_micros();
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}
