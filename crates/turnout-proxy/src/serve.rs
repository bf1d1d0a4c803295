//! One client connection served: hyper's HTTP/1 and HTTP/2 connection over the socket with its
//! deadlines ([`deadlines`]), each request handed to the service, the drain's close of
//! the connection, and one log line for a connection turnout cut off.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;

use std::net::SocketAddr;

use http::HeaderValue;

use crate::deadlines::{deadline_of, Deadline, GuardedIo};

use crate::downstream::Downstream;

/// Read when the drain begins: after a hand-over, quiet connections wait for their client.
fn patient(shared: &crate::proxy::Proxy) -> bool {
    shared
        .handed_over
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// hyper's connection builders, configured once: HTTP/1 alone for a connection that does not
/// open with the HTTP/2 preface (most), and hyper-util's HTTP/1+2 one for those that do. The
/// HTTP/1 connection's state is 640 bytes against the HTTP/1+2 one's 1 520, kept for every
/// connection's life, idle keep-alive ones included.
pub(crate) struct Builders {
    pub h1: hyper::server::conn::http1::Builder,
    pub auto: auto::Builder<TokioExecutor>,
}

/// The HTTP/2 connection preface (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads a connection's first bytes, enough to tell the HTTP/2 preface from an HTTP/1 request
/// (the first that differs from the preface decides). `Ok(None)`: the client closed first.
async fn sniff<I>(io: &mut I) -> std::io::Result<Option<(bool, bytes::Bytes)>>
where
    I: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut head = bytes::BytesMut::with_capacity(H2_PREFACE.len());
    loop {
        if io.read_buf(&mut head).await? == 0 {
            return Ok(None);
        }
        let n = head.len().min(H2_PREFACE.len());
        if head[..n] != H2_PREFACE[..n] {
            return Ok(Some((false, head.freeze())));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some((true, head.freeze())));
        }
    }
}

/// How long a drain gives a quiet connection for a request that may already be on its way
/// (sent before the client could know the connection would close) before closing it.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Serves one client connection (plain or decrypted) until it ends or the drain closes it.
///
/// The drain is turnout's own rather than hyper-util's `GracefulShutdown`: that one closes at
/// once every HTTP/1 connection that has not yet parsed a request, so a connection accepted
/// just before the drain (its request still in the socket) was closed unanswered. Here a
/// connection is closed only when nothing is under way on it: a request in flight finishes
/// (and the connection closes after it), a head that has begun arriving is read and answered,
/// and a quiet connection gets [`DRAIN_GRACE`] for a request already sent.
///
/// What `down` holds (the connection's permit and its count for `[limits]`,
/// [`Downstream::holding`]) is dropped when the connection ends.
///
/// The returned future is the connection's task for its whole life, idle keep-alive ones
/// included, so it is kept small: everything is set up here, outside it, and it captures only
/// pointers (an `async fn` would keep its arguments and a copy of each: 1 416 bytes against
/// 1 000). The first read is a boxed future of its own, gone once it has read.
pub(crate) fn serve_connection<I>(
    builders: Arc<Builders>,
    drain: CancellationToken,
    io: I,
    shared: Arc<crate::proxy::Proxy>,
    down: Downstream,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The connection's one record, shared by the socket and every request.
    let down = Arc::new(down);
    let server = &shared.settings.server;
    let guarded = GuardedIo::new(
        io,
        Arc::clone(&down),
        server.client_header_timeout,
        server.client_idle_timeout,
        server.client_send_timeout,
        server.client_body_timeout,
    );
    let (plane, client) = (Arc::clone(&shared), Arc::clone(&down));
    let service = service_fn(move |req| {
        let (shared, down) = (Arc::clone(&plane), Arc::clone(&client));
        // Boxed: hyper's HTTP/1 connection keeps a slot the size of this future for its whole
        // life, idle or not (~2.9 KiB of every idle keep-alive connection); a box per request
        // costs one allocation instead.
        Box::pin(async move {
            let busy = down.begin();
            let h1 = req.version() < http::Version::HTTP_2;
            let wanted = shared.wanted(&req);
            let answered = shared.phases(req, &down).await;
            let mut resp = shared.answer(answered, wanted, &down);
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                down.activity.upgraded();
            } else if h1 && shared.closing() {
                // Another process serves new connections, or this one shuts down: the
                // connection ends after this response, and says so (whatever answered: app,
                // cache, static file or turnout itself), so its client sends nothing more on
                // it.
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp.body_mut().mark_connection_busy(busy);
            Ok::<_, Infallible>(resp)
        })
    });
    // The first bytes read, and hyper's connection built for what they say, in a boxed future
    // of its own: its state (the sniff, the drain's grace) is gone once it is done, and the
    // connection's task keeps nothing it needed only to start.
    let (drain_, shared_, down_) = (drain.clone(), Arc::clone(&shared), Arc::clone(&down));
    let start = Box::pin(async move {
        let (h2, io) = first_bytes(guarded, drain_, shared_, down_).await?;
        let io = TokioIo::new(io);
        Some(if h2 {
            // HTTP/2's state (the HTTP/1+2 builder's, twice as large) is boxed, so that it does
            // not make every task that large.
            Served::H2 {
                conn: Box::pin(
                    builders
                        .auto
                        .serve_connection_with_upgrades(io, service)
                        .into_owned(),
                ),
            }
        } else {
            // HTTP/1 (most connections) is served inside the task itself: one allocation
            // for the task and hyper's state, not one each.
            Served::H1 {
                conn: builders.h1.serve_connection(io, service).with_upgrades(),
            }
        })
    });
    async move {
        let Some(served) = start.await else {
            return;
        };
        Serving {
            served,
            cancelled: drain.cancelled_owned(),
            settled: None,
            shut: false,
            graceful_shutdown: |served| match served.project() {
                ServedProj::H1 { conn } => conn.graceful_shutdown(),
                ServedProj::H2 { conn } => conn.as_mut().graceful_shutdown(),
            },
            down,
            shared,
        }
        .await;
    }
}

