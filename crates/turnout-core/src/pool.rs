//! A pool: its name, its upstream servers in order, a round-robin cursor and the counters of
//! what is in flight on it. Pools are immutable but for those atomics; changing a pool's servers
//! builds a new `Pool` that shares the old one's [`PoolStats`], so requests that started on the
//! old servers are still counted under the pool's name until they finish.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;
use turnout_config::{HealthCheck, Passive, PoolName, ServerAddr};

use crate::health::ServerHealth;
use crate::metrics::PoolMetrics;

/// One upstream server, with its address pre-parsed for building request URIs.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: ServerAddr,
    pub authority: Authority,
    pub health: Arc<ServerHealth>,
}

impl Upstream {
    pub fn new(addr: ServerAddr, health: Arc<ServerHealth>) -> Upstream {
        let authority = Authority::try_from(addr.as_str())
            .expect("a validated ServerAddr is a valid HTTP authority");
        Upstream {
            addr,
            authority,
            health,
        }
    }
}

/// How a pool's servers are checked and ejected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSettings {
    pub check: HealthCheck,
    pub passive: Passive,
}

/// Live counters of one pool, shared across every version of the pool with the same name.
#[derive(Debug, Default)]
pub struct PoolStats {
    in_flight: AtomicUsize,
    tunnels: AtomicUsize,
    requests: AtomicU64,
}

impl PoolStats {
    /// Requests whose response has not finished streaming yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Upgraded connections (WebSockets) still open.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Requests started on this pool since the process started.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct Pool {
    name: PoolName,
    servers: Box<[Upstream]>,
    next: AtomicUsize,
    stats: Arc<PoolStats>,
    settings: Arc<PoolSettings>,
    metrics: PoolMetrics,
}

impl Pool {
    /// A pool of `servers`. Counters and per-server health carry over from `previous` (the
    /// pool's version being replaced), so a change of servers neither forgets what is in flight
    /// nor resets a known server's health.
    pub fn new(
        name: PoolName,
        servers: Vec<ServerAddr>,
        settings: Arc<PoolSettings>,
        metrics: PoolMetrics,
        previous: Option<&Pool>,
    ) -> Pool {
        let known = |addr: &ServerAddr| {
            previous
                .and_then(|p| p.servers.iter().find(|u| &u.addr == addr))
                .map(|u| Arc::clone(&u.health))
                .unwrap_or_default()
        };
        Pool {
            servers: servers
                .into_iter()
                .map(|addr| {
                    let health = known(&addr);
                    Upstream::new(addr, health)
                })
                .collect(),
            name,
            next: AtomicUsize::new(0),
            stats: previous.map(|p| Arc::clone(&p.stats)).unwrap_or_default(),
            settings,
            metrics,
        }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    pub fn metrics(&self) -> &PoolMetrics {
        &self.metrics
    }

    /// Servers that may take a request now.
    pub fn available(&self) -> usize {
        self.servers.iter().filter(|u| u.health.available()).count()
    }

    pub fn name(&self) -> &PoolName {
        &self.name
    }

    pub fn servers(&self) -> &[Upstream] {
        &self.servers
    }

    pub fn stats(&self) -> &Arc<PoolStats> {
        &self.stats
    }

    /// The next available server, round-robin; `None` when no server is available.
    #[inline]
    pub fn pick(&self) -> Option<&Upstream> {
        match self.servers.len() {
            0 => None,
            1 => Some(&self.servers[0]).filter(|u| u.health.available()),
            n => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &self.servers[(start + i) % n])
                    .find(|u| u.health.available())
            }
        }
    }

    /// Another available server than `tried`, for a retry.
    pub fn pick_other(&self, tried: &Upstream) -> Option<&Upstream> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.servers[(start + i) % n])
            .find(|u| u.addr != tried.addr && u.health.available())
    }

    /// Counts a request as in flight on this pool until the guard drops.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            pool: Arc::clone(self),
        }
    }
}

/// A request in flight on a pool. It keeps the pool it started on alive, so the request finishes
/// there whatever switches happen meanwhile.
#[derive(Debug)]
pub struct InFlight {
    pool: Arc<Pool>,
}

impl InFlight {
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The request became a tunnel (a 101 Switching Protocols went back): it stops counting as a
    /// request and counts as an open tunnel until the returned guard drops.
    pub fn into_tunnel(self) -> TunnelGuard {
        self.pool.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelGuard {
            pool: Arc::clone(&self.pool),
        }
        // `self` drops here and ends the request count.
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open tunnel on a pool.
#[derive(Debug)]
pub struct TunnelGuard {
    pool: Arc<Pool>,
}

impl TunnelGuard {
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.pool.stats.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(servers: &[&str]) -> Arc<Pool> {
        Arc::new(Pool::new(
            PoolName::parse("blue").expect("name"),
            servers
                .iter()
                .map(|s| ServerAddr::parse(s).expect("addr"))
                .collect(),
            Arc::default(),
            crate::metrics::Metrics::new().pool("blue"),
            None,
        ))
    }

    #[test]
    fn unavailable_servers_are_skipped() {
        let p = pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        p.servers()[1].health.set_up(false);
        let picked: Vec<_> = (0..4)
            .map(|_| p.pick().expect("server").addr.to_string())
            .collect();
        assert!(!picked.contains(&"127.0.0.1:2".to_string()), "{picked:?}");
        assert_eq!(p.available(), 2);
        let first = &p.servers()[0];
        for _ in 0..4 {
            assert_eq!(
                p.pick_other(first).expect("other").addr.as_str(),
                "127.0.0.1:3"
            );
        }
        p.servers()[0].health.set_up(false);
        p.servers()[2].health.set_up(false);
        assert!(p.pick().is_none());
        let single = pool(&["127.0.0.1:1"]);
        single.servers()[0].health.set_up(false);
        assert!(single.pick().is_none());
    }

    #[test]
    fn round_robin_visits_every_server_in_turn() {
        let p = pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let picked: Vec<_> = (0..6)
            .map(|_| p.pick().expect("server").addr.to_string())
            .collect();
        assert_eq!(
            picked,
            [
                "127.0.0.1:1",
                "127.0.0.1:2",
                "127.0.0.1:3",
                "127.0.0.1:1",
                "127.0.0.1:2",
                "127.0.0.1:3"
            ]
        );
        assert!(pool(&[]).pick().is_none());
    }

    #[test]
    fn guards_count_requests_and_tunnels() {
        let p = pool(&["127.0.0.1:1"]);
        let a = p.begin_request();
        let b = p.begin_request();
        assert_eq!((p.stats().in_flight(), p.stats().requests()), (2, 2));
        let t = b.into_tunnel();
        assert_eq!((p.stats().in_flight(), p.stats().tunnels()), (1, 1));
        drop(a);
        drop(t);
        assert_eq!((p.stats().in_flight(), p.stats().tunnels()), (0, 0));
    }
}
