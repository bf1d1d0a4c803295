//! A pool: its name, its upstream servers in order, a round-robin cursor and the counters of
//! what is in flight on it. Pools are immutable but for those atomics; changing a pool's servers
//! builds a new `Pool` that shares the old one's [`PoolStats`], so requests that started on the
//! old servers are still counted under the pool's name until they finish.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;
use turnout_config::{PoolName, ServerAddr};

/// One upstream server, with its address pre-parsed for building request URIs.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: ServerAddr,
    pub authority: Authority,
}

impl Upstream {
    pub fn new(addr: ServerAddr) -> Upstream {
        let authority = Authority::try_from(addr.as_str())
            .expect("a validated ServerAddr is a valid HTTP authority");
        Upstream { addr, authority }
    }
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
}

impl Pool {
    pub fn new(name: PoolName, servers: Vec<ServerAddr>, stats: Arc<PoolStats>) -> Pool {
        Pool {
            name,
            servers: servers.into_iter().map(Upstream::new).collect(),
            next: AtomicUsize::new(0),
            stats,
        }
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

    /// The next server, round-robin; `None` for an empty pool.
    pub fn pick(&self) -> Option<&Upstream> {
        match self.servers.len() {
            0 => None,
            1 => Some(&self.servers[0]),
            n => Some(&self.servers[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
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
        ))
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
