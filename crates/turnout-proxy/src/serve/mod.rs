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

pub(crate) mod deadlines;

use std::net::SocketAddr;

use http::HeaderValue;

use deadlines::{deadline_of, Activity, Deadline, GuardedIo};

/// What one accepted connection knows about its client.
#[derive(Debug, Clone)]
pub(crate) struct Downstream {
    pub peer: SocketAddr,
    /// The client's IP, formatted once per connection for `X-Forwarded-For`.
    pub ip_header: HeaderValue,
    /// Came in over the HTTPS listener.
    pub https: bool,
}

impl Downstream {
    pub fn new(peer: SocketAddr, https: bool) -> Downstream {
        let ip_header = HeaderValue::try_from(peer.ip().to_string())
            .expect("an IP address is a valid header value");
        Downstream {
            peer,
            ip_header,
            https,
        }
    }

    /// `X-Forwarded-Proto`.
    pub fn proto(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}

/// What each request of one connection is handed: the data plane, the client, and what the
/// connection's socket is told about requests in flight.
struct Conn {
    shared: Arc<crate::Shared>,
    down: Downstream,
    activity: Arc<Activity>,
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
pub(crate) async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    drain: CancellationToken,
    io: I,
    shared: Arc<crate::Shared>,
    down: Downstream,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let settings = &shared.settings;
    let peer = down.peer;
    let activity = Arc::new(Activity::default());
    let env = Arc::clone(&shared.env);
    let io = GuardedIo::new(
        io,
        Arc::clone(&activity),
        settings.client_header_timeout,
        settings.client_idle_timeout,
        settings.client_send_timeout,
        settings.client_body_timeout,
    );
    // One Arc per connection; each request clones it once.
    let ctx = Arc::new(Conn {
        shared,
        down,
        activity: Arc::clone(&activity),
    });
    let service = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move {
            let busy = ctx.activity.begin();
            let mut resp = ctx.shared.handle(req, &ctx.down).await;
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                ctx.activity.upgraded();
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
                    if activity.is_busy() {
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