pin_project_lite::pin_project! {
    /// Serves a connection until it ends, or the drain closes it once nothing is under way on
    /// it (see [`serve_connection`]), or (HTTP/2) the socket says it has been idle too long: then
    /// GOAWAY and the close.
    ///
    /// HTTP/1: the drain never closes a connection with a request in flight. hyper, told to shut
    /// down then, would close it after the response without saying so in it (it writes no
    /// `Connection: close`), and a client that sends its next request the moment it has read a
    /// response would have it lost on the closing socket. Instead every response from the
    /// drain on says `Connection: close` (so hyper and the client both end the connection after
    /// it), and a connection is closed only once quiet for [`DRAIN_GRACE`] ([`settled`]). After
    /// a hand-over, a quiet connection is not closed for being quiet either: its next request
    /// is answered with `Connection: close`, or its idle timeout ends it. HTTP/2 gets GOAWAY at
    /// once, which tells the client which streams were taken.
    ///
    /// Written out rather than an `async` block: this is every connection's state for its whole
    /// life, and a block kept its own copies of what it was given (the task went from 1 152 to
    /// 1 024 bytes).
    struct Serving<A, B> {
        #[pin]
        served: Served<A, B>,
        #[pin]
        cancelled: tokio_util::sync::WaitForCancellationFutureOwned,
        // Made when the drain begins: ready once the connection may be closed.
        settled: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
        // Told to shut down: only its end is awaited now.
        shut: bool,
        graceful_shutdown: fn(std::pin::Pin<&mut Served<A, B>>),
        down: Arc<Downstream>,
        shared: Arc<crate::proxy::Proxy>,
    }
}

impl<A, B, E> std::future::Future for Serving<A, B>
where
    A: std::future::Future<Output = Result<(), E>>,
    E: Into<ServeError>,
    B: std::future::Future<Output = Result<(), ServeError>>,
{
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::task::Poll;
        let mut this = self.project();
        loop {
            if let Poll::Ready(ended) = this.served.as_mut().poll(cx) {
                if let Err(e) = ended {
                    log_end(&this.shared.env, this.down.peer, &*e);
                }
                return Poll::Ready(());
            }
            if *this.shut {
                return Poll::Pending;
            }
            let close = match this.settled {
                Some(settled) => settled.as_mut().poll(cx).is_ready(),
                None if this.cancelled.as_mut().poll(cx).is_ready() => {
                    let h1 = matches!(*this.served, Served::H1 { .. });
                    // GOAWAY tells an HTTP/2 client which streams were taken: no race to
                    // avoid.
                    let patient = h1 && patient(this.shared);
                    *this.settled = Some(Box::pin(settled(Arc::clone(this.down), h1, patient)));
                    continue;
                }
                // Asked for by the socket when an HTTP/2 connection has been idle too long (it
                // wakes this task); an idle HTTP/1 connection is cut by its socket instead.
                None => this.down.activity.idle_close_asked(),
            };
            if !close {
                return Poll::Pending;
            }
            // Drained, or an idle HTTP/2 connection: GOAWAY (HTTP/2) or the close, then the
            // end.
            *this.shut = true;
            (this.graceful_shutdown)(this.served.as_mut());
        }
    }
}

pin_project_lite::pin_project! {
    /// One client connection as hyper serves it: HTTP/1 inline, HTTP/2 boxed.
    #[project = ServedProj]
    enum Served<A, B> {
        H1 { #[pin] conn: A },
        H2 { conn: std::pin::Pin<Box<B>> },
    }
}

type ServeError = Box<dyn std::error::Error + Send + Sync>;

impl<A, B, E> std::future::Future for Served<A, B>
where
    A: std::future::Future<Output = Result<(), E>>,
    E: Into<ServeError>,
    B: std::future::Future<Output = Result<(), ServeError>>,
{
    type Output = Result<(), ServeError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            ServedProj::H1 { conn } => conn.poll(cx).map_err(Into::into),
            ServedProj::H2 { conn } => conn.as_mut().poll(cx),
        }
    }
}

