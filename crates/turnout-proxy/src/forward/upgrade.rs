//! Tunnels for HTTP/1.1 upgrades (WebSocket, or what `upgrade_protocols` allows): once both
//! sides have switched protocols, bytes are copied both ways. The tunnel holds its pool's
//! [`TunnelGuard`], so it stays on the pool it started on and is counted there.
//!
//! When the app closes its side, the client is told (its side is shut for writing) and has
//! [`CLOSE_GRACE`] to close too; then the tunnel ends whatever the client does, so a client that
//! never closes cannot hold a tunnel (and a shutdown's drain) open for ever. A client that closes
//! first is the usual WebSocket ending: the app's remaining bytes still go through until the app
//! closes.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_util::task::TaskTracker;
use turnout_core::TunnelGuard;

/// How long a client has to close its side of a tunnel after the app closed its own.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub(crate) fn spawn_tunnel(
    tunnels: &TaskTracker,
    client: OnUpgrade,
    upstream: OnUpgrade,
    guard: TunnelGuard,
) {
    tunnels.spawn(async move {
        let pool = guard.pool().name().clone();
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(%pool, error = %e, "upgrade did not complete");
                return;
            }
        };
        let (mut client_rx, mut client_tx) = tokio::io::split(TokioIo::new(client));
        let (mut upstream_rx, mut upstream_tx) = tokio::io::split(TokioIo::new(upstream));
        let up = async {
            let n = tokio::io::copy(&mut client_rx, &mut upstream_tx).await;
            let _ = upstream_tx.shutdown().await;
            n
        };
        let down = async {
            let n = tokio::io::copy(&mut upstream_rx, &mut client_tx).await;
            let _ = client_tx.shutdown().await;
            n
        };
        tokio::pin!(up, down);
        let (up, down) = tokio::select! {
            up = &mut up => (up, down.await),
            down = &mut down => {
                // The app closed: the client gets the grace to close its side, no more.
                let up = tokio::time::timeout(CLOSE_GRACE, up).await.unwrap_or(Ok(0));
                (up, down)
            }
        };
        match (up, down) {
            (Ok(up), Ok(down)) => {
                tracing::debug!(%pool, bytes_up = up, bytes_down = down, "tunnel closed")
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(%pool, error = %e, "tunnel ended with an error")
            }
        }
        drop(guard);
    });
}
