//! The accept loop and the drain. The loop is bounded by a semaphore (one permit per open
//! connection), backs off on accept errors such as EMFILE instead of ending, and hands each
//! connection to its own task, tracked for the drain: plain ones straight to `serve`,
//! HTTPS ones through the TLS handshake first ([`crate::tls`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::downstream::Downstream;
use crate::plane::DataPlane;
use crate::serve::serve_connection;
use crate::tls::{handshake, Handshakes};

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
    /// The bound socket (`[tls] listen`).
    pub listener: TcpListener,
    /// From [`crate::tls::CertStore::server_config`].
    pub config: Arc<rustls::ServerConfig>,
    /// A client must finish its handshake within this (and waits at most this for a slot).
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
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
        let settings = &shared.settings;
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            // Off: hyper's runs from the moment a connection waits, so it cannot tell a slow
            // client from an idle keep-alive one. `GuardedIo` applies both deadlines.
            .header_read_timeout(None)
            // Too many or too large headers answer 431.
            .max_headers(settings.server.max_header_count)
            .max_buf_size(settings.server.max_header_bytes)
            // A client may shut its sending side once its request is out and still wait for
            // the answer (RFC 9112 9.6 allows it); without this hyper closed such connections
            // unanswered.
            .half_close(true);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_headers(settings.server.max_header_count)
            .max_buf_size(settings.server.max_header_bytes)
            .half_close(true);
        auto.http2().timer(TokioTimer::new()).max_header_list_size(
            u32::try_from(settings.server.max_header_bytes).unwrap_or(u32::MAX),
        );
        let builder = Arc::new(crate::serve::Builders { h1, auto });
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
        let permits = Arc::new(Semaphore::new(shared.settings.server.max_connections));
        let mut backoff = Duration::ZERO;
        tokio::pin!(shutdown);
        // Keys whose buckets refilled are dropped now and then: memory follows the clients
        // active lately, not every client ever seen.
        let sweeper = shared.limiter.as_ref().map(|_| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(crate::limits::SWEEP_EVERY);
                loop {
                    every.tick().await;
                    if let Some(l) = &shared.limiter {
                        l.sweep();
                    }
                }
            })
        });

        let spawn = |stream: tokio::net::TcpStream,
                     peer: std::net::SocketAddr,
                     https: bool,
                     permit: tokio::sync::OwnedSemaphorePermit| {
            // `[limits] connections_per_client`: over it, the connection is closed unread.
            let counted = match shared
                .limiter
                .as_ref()
                .map(|l| l.connection(peer.ip(), &shared.env.metrics))
            {
                Some(Err(())) => return,
                Some(Ok(counted)) => counted,
                None => None,
            };
            let _ = stream.set_nodelay(true);
            let (shared, down) = (
                Arc::clone(&shared),
                Downstream::new(peer, https).holding((permit, counted)),
            );
            let drain = drain.clone();
            let builder = Arc::clone(&builder);
            match handshakes.as_ref().filter(|_| https) {
                None => {
                    // The connection's own future is the task: a block around it kept a copy
                    // of its arguments (the socket, the client) for the connection's life.
                    connections.spawn(serve_connection(builder, drain, stream, shared, down));
                }
                Some(handshakes) => {
                    let handshakes = Arc::clone(handshakes);
                    connections.spawn(async move {
                        if let Some(stream) = handshake(&handshakes, stream, peer).await {
                            serve_connection(builder, drain, stream, shared, down).await;
                        }
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
        if let Some(s) = sweeper {
            s.abort();
        }
        let open = connections.len();
        let tunnels = shared.forwarder.tunnels.len();
        tracing::info!(connections = open, tunnels, timeout = ?shared.settings.server.shutdown_timeout, "listener closed; draining");
        shared.forwarder.tunnels.close();
        connections.close();
        let drain = async {
            connections.wait().await;
            shared.forwarder.tunnels.wait().await;
        };
        let complete = tokio::time::timeout(shared.settings.server.shutdown_timeout, drain)
            .await
            .is_ok();
        Drained {
            complete,
            connections_left: connections.len(),
            tunnels_left: shared.forwarder.tunnels.len(),
        }
    }
}
