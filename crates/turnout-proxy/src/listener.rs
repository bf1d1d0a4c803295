//! The accept loop and the drain. The loop is bounded by a semaphore (one permit per open
//! connection), backs off on accept errors such as EMFILE instead of ending, and serves each
//! connection in its own task, watched by hyper-util's `GracefulShutdown`. The HTTPS listener
//! shares the loop: its connections first finish a TLS handshake (bounded in time and in
//! number), then are served exactly as plain ones.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
    acceptor: tokio_rustls::TlsAcceptor,
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

/// Serves one client connection (plain or decrypted) until it ends or the drain closes it.
async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    ctx: Arc<ConnCtx>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let settings = &ctx.0.settings;
    let peer = ctx.1.peer;
    let io = GuardedIo::new(
        io,
        Arc::clone(&ctx.2),
        settings.client_header_timeout,
        settings.client_idle_timeout,
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
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        match deadline_of(&*e) {
            // Logged as nginx does: 408, though the client is sent nothing.
            Some(d @ Deadline::Header(_)) => {
                tracing::info!(%peer, status = 408, "closed a client connection: {d}")
            }
            Some(d @ Deadline::Idle(_)) => {
                tracing::debug!(%peer, "closed a keep-alive connection: {d}")
            }
            None => match e.downcast_ref::<hyper::Error>() {
                // hyper answered these itself before closing; say so once.
                Some(h) if h.is_parse_too_large() => {
                    tracing::info!(%peer, status = 431, "closed a client connection: request head too large (see max_header_count, max_header_bytes)")
                }
                Some(h) if h.is_parse() => {
                    tracing::info!(%peer, status = 400, error = %h, "closed a client connection: malformed request")
                }
                _ => {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error")
                }
            },
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
            .max_buf_size(settings.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
        let builder = Arc::new(builder);
        let (tls_listener, handshakes) = match tls {
            Some(t) => (
                Some(t.listener),
                Some(Arc::new(Handshakes {
                    acceptor: tokio_rustls::TlsAcceptor::from(t.config),
                    timeout: t.handshake_timeout,
                    slots: Semaphore::new(t.max_handshakes),
                })),
            ),
            None => (None, None),
        };
        let graceful = GracefulShutdown::new();
        let permits = Arc::new(Semaphore::new(shared.settings.max_connections));
        let mut backoff = Duration::ZERO;
        tokio::pin!(shutdown);

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
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = Duration::ZERO;
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: wait a
                    // little and go on; the listener itself is fine.
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    tracing::warn!(error = %e, retry_in = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let ctx = Arc::new((
                Arc::clone(&shared),
                Downstream::new(peer, https),
                Arc::new(Activity::default()),
            ));
            let watcher = graceful.watcher();
            let builder = Arc::clone(&builder);
            match handshakes.as_ref().filter(|_| https) {
                None => {
                    tokio::spawn(async move {
                        serve_connection(&builder, watcher, stream, ctx).await;
                        drop(permit);
                    });
                }
                Some(handshakes) => {
                    let handshakes = Arc::clone(handshakes);
                    tokio::spawn(async move {
                        // A slot first (waiting at most the handshake timeout), then the
                        // handshake (within the timeout again): slow handshakes hold only their
                        // own slots, and a client queued behind them still gets its full time.
                        let timeout = handshakes.timeout;
                        let slot = tokio::time::timeout(timeout, handshakes.slots.acquire()).await;
                        let Ok(Ok(_slot)) = slot else {
                            tracing::debug!(%peer, ?timeout, "no TLS handshake slot in time; closed");
                            drop(permit);
                            return;
                        };
                        match tokio::time::timeout(timeout, handshakes.acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => {
                                drop(_slot);
                                serve_connection(&builder, watcher, stream, ctx).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => {
                                tracing::debug!(%peer, ?timeout, "TLS handshake not finished in time; closed")
                            }
                        }
                        drop(permit);
                    });
                }
            }
        }
        drop(listener);
        drop(tls_listener);

        let connections = graceful.count();
        let tunnels = shared.tunnels.len();
        tracing::info!(connections, tunnels, timeout = ?shared.settings.shutdown_timeout, "listener closed; draining");
        shared.tunnels.close();
        let drain = async {
            graceful.shutdown().await;
            shared.tunnels.wait().await;
        };
        let complete = tokio::time::timeout(shared.settings.shutdown_timeout, drain)
            .await
            .is_ok();
        let connections_left = permits
            .available_permits()
            .abs_diff(shared.settings.max_connections);
        Drained {
            complete,
            connections_left,
            tunnels_left: shared.tunnels.len(),
        }
    }
}
