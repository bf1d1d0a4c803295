//! The request path's connections to upstream servers: HTTP/1.1 (over TCP, or TLS to an
//! `https://` server), one request at a time each, driven with `hyper::client::conn::http1`,
//! and kept idle per worker thread between requests; and, for the servers of an `h2c` or `h2`
//! pool, a few HTTP/2 connections per server and worker that carry every request as a stream
//! (`hyper::client::conn::http2`: flow control, keep-alive pings, trailers both ways). A
//! stream goes on the connection with the fewest open; a new connection is made when each has
//! [`H2_STREAMS_PER_CONNECTION`] (up to [`H2_MAX_CONNECTIONS`]); streams past a server's own
//! `MAX_CONCURRENT_STREAMS` wait on their connection for a slot.
//!
//! Written here rather than taken from hyper-util's pooled client: that one takes a lock on a
//! shared pool, clones its connector and makes a `connect_to` future for every request, and
//! spawns a task per request to put the connection back. Replacing it took turnout's user-space
//! CPU per proxied small request from 6.1 to 5.3 us (`benches/cpu-per-request.sh`). This is the
//! per-worker keep-alive cache nginx keeps (one list of idle connections per server and worker,
//! newest first): a checkout is a thread-local `pop`, and a task is spawned only for a response
//! whose body is still arriving when its head is handed on. What it must keep exact:
//! - A connection goes back to the idle list only once its previous response has fully
//!   arrived (hyper reports it ready), so it never carries two exchanges at once.
//! - `upstream.max_idle_per_server` bounds each worker's list; `upstream.idle_timeout` closes a
//!   connection idle that long (its own task does, from one timer per connection).
//! - A request that never went out (its idle connection had closed first) comes back unsent
//!   and goes out again on a fresh connection to the same server, or is left to the caller's
//!   retry on another server ([`Stale`]).

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::uri::{Scheme, Uri};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;
use turnout_core::Upstream;

use super::clients::{Connector, PerPool};
use crate::body::UpstreamBody;
use crate::tls::UpstreamTls;

type Sender = http1::SendRequest<UpstreamBody>;
type H2Sender = http2::SendRequest<UpstreamBody>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an exchange with an upstream failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection: refused, unreachable, timed out, or its TLS handshake failed.
    Connect(BoxError),
    /// The request never went out: the idle connection it was given had closed first.
    NeverSent(hyper::Error),
    /// The request went out (or began to) and no response head came back.
    Exchange(hyper::Error),
    /// An HTTP/2 app refused the stream without processing it (RST_STREAM REFUSED_STREAM,
    /// or a GOAWAY whose last stream is below it): safe to send again, whatever the method.
    Refused(hyper::Error),
}

/// A request that never went out, and why.
struct Unsent(Request<UpstreamBody>, hyper::Error);

/// What to do with a request that comes back unsent from a stale idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stale {
    /// Send it again on a fresh connection to the same server (a pool of one server).
    Redial,
    /// Give it back as [`Failure::NeverSent`]: the caller retries on another server.
    Report,
}

/// The upstream side of the data plane: how to dial each server, and the settings of the idle
/// lists. The lists themselves are per thread ([`IDLE`]).
#[derive(Debug)]
pub(crate) struct Upstreams {
    connectors: PerPool<Connector>,
    /// For HTTP/2 servers (ALPN `h2` over TLS).
    h2_connectors: PerPool<Connector>,
    builder: http1::Builder,
    h2: http2::Builder<hyper_util::rt::TokioExecutor>,
    idle_timeout: Duration,
    max_idle: usize,
}

thread_local! {
    /// This worker's idle connections, by [`Upstream::key`], newest last.
    static IDLE: RefCell<Vec<Vec<Conn>>> = const { RefCell::new(Vec::new()) };
    /// This worker's HTTP/2 connections to each `h2c` or `h2` server, by [`Upstream::key`].
    static H2: RefCell<Vec<H2Server>> = const { RefCell::new(Vec::new()) };
}

