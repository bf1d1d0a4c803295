//! Tunnels for HTTP/1.1 upgrades (WebSocket and any other protocol): once both sides have
//! switched protocols, bytes are copied both ways until either side closes. The tunnel holds its
//! pool's [`TunnelGuard`], so it stays on the pool it started on and is counted there.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;
use turnout_core::TunnelGuard;

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
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                tracing::debug!(%pool, bytes_up = up, bytes_down = down, "tunnel closed")
            }
            Err(e) => tracing::debug!(%pool, error = %e, "tunnel ended with an error"),
        }
        drop(guard);
    });
}