/// The connection's first bytes, read under the header deadline like any request's, and the
/// socket with them put back in front: `(h2, io)`, or `None` when the client closed (or was
/// cut off, logged) first. A drain gives a connection still waiting for them the same grace as
/// a quiet one (a request may already be on its way).
async fn first_bytes<I>(
    mut io: GuardedIo<I>,
    drain: CancellationToken,
    shared: Arc<crate::proxy::Proxy>,
    down: Arc<Downstream>,
) -> Option<(bool, Prefixed<GuardedIo<I>>)>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let sniffed = {
        let sniffing = sniff(&mut io);
        tokio::pin!(sniffing);
        tokio::select! {
            sniffed = &mut sniffing => sniffed,
            () = drain.cancelled() => {
                if patient(&shared) {
                    // The header deadline still bounds it.
                    sniffing.await
                } else {
                    match tokio::time::timeout(DRAIN_GRACE, sniffing).await {
                        Ok(sniffed) => sniffed,
                        Err(_) => return None,
                    }
                }
            }
        }
    };
    match sniffed {
        Ok(Some((h2, head))) => Some((h2, Prefixed { head, io })),
        Ok(None) => None,
        Err(e) => {
            log_end(&shared.env, down.peer, &e);
            None
        }
    }
}

/// Ready once a draining connection may be closed: at once for HTTP/2 with a stream in flight
/// (GOAWAY settles it), and otherwise once it has been quiet for [`DRAIN_GRACE`] (unless
/// `patient`: then never, and its next response or its idle timeout ends it).
async fn settled(down: Arc<Downstream>, h1: bool, patient: bool) {
    let activity = &down.activity;
    let mut grace = tokio::time::Instant::now() + DRAIN_GRACE;
    loop {
        let now = tokio::time::Instant::now();
        if activity.is_busy() {
            if !h1 {
                return;
            }
            // Its response will say `Connection: close`; quiet after it, the client gets the
            // grace again for a request already sent.
            grace = now + DRAIN_GRACE;
        } else if !patient && activity.is_quiet() && now >= grace {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One line for a connection that ended with an error: turnout's deadlines, and the requests
/// hyper refused itself.
fn log_end(env: &turnout_core::Env, peer: SocketAddr, e: &(dyn std::error::Error + 'static)) {
    match deadline_of(e) {
        // Logged as nginx does: 408, though the client is sent nothing.
        Some(d @ Deadline::Header(_)) => {
            env.metrics.client_cutoff("header_timeout");
            tracing::info!(%peer, status = 408, "closed a client connection: {d}")
        }
        // Counted where the forward failed on it (`ClientFault::Stalled`).
        Some(d @ Deadline::Body(_)) => {
            tracing::info!(%peer, status = 408, "closed a client connection: {d} (see client_body_timeout)")
        }
        Some(d @ Deadline::Send(_)) => {
            env.metrics.client_cutoff("send_timeout");
            tracing::info!(%peer, "closed a client connection: {d} (see client_send_timeout)")
        }
        Some(d @ Deadline::Idle(_)) => {
            tracing::debug!(%peer, "closed a keep-alive connection: {d}")
        }
        None => match e.downcast_ref::<hyper::Error>() {
            // hyper answered these itself before closing; say so once.
            Some(h) if h.is_parse_too_large() => {
                env.metrics.client_cutoff("bad_request");
                tracing::info!(%peer, status = 431, "closed a client connection: request head too large (see max_header_count, max_header_bytes)")
            }
            Some(h) if h.is_parse() => {
                env.metrics.client_cutoff("bad_request");
                tracing::info!(%peer, status = 400, error = %h, "closed a client connection: malformed request")
            }
            _ => {
                tracing::debug!(%peer, error = %e, "client connection ended with an error")
            }
        },
    }
}

/// A connection's first bytes, read to tell HTTP/2 from HTTP/1, given back to hyper ahead of
/// the rest. (hyper-util's own is private; a dozen lines.)
struct Prefixed<I> {
    head: bytes::Bytes,
    io: I,
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head.split_to(n));
            if self.head.is_empty() {
                // An empty slice of the first read still holds its allocation: let it go.
                self.head = bytes::Bytes::new();
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
#[cfg(test)]
mod tests {
    /// Every connection's task is as large as this future for the connection's whole life,
    /// idle keep-alive ones included. It holds hyper's HTTP/1 connection (736 bytes) and little
    /// else; HTTP/2's state is boxed (with it inline, 4 088 bytes). Up to 912 bytes the task
    /// (tokio's header and trailer around it, in 128-byte units) takes 1 024 bytes; over it,
    /// 1 152.
    #[test]
    fn a_connection_task_stays_small() {
        let serve =
            |b: std::sync::Arc<super::Builders>,
             d: tokio_util::sync::CancellationToken,
             s: tokio::net::TcpStream,
             sh: std::sync::Arc<crate::proxy::Proxy>,
             down: super::Downstream| super::serve_connection(b, d, s, sh, down);
        fn size<A, B, C, D, E, F>(_: impl Fn(A, B, C, D, E) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = size(serve);
        eprintln!("serve_connection's future: {size} bytes");
        assert!(size <= 912, "serve_connection's future is {size} bytes");
    }
}