/// Open streams on one HTTP/2 connection past which a stream goes on a new connection (when
/// there are fewer than [`H2_MAX_CONNECTIONS`]): below the limits apps commonly set (nginx
/// 128, hyper 200, Envoy and gRPC's own unbounded), so that a server's limit is seldom what
/// makes a call wait.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// HTTP/2 connections a worker keeps to one server at most; past them, streams share the
/// least busy one.
const H2_MAX_CONNECTIONS: usize = 8;

/// One HTTP/2 connection to a server, as a worker holds it. Each request on it holds a clone
/// of `streams` until it ends (the response's last byte, through its [`InFlight`] guard): the
/// connection's open streams are the strong count less this one.
///
/// [`InFlight`]: turnout_core::InFlight
#[derive(Clone)]
struct H2Conn {
    sender: H2Sender,
    streams: Arc<()>,
}

impl H2Conn {
    fn open_streams(&self) -> usize {
        Arc::strong_count(&self.streams) - 1
    }
}

/// A worker's HTTP/2 connections to one server, and the one being made: a request that finds
/// every connection full while another request is dialling waits for that dial rather than
/// making one of its own (a burst makes one connection, not one per request).
#[derive(Default)]
struct H2Server {
    conns: Vec<H2Conn>,
    dialing: Option<Dialing>,
}

type Dialing = futures_util::future::Shared<
    std::pin::Pin<Box<dyn Future<Output = Result<H2Conn, SharedError>> + Send>>,
>;

