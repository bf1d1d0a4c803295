//! Shadow traffic: a copy of a request sent to a rollout's target pool on a task of its own. A
//! body (of a known length, at most the mirror's `max_body`) is copied as it passes on its way
//! to the original's server and sent once it has all passed, so the original never waits for
//! the copy. The client never sees the copy's answer; its status and time to its head are
//! counted in the target pool's metrics, which is what the rollout's mirror phase judges.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::uri::Uri;
use http::{Request, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use turnout_core::snapshot::Mirror;
use turnout_core::RequestInfo;

use super::conns::{Stale, Upstreams};
use crate::body::{ClientBody, UpstreamBody};
use crate::downstream::Downstream;

impl super::Forwarder {
    /// Sends a copy of the request (`parts`, its headers as they go upstream, and `body`) to
    /// the mirror's pool, on a task of its own. Answers the body for the original: the same
    /// bytes, copied for the mirror as they pass. A body too long or of unknown length is not
    /// copied, and its request not mirrored.
    pub(crate) fn mirror(
        &self,
        mirror: &Arc<Mirror>,
        parts: &Parts,
        body: Option<Incoming>,
        down: &Downstream,
    ) -> Option<ClientBody> {
        let (body, copied) = match body {
            None => (None, None),
            Some(body) => match body.size_hint().exact().filter(|&n| n <= mirror.max_body) {
                Some(len) => {
                    let (body, copied) = ClientBody::tee(body, len as usize);
                    (Some(body), Some(copied))
                }
                None => return Some(ClientBody::new(body)),
            },
        };
        self.mirror_copy(mirror, parts, copied, down);
        body
    }

    fn mirror_copy(
        &self,
        mirror: &Arc<Mirror>,
        parts: &Parts,
        copied: Option<tokio::sync::oneshot::Receiver<bytes::Bytes>>,
        down: &Downstream,
    ) {
        // Bounded: past the bound a copy is dropped and counted, never queued.
        let Some(slot) = Slot::take(&mirror.in_flight) else {
            self.env.metrics.mirror_dropped();
            return;
        };
        let pool = Arc::clone(&mirror.pool);
        let server = {
            let info = RequestInfo {
                headers: &parts.headers,
                query: None,
                peer: down.peer.ip(),
            };
            match pool.pick(|| self.env.routing.client_ip(&info)) {
                Some(server) => server.clone(),
                None => return,
            }
        };
        let mut copy = Request::new(UpstreamBody::Empty);
        // Content-Length and the rest go with the copy as they were.
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts
            .uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
        *copy.version_mut() = Version::HTTP_11;
        *copy.headers_mut() = parts.headers.clone();
        self.outbound_headers(copy.headers_mut(), down, false);
        let upstreams = Arc::clone(&self.upstreams);
        // A copy's own, short bound: it is shadow traffic, and no client waits for it.
        let timeout = self.response_timeout.min(Mirror::TIMEOUT);
        let ended = mirror.ended();
        tokio::spawn(async move {
            let _slot = slot;
            let copied_and_sent = async {
                if let Some(copied) = copied {
                    // The original's body, once it has all passed; none if it broke off.
                    match tokio::time::timeout(timeout, copied).await {
                        Ok(Ok(bytes)) => *copy.body_mut() = UpstreamBody::Full(Some(bytes)),
                        _ => return None,
                    }
                }
                Some(send(&upstreams, &pool, &server, copy, timeout).await)
            };
            // The mirror's end (a rollout aborted or moved on) ends the copies still out, and
            // with them their upstream connections.
            tokio::select! {
                status = copied_and_sent => {
                    tracing::debug!(pool = %pool.name(), server = %server.addr, status, "mirrored a request");
                }
                () = ended => {
                    tracing::debug!(pool = %pool.name(), server = %server.addr, "mirror ended; copy dropped");
                }
            }
        });
    }
}

/// One of a mirror's in-flight places, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>) -> Option<Slot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < Mirror::MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(count)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The copy sent, its answer read to the end and thrown away; the status counted (502 when
/// the server failed, 504 when it did not answer in time) with the time to its head.
async fn send(
    upstreams: &Upstreams,
    pool: &turnout_core::Pool,
    server: &turnout_core::Upstream,
    req: Request<UpstreamBody>,
    timeout: Duration,
) -> u16 {
    let started = Instant::now();
    let sent = upstreams.send(pool.name().as_str(), server, req, Stale::Redial);
    let (status, body) = match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(resp)) => (resp.status().as_u16(), Some(resp.into_body())),
        Ok(Err(_)) => (502, None),
        Err(_) => (504, None),
    };
    pool.metrics()
        .observe(status, started.elapsed().as_secs_f64());
    if let Some(body) = body {
        // Read to its end so the connection can serve again; bounded like any body.
        let _ = tokio::time::timeout(timeout, body.collect()).await;
    }
    status
}
