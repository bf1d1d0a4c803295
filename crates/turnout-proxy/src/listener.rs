//! The accept loop and the drain. The loop is bounded by a semaphore (one permit per open
//! connection), backs off on accept errors such as EMFILE instead of ending, and serves each
//! connection in its own task, tracked for the drain. The HTTPS listener shares the loop: its
//! connections first send their ClientHello (bounded in time), then finish a TLS handshake
//! (bounded in time and in number), then are served exactly as plain ones.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{deadline_of, Activity, Deadline, GuardedIo};
use crate::service::Downstream;
use crate::DataPlane;

/// How the drain at shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Every connection and tunnel finished before the shutdown timeout.
    pub complete: bool,
    /// Client connections still open when the drain ended.
    pub connections_left: usize,
    /// Tunnels still open when the drain ended.
    pub tunnels_left: usize,
}

/// The HTTPS listener: its socket, the rustls settings, and the bounds on handshakes.
#[derive(Debug)]
pub struct TlsListener {
    pub listener: TcpListener,
    /// From [`crate::CertStore::server_config`].
    pub config: Arc<rustls::ServerConfig>,
    /// A client must finish its handshake within this (and waits at most this for a slot).
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
}

/// What each TLS connection's task needs before it can serve.
struct Handshakes {
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    slots: Semaphore,
}

/// Accepts from `listener`, or waits forever when there is none.
async fn accept_from(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

type ConnCtx = (Arc<crate::Shared>, Downstream, Arc<Activity>);

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
async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    drain: CancellationToken,
    io: I,
    ctx: Arc<ConnCtx>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let settings = &ctx.0.settings;
    let peer = ctx.1.peer;
    let activity = Arc::clone(&ctx.2);
    let env = Arc::clone(&ctx.0.env);
    let io = GuardedIo::new(
        io,
        Arc::clone(&ctx.2),
        settings.client_header_timeout,
        settings.client_idle_timeout,
        settings.client_send_timeout,
        settings.client_body_timeout,
    );
    // One Arc per connection; each request clones it once.
    let service = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move {
            let busy = ctx.2.begin();
            let mut resp = ctx.0.handle(req, &ctx.1).await;
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                ctx.2.upgraded();
            }
            resp.body_mut().hold_connection(busy);
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = drain.cancelled() => {
            let settled = async {
                let grace = tokio::time::Instant::now() + DRAIN_GRACE;
                loop {
                    if activity.in_flight() {
                        return;
                    }
                    if activity.is_quiet() && tokio::time::Instant::now() >= grace {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::select! {
                ended = conn.as_mut() => ended,
                () = settled => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        () = activity.idle_close.notified() => {
            // An idle HTTP/2 connection: GOAWAY, then the close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        match deadline_of(&*e) {
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
}

/// A TLS connection: the ClientHello is read first, holding no handshake slot (so sockets that
/// send nothing, or dribble, cannot starve real clients of slots); then a slot (waited for at
/// most `timeout`) bounds the handshakes doing cryptography at once, each finishing within
/// `timeout`.
async fn handshake(
    handshakes: &Handshakes,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let timeout = handshakes.timeout;
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(timeout, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS ClientHello unreadable");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "no TLS ClientHello in time; closed");
            return None;
        }
    };
    let Ok(Ok(_slot)) = tokio::time::timeout(timeout, handshakes.slots.acquire()).await else {
        tracing::debug!(%peer, ?timeout, "no TLS handshake slot in time; closed");
        return None;
    };
    match tokio::time::timeout(timeout, start.into_stream(Arc::clone(&handshakes.config))).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake not finished in time; closed");
            None
        }
    }
}

impl DataPlane {
    /// Serves `listener` (and `tls`, if given) until `shutdown` completes, then stops
    /// accepting, lets requests and tunnels in flight finish (up to the shutdown timeout), and
    /// reports how that went. Both listeners share one connection bound and one drain.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<TlsListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Drained {
        let shared = Arc::clone(&self.shared);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let settings = &shared.settings;
        builder
            .http1()
            .timer(TokioTimer::new())
            // Off: hyper's runs from the moment a connection waits, so it cannot tell a slow
            // client from an idle keep-alive one. `GuardedIo` applies both deadlines.
            .header_read_timeout(None)
            // Too many or too large headers answer 431.
            .max_headers(settings.max_header_count)
            .max_buf_size(settings.max_header_bytes)
            // A client may shut its sending side once its request is out and still wait for
            // the answer (RFC 9112 9.6 allows it); without this hyper closed such connections
            // unanswered.
            .half_close(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
        let builder = Arc::new(builder);
        let (tls_listener, handshakes) = match tls {
            Some(t) => (
                Some(t.listener),
                Some(Arc::new(Handshakes {
                    config: t.config,
                    timeout: t.handshake_timeout,
                    slots: Semaphore::new(t.max_handshakes),
                })),
            ),
            None => (None, None),
        };
        let drain = CancellationToken::new();
        let connections = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(shared.settings.max_connections));
        let mut backoff = Duration::ZERO;
        tokio::pin!(shutdown);

        let spawn = |stream: tokio::net::TcpStream,
                     peer: std::net::SocketAddr,
                     https: bool,
                     permit: tokio::sync::OwnedSemaphorePermit| {
            let _ = stream.set_nodelay(true);
            let ctx = Arc::new((
                Arc::clone(&shared),
                Downstream::new(peer, https),
                Arc::new(Activity::default()),
            ));
            let drain = drain.clone();
            let builder = Arc::clone(&builder);
            match handshakes.as_ref().filter(|_| https) {
                None => {
                    connections.spawn(async move {
                        serve_connection(&builder, drain, stream, ctx).await;
                        drop(permit);
                    });
                }
                Some(handshakes) => {
                    let handshakes = Arc::clone(handshakes);
                    connections.spawn(async move {
                        if let Some(stream) = handshake(&handshakes, stream, peer).await {
                            serve_connection(&builder, drain, stream, ctx).await;
                        }
                        drop(permit);
                    });
                }
            }
        };

        loop {
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let (accepted, https) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => (accepted, false),
                accepted = accept_from(tls_listener.as_ref()) => (accepted, true),
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    spawn(stream, peer, https, permit);
                }
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: wait a
                    // little and go on; the listener itself is fine.
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    tracing::warn!(error = %e, retry_in = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        // Connections the kernel completed but turnout has not accepted yet would be reset when
        // the listener closes: take them first, and serve them as the drain serves every other.
        drain.cancel();
        for (l, https) in [(Some(&listener), false), (tls_listener.as_ref(), true)] {
            let Some(l) = l else { continue };
            while let Some(Ok((stream, peer))) = l.accept().now_or_never() {
                // Past max_connections, still served: it is one of the last few.
                let permit = Arc::clone(&permits)
                    .try_acquire_owned()
                    .or_else(|_| Arc::new(Semaphore::new(1)).try_acquire_owned());
                let Ok(permit) = permit else { break };
                spawn(stream, peer, https, permit);
            }
        }
        drop(listener);
        drop(tls_listener);
        let open = connections.len();
        let tunnels = shared.tunnels.len();
        tracing::info!(connections = open, tunnels, timeout = ?shared.settings.shutdown_timeout, "listener closed; draining");
        shared.tunnels.close();
        connections.close();
        let drain = async {
            connections.wait().await;
            shared.tunnels.wait().await;
        };
        let complete = tokio::time::timeout(shared.settings.shutdown_timeout, drain)
            .await
            .is_ok();
        Drained {
            complete,
            connections_left: connections.len(),
            tunnels_left: shared.tunnels.len(),
        }
    }
}