/// A dial's error, shared by every request that waited for it.
#[derive(Debug, Clone)]
struct SharedError(Arc<BoxError>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// What a request on an HTTP/2 connection holds until it ends: see [`H2Conn`]. Handed on in
/// the response's extensions, for the forwarder to put in the request's in-flight guard.
#[derive(Clone)]
pub(crate) struct StreamToken(pub Arc<()>);

/// Where a request's stream goes: on this connection, or after this dial (another's, or its
/// own).
enum H2Pick {
    On(H2Conn),
    After(Dialing),
    Dial,
}

/// One connection to one server, as the request path holds it.
struct Conn {
    sender: Sender,
    state: Arc<ConnState>,
}

/// What a connection's task and the request path both know of it: since when it is idle (ms
/// on [`ConnState::clock`]), or [`BUSY`], or [`CLOSED`] once its task ended it for being idle
/// too long. The two compare-and-swap on it so that a connection is never both handed out and
/// closed.
#[derive(Debug)]
struct ConnState {
    idle_since: AtomicU64,
    /// When the connection was made: the clock's zero. tokio's clock, so that paused time
    /// (the in-process tests) moves the idle timer and this alike.
    born: tokio::time::Instant,
}

const BUSY: u64 = u64::MAX;
const CLOSED: u64 = u64::MAX - 1;

impl ConnState {
    /// Milliseconds since the connection was made: the idle lists' clock.
    fn clock(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }
}

impl Upstreams {
    pub fn new(
        tls: &UpstreamTls,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        max_buf: usize,
    ) -> Upstreams {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let mut builder = http1::Builder::new();
        builder.max_buf_size(max_buf);
        let mut h2 = http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        h2.timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(H2_PING_EVERY)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .keep_alive_while_idle(true)
            .adaptive_window(true);
        Upstreams {
            connectors: PerPool::connectors(tls, &http),
            h2_connectors: PerPool::h2_connectors(tls, &http),
            builder,
            h2,
            idle_timeout,
            max_idle,
        }
    }

    /// Sends `req` (its URI in origin form: the path and query) to `upstream` of `pool`, on an
    /// idle connection of this worker's or a new one. The connection goes back to the idle
    /// list once the response has fully arrived.
    ///
    /// Not an `async fn`: this future is held inside every request's, so it is written to keep
    /// no copy of the request (a few hundred bytes) in its own state; hyper's part is boxed.
    pub fn send<'a>(
        &'a self,
        pool: &'a str,
        upstream: &'a Upstream,
        req: Request<UpstreamBody>,
        stale: Stale,
    ) -> impl Future<Output = Result<Response<Incoming>, Failure>> + Send + 'a {
        if upstream.h2 {
            return futures_util::future::Either::Left(Box::pin(self.send_h2(pool, upstream, req)));
        }
        let first = match checkout(upstream.key) {
            Some(conn) => Ok(self.exchange(upstream, conn, req)),
            None => Err(Box::pin(self.send_on_new(pool, upstream, req))),
        };
        async move {
            let again = match first {
                Err(on_new) => return on_new.await,
                Ok(exchange) => match exchange.await {
                    Ok(answer) => return answer,
                    Err(Unsent(_, e)) if stale == Stale::Report => {
                        return Err(Failure::NeverSent(e))
                    }
                    Err(Unsent(req, _)) => {
                        tracing::debug!(server = %upstream.addr, "an idle connection had closed; sending on a new one");
                        Box::pin(self.send_on_new(pool, upstream, req))
                    }
                },
            };
            again.await
        }
        .right_future()
    }

    /// `req` as a stream on one of this worker's HTTP/2 connections to `upstream` (see
    /// [`H2Server`]). A stream a connection refused before it went out (the server going away:
    /// GOAWAY) goes out once more on another.
    async fn send_h2(
        &self,
        pool: &str,
        upstream: &Upstream,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, Failure> {
        let req = as_h2(req, upstream);
        let conn = self.h2_conn(pool, upstream).await?;
        // Which connection, without a clone of its token (that would count as a stream).
        let id = Arc::as_ptr(&conn.streams) as usize;
        match h2_exchange(conn, req).await {
            Ok(answer) => answer,
            Err(Unsent(req, e)) => {
                tracing::debug!(server = %upstream.addr, error = %e, "an HTTP/2 connection refused a stream before it went out; sending on another");
                h2_forget(upstream.key, id);
                let conn = self.h2_conn(pool, upstream).await?;
                match h2_exchange(conn, req).await {
                    Ok(answer) => answer,
                    Err(Unsent(_, e)) => Err(Failure::NeverSent(e)),
                }
            }
        }
    }

    /// The connection a new stream to `upstream` goes on: the least busy of this worker's,
    /// or a new one (see [`H2Server`]).
    async fn h2_conn(&self, pool: &str, upstream: &Upstream) -> Result<H2Conn, Failure> {
        let dialing = match h2_pick(upstream.key) {
            H2Pick::On(conn) => return Ok(conn),
            H2Pick::After(dialing) => dialing,
            H2Pick::Dial => {
                let dial: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
                    Box::pin(self.dial_h2(pool, upstream));
                let dialing = dial.shared();
                H2.with_borrow_mut(|servers| {
                    h2_server(servers, upstream.key).dialing = Some(dialing.clone());
                });
                dialing
            }
        };
        let dialed = dialing.clone().await;
        // Whoever sees the dial end first files its connection (and ends the dial).
        H2.with_borrow_mut(|servers| {
            let server = h2_server(servers, upstream.key);
            if server.dialing.as_ref().is_some_and(|d| d.ptr_eq(&dialing)) {
                server.dialing = None;
                if let Ok(conn) = &dialed {
                    server.conns.push(conn.clone());
                }
            }
        });
        dialed.map_err(|e| Failure::Connect(Box::new(e)))
    }

    /// A new HTTP/2 connection to `upstream`, its task spawned: a future of its own
    /// (`'static`), for every request that waits for it.
    fn dial_h2(
        &self,
        pool: &str,
        upstream: &Upstream,
    ) -> impl Future<Output = Result<H2Conn, SharedError>> + Send + 'static {
        let connect = self.connect(pool, upstream);
        let builder = self.h2.clone();
        async move {
            let shared = |e: BoxError| SharedError(Arc::new(e));
            let io = connect.await.map_err(shared)?;
            let (sender, conn) = builder.handshake(io).await.map_err(|e| shared(e.into()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %crate::error::DisplayChain(&e), "upstream HTTP/2 connection ended");
                }
            });
            Ok(H2Conn {
                sender,
                streams: Arc::new(()),
            })
        }
    }

    /// `req` on a new connection.
    async fn send_on_new(
        &self,
        pool: &str,
        upstream: &Upstream,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, Failure> {
        let conn = self.dial(pool, upstream).await?;
        match self.exchange(upstream, conn, req).await {
            Ok(answer) => answer,
            Err(Unsent(_, e)) => Err(Failure::NeverSent(e)),
        }
    }

    /// One request on `conn` (sent to hyper at once; its future boxed); the connection is
    /// released for the next once this one's response has arrived. `Err` gives back a request
    /// that never went out.
    fn exchange<'a>(
        &'a self,
        upstream: &'a Upstream,
        mut conn: Conn,
        req: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Result<Response<Incoming>, Failure>, Unsent>> + Send + 'a {
        let sent = Box::pin(conn.sender.try_send_request(req));
        async move {
            match sent.await {
                Ok(resp) => {
                    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                        self.release(upstream.key, conn);
                    }
                    Ok(Ok(resp))
                }
                Err(mut e) => match e.take_message() {
                    Some(req) => Err(Unsent(req, e.into_error())),
                    None => Ok(Err(Failure::Exchange(e.into_error()))),
                },
            }
        }
    }

    /// A new connection to `upstream`, its task spawned.
    async fn dial(&self, pool: &str, upstream: &Upstream) -> Result<Conn, Failure> {
        let io = self
            .connect(pool, upstream)
            .await
            .map_err(Failure::Connect)?;
        let (sender, conn) = self
            .builder
            .handshake(io)
            .await
            .map_err(|e| Failure::Connect(e.into()))?;
        let state = Arc::new(ConnState {
            idle_since: AtomicU64::new(BUSY),
            born: tokio::time::Instant::now(),
        });
        tokio::spawn(drive(conn, Arc::clone(&state), self.idle_timeout));
        Ok(Conn { sender, state })
    }

    /// A connected socket (TLS-wrapped for an `https://` server) to `upstream`. A future of
    /// its own (`'static`): an HTTP/2 dial outlives the request that began it.
    fn connect(
        &self,
        pool: &str,
        upstream: &Upstream,
    ) -> impl Future<Output = Result<<Connector as Service<Uri>>::Response, BoxError>> + Send + 'static
    {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(if upstream.tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        uri.authority = Some(upstream.authority.clone());
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        let connectors = if upstream.h2 {
            &self.h2_connectors
        } else {
            &self.connectors
        };
        connectors.for_pool(pool).clone().call(uri)
    }

    /// Back to the idle list once the connection is ready for another request: now, when the
    /// response arrived whole with its head (most small ones), or when its body has been read.
    fn release(&self, key: usize, mut conn: Conn) {
        let max = self.max_idle;
        if conn.sender.is_ready() {
            checkin(key, conn, max);
        } else if !conn.sender.is_closed() && max > 0 {
            tokio::spawn(async move {
                if conn.sender.ready().await.is_ok() {
                    checkin(key, conn, max);
                }
            });
        }
    }
}

/// How often an HTTP/2 connection to a server pings it, and how long a ping may go unanswered
/// before the connection is taken for dead (a server gone without a FIN).
const H2_PING_EVERY: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// `req` (origin form, HTTP/1.1, a Host header) as an HTTP/2 request: the Host becomes the
/// `:authority` (the app sees the client's host, as over HTTP/1.1), `http` or `https` (TLS
/// to the app) the `:scheme`.
fn as_h2(req: Request<UpstreamBody>, upstream: &Upstream) -> Request<UpstreamBody> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .headers
        .remove(http::header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| upstream.authority.clone());
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(if upstream.tls {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    uri.authority = Some(authority);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).expect("a scheme, an authority and a path make a URI");
    parts.version = http::Version::HTTP_2;
    // `TE` is hop-by-hop and went with the others; a gRPC call's `TE: trailers` (which says
    // the client takes trailers, and which gRPC servers require) is said again on this hop.
    if crate::grpc::is_grpc(&parts.headers) {
        parts
            .headers
            .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
    Request::from_parts(parts, body)
}

/// One stream on `conn`. `Err` gives back a request that never went out. The answer carries
/// the stream's [`StreamToken`] in its extensions.
async fn h2_exchange(
    conn: H2Conn,
    req: Request<UpstreamBody>,
) -> Result<Result<Response<Incoming>, Failure>, Unsent> {
    let H2Conn {
        mut sender,
        streams,
    } = conn;
    if let Err(e) = sender.ready().await {
        return Err(Unsent(req, e));
    }
    match sender.try_send_request(req).await {
        Ok(mut resp) => {
            resp.extensions_mut().insert(StreamToken(streams));
            Ok(Ok(resp))
        }
        Err(mut e) => match e.take_message() {
            Some(req) => Err(Unsent(req, e.into_error())),
            None => {
                let e = e.into_error();
                Ok(Err(if refused(&e) {
                    Failure::Refused(e)
                } else {
                    Failure::Exchange(e)
                }))
            }
        },
    }
}

/// Whether the app said it did not process the stream (RFC 9113, section 8.7): it reset it
/// with REFUSED_STREAM, or its GOAWAY's last stream id is below it (h2 ends such streams
/// with the GOAWAY as a remote error; streams at or below the id that fail later end with
/// another error: the connection's).
fn refused(e: &hyper::Error) -> bool {
    crate::error::chain(e)
        .filter_map(|err| err.downcast_ref::<h2::Error>())
        .any(|h2| {
            h2.is_remote() && (h2.reason() == Some(h2::Reason::REFUSED_STREAM) || h2.is_go_away())
        })
}

/// This worker's connections to the server `key`, made empty if there are none yet.
fn h2_server(servers: &mut Vec<H2Server>, key: usize) -> &mut H2Server {
    if servers.len() <= key {
        servers.resize_with(key + 1, H2Server::default);
    }
    &mut servers[key]
}

/// Where a new stream to the server `key` goes: the open connection with the fewest streams,
/// unless every one has [`H2_STREAMS_PER_CONNECTION`] and there is room for another.
fn h2_pick(key: usize) -> H2Pick {
    H2.with_borrow_mut(|servers| {
        let server = h2_server(servers, key);
        server.conns.retain(|c| !c.sender.is_closed());
        let least = server.conns.iter().min_by_key(|c| c.open_streams());
        match least {
            Some(conn)
                if conn.open_streams() < H2_STREAMS_PER_CONNECTION
                    || server.conns.len() >= H2_MAX_CONNECTIONS =>
            {
                H2Pick::On(conn.clone())
            }
            _ => match &server.dialing {
                Some(dialing) => H2Pick::After(dialing.clone()),
                None => H2Pick::Dial,
            },
        }
    })
}

/// Takes the connection `id` (its token's address) out of this worker's connections to the
/// server `key`: it refuses new streams.
fn h2_forget(key: usize, id: usize) {
    H2.with_borrow_mut(|servers| {
        if let Some(server) = servers.get_mut(key) {
            server
                .conns
                .retain(|c| Arc::as_ptr(&c.streams) as usize != id);
        }
    });
}

/// The newest idle connection to the server `key` that is still open, marked busy.
fn checkout(key: usize) -> Option<Conn> {
    IDLE.with_borrow_mut(|idle| {
        let list = idle.get_mut(key)?;
        while let Some(conn) = list.pop() {
            let since = conn.state.idle_since.load(Ordering::Acquire);
            let taken = since != CLOSED
                && conn
                    .state
                    .idle_since
                    .compare_exchange(since, BUSY, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
            if taken && conn.sender.is_ready() {
                return Some(conn);
            }
        }
        None
    })
}

/// Puts an idle connection on this worker's list for `key`, or closes it when the list holds
/// `max` already.
fn checkin(key: usize, conn: Conn, max: usize) {
    conn.state
        .idle_since
        .store(conn.state.clock(), Ordering::Release);
    IDLE.with_borrow_mut(|idle| {
        if idle.len() <= key {
            idle.resize_with(key + 1, Vec::new);
        }
        let list = &mut idle[key];
        if list.len() >= max {
            // Make room from the connections that closed while idle before giving up on this one.
            list.retain(|c| c.sender.is_ready());
        }
        if list.len() < max {
            list.push(conn);
        }
    });
}

/// A connection's task: hyper's connection future (upgrades allowed, for WebSocket tunnels),
/// ended when it has been idle for `idle_timeout`. Its one timer is re-armed at most once per
/// `idle_timeout`, not per request.
async fn drive<T>(
    conn: http1::Connection<T, UpstreamBody>,
    state: Arc<ConnState>,
    idle_timeout: Duration,
) where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = conn.with_upgrades();
    tokio::pin!(conn);
    let timer = tokio::time::sleep(idle_timeout);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            ended = &mut conn => {
                if let Err(e) = ended {
                    tracing::debug!(error = %crate::error::DisplayChain(&e), "upstream connection ended");
                }
                return;
            }
            () = &mut timer => {
                let since = state.idle_since.load(Ordering::Acquire);
                let idle_for = Duration::from_millis(state.clock().saturating_sub(since));
                if since != BUSY && idle_for >= idle_timeout {
                    let closed = state
                        .idle_since
                        .compare_exchange(since, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    if closed {
                        // Dropping hyper's connection closes the socket; the idle list drops
                        // its handle when it next looks.
                        return;
                    }
                }
                let wait = if since == BUSY { idle_timeout } else { idle_timeout.saturating_sub(idle_for) };
                timer.as_mut().reset(tokio::time::Instant::now() + wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(addr: &str) -> Upstream {
        let backend = turnout_config::Backend::parse(&turnout_config::ServerEntry {
            addr: addr.to_owned(),
            weight: 1,
        })
        .expect("a server");
        Upstream::new(backend, Arc::default(), Arc::default(), None)
    }

    /// An HTTP/2 request to the app: the client's Host as `:authority` (no Host header), the
    /// scheme the server is spoken to in, and `TE: trailers` again for a gRPC call only.
    #[test]
    fn requests_to_an_h2_app_carry_authority_scheme_and_grpcs_te() {
        let req = Request::post("/shop.Orders/Get")
            .header(http::header::HOST, "shop.example:8080")
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(UpstreamBody::Empty)
            .expect("a request");
        let h2 = as_h2(req, &upstream("https://127.0.0.1:50051"));
        assert_eq!(
            h2.uri().to_string(),
            "https://shop.example:8080/shop.Orders/Get"
        );
        assert_eq!(h2.version(), http::Version::HTTP_2);
        assert!(h2.headers().get(http::header::HOST).is_none());
        assert_eq!(h2.headers()[http::header::TE], "trailers");

        // No Host (or a broken one): the server's own address; not gRPC: no TE.
        let req = Request::get("/x?y=1")
            .header(http::header::HOST, "bad host")
            .body(UpstreamBody::Empty)
            .expect("a request");
        let h2 = as_h2(req, &upstream("127.0.0.1:50052"));
        assert_eq!(h2.uri().to_string(), "http://127.0.0.1:50052/x?y=1");
        assert!(h2.headers().get(http::header::TE).is_none());
    }
}
