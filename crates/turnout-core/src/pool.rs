//! A pool: its name, its upstream servers in order, its balancer and the counters of what is in
//! flight on it. Pools are immutable but for those atomics; changing a pool's servers builds a
//! new `Pool` that shares the old one's [`PoolStats`] (and each kept server's health and load),
//! so requests that started on the old servers are still counted until they finish.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;
use http::HeaderValue;
use turnout_config::{Backend, Balance, HealthCheck, Passive, PoolName, ServerAddr};

use crate::health::ServerHealth;
use crate::metrics::PoolMetrics;

/// One upstream server, with its address pre-parsed for building request URIs.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `host:port`, or `https://host:port`.
    pub addr: ServerAddr,
    /// Its share of the pool's traffic.
    pub weight: u32,
    /// The address as a URI authority, parsed once.
    pub authority: Authority,
    /// Spoken to over TLS (`https://` in its address).
    pub tls: bool,
    /// Spoken to in HTTP/2 (its pool's `protocol = "h2c"`, or `"h2"` over TLS).
    pub h2: bool,
    /// Its health, shared with the checker.
    pub health: Arc<ServerHealth>,
    /// Requests in flight on this server (counted for the balancers that compare loads).
    pub load: Arc<AtomicUsize>,
    /// A number no other server of any pool has in this process, kept across its pool's
    /// changes like its health: the data plane keys its idle connections to the server by it.
    pub key: usize,
}

/// The next [`Upstream::key`].
static NEXT_KEY: AtomicUsize = AtomicUsize::new(0);

impl Upstream {
    /// `key`: the server's key from its pool's previous version, `None` for a server new to
    /// its pool (it gets a fresh one).
    pub fn new(
        backend: Backend,
        health: Arc<ServerHealth>,
        load: Arc<AtomicUsize>,
        key: Option<usize>,
    ) -> Upstream {
        let authority = Authority::try_from(backend.addr.authority())
            .expect("a validated ServerAddr is a valid HTTP authority");
        Upstream {
            tls: backend.addr.is_tls(),
            h2: false,
            addr: backend.addr,
            weight: backend.weight,
            authority,
            health,
            load,
            key: key.unwrap_or_else(|| NEXT_KEY.fetch_add(1, Ordering::Relaxed)),
        }
    }

    fn in_flight(&self) -> u64 {
        self.load.load(Ordering::Relaxed) as u64
    }
}

/// How a pool's servers are checked, ejected and chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSettings {
    /// The active checks.
    pub check: HealthCheck,
    /// The passive ejections.
    pub passive: Passive,
    /// How a server is chosen.
    pub balance: Balance,
    /// What is spoken to the servers.
    pub protocol: turnout_config::Protocol,
    /// The gRPC statuses that count as the pool's errors (`[grpc] error_codes`).
    pub grpc_errors: turnout_config::GrpcCodes,
}

/// Live counters of one pool, shared across every version of the pool with the same name.
#[derive(Debug)]
pub struct PoolStats {
    in_flight: AtomicUsize,
    tunnels: AtomicUsize,
    requests: AtomicU64,
    /// Bumped to close the pool's open tunnels (a switch's `close_tunnels_after`); each
    /// tunnel watches it from its start.
    close_tunnels: tokio::sync::watch::Sender<u64>,
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            in_flight: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            close_tunnels: tokio::sync::watch::Sender::new(0),
        }
    }
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

/// The cookies that name this pool, made once when the pool is built.
#[derive(Debug, Clone)]
pub struct PoolCookies {
    /// `Set-Cookie` that keeps a client on this pool during a split.
    pub sticky: HeaderValue,
    /// `Set-Cookie` that keeps a browser previewing this pool (when preview routing is on).
    pub preview: Option<HeaderValue>,
    /// `Set-Cookie` naming this version of the pool (`pool.generation`) on page loads, when
    /// version-skew protection is on; and its value alone, to compare with a request's.
    pub version: Option<(HeaderValue, String)>,
}

/// A balancer's precomputed state.
#[derive(Debug)]
enum Picker {
    RoundRobin,
    /// Server indices in smooth weighted round-robin order, one full cycle.
    Weighted(Box<[u32]>),
    LeastRequests,
    /// (point, server index), sorted by point.
    Ring(Box<[(u64, u32)]>),
    RandomTwo,
}

/// Points per unit of weight on the hash ring: enough for an even spread over a few servers
/// (about ±10% per server with 100), few enough to rebuild the ring in microseconds.
const RING_POINTS: u32 = 100;

/// A pool of upstream servers: its settings, its balancer's state, its counters. Shared by every snapshot that names it.
#[derive(Debug)]
pub struct Pool {
    name: PoolName,
    /// Bumped each time the pool's servers are replaced (a redeploy): cached assets are keyed
    /// by it, so a new deploy of a pool never serves the previous one's.
    generation: u64,
    servers: Box<[Upstream]>,
    next: AtomicUsize,
    stats: Arc<PoolStats>,
    settings: Arc<PoolSettings>,
    metrics: PoolMetrics,
    picker: Picker,
    cookies: PoolCookies,
    /// Version-skew protection: this pool (at this generation) has served page loads to
    /// clients routed to it the ordinary way, so a version cookie naming it was handed out.
    /// Only then is such a cookie honoured: a staged or dark pool is never reached by one.
    version_given: AtomicBool,
}

impl Pool {
    /// A pool of `servers`. Counters, per-server health and load carry over from `previous`
    /// (the pool's version being replaced), so a change of servers neither forgets what is in
    /// flight nor resets a known server's health.
    pub fn new(
        name: PoolName,
        servers: Vec<Backend>,
        settings: Arc<PoolSettings>,
        metrics: PoolMetrics,
        previous: Option<&Pool>,
        cookies: PoolCookies,
    ) -> Pool {
        let known = |addr: &ServerAddr| {
            previous
                .and_then(|p| p.servers.iter().find(|u| &u.addr == addr))
                .map(|u| (Arc::clone(&u.health), Arc::clone(&u.load), Some(u.key)))
                .unwrap_or_default()
        };
        let servers: Box<[Upstream]> = servers
            .into_iter()
            .map(|backend| {
                let (health, load, key) = known(&backend.addr);
                let mut upstream = Upstream::new(backend, health, load, key);
                upstream.h2 = settings.protocol.is_h2();
                upstream
            })
            .collect();
        let picker = match settings.balance {
            Balance::RoundRobin => Picker::RoundRobin,
            Balance::Weighted => Picker::Weighted(smooth_schedule(&servers)),
            Balance::LeastRequests => Picker::LeastRequests,
            Balance::IpHash => Picker::Ring(ring(&servers)),
            Balance::RandomTwoChoices => Picker::RandomTwo,
        };
        Pool {
            servers,
            name,
            generation: previous.map_or(0, |p| p.generation + 1),
            next: AtomicUsize::new(0),
            stats: previous.map(|p| Arc::clone(&p.stats)).unwrap_or_default(),
            settings,
            metrics,
            picker,
            cookies,
            version_given: AtomicBool::new(false),
        }
    }

    /// Marks this pool's version as handed out (a page load was routed here by the split, a
    /// sticky cookie or a rule). Read first, so that after the first page load it is a read.
    #[inline]
    pub fn version_given(&self) {
        if !self.version_given.load(Ordering::Relaxed) {
            self.version_given.store(true, Ordering::Relaxed);
        }
    }

    /// A page load was routed here the ordinary way at this generation.
    #[inline]
    pub fn has_given_version(&self) -> bool {
        self.version_given.load(Ordering::Relaxed)
    }

    /// How its servers are checked, ejected and chosen.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Its Prometheus counters.
    pub fn metrics(&self) -> &PoolMetrics {
        &self.metrics
    }

    /// The cookies it sets.
    pub fn cookies(&self) -> &PoolCookies {
        &self.cookies
    }

    /// Servers that may take a request now.
    pub fn available(&self) -> usize {
        self.servers.iter().filter(|u| u.health.available()).count()
    }

    /// Its name.
    pub fn name(&self) -> &PoolName {
        &self.name
    }

    /// How many times this pool's servers were replaced since start-up.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Its servers, in order.
    pub fn servers(&self) -> &[Upstream] {
        &self.servers
    }

    /// Its last minutes, for the dashboard.
    pub fn stats(&self) -> &Arc<PoolStats> {
        &self.stats
    }

    /// Does this pool's balancer read the servers' loads (so requests must count them)?
    #[inline]
    pub fn counts_load(&self) -> bool {
        matches!(self.picker, Picker::LeastRequests | Picker::RandomTwo)
    }

    /// The server for a new request, by the pool's balancer; `None` when no server is
    /// available. `client` gives the client's address, asked only by `ip_hash`. No lock, no
    /// allocation.
    #[inline]
    pub fn pick(&self, client: impl FnOnce() -> IpAddr) -> Option<&Upstream> {
        let n = self.servers.len();
        match n {
            0 => return None,
            1 => return Some(&self.servers[0]).filter(|u| u.health.available()),
            _ => {}
        }
        match &self.picker {
            Picker::RoundRobin => self.round_robin(),
            Picker::Weighted(schedule) => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..schedule.len())
                    .map(|i| &self.servers[schedule[(start + i) % schedule.len()] as usize])
                    .find(|u| u.health.available())
            }
            Picker::LeastRequests => {
                // Ties (an idle pool) rotate, so equal servers share the work.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &self.servers[(start + i) % n])
                    .filter(|u| u.health.available())
                    .reduce(|best, u| if lighter(u, best) { u } else { best })
            }
            Picker::Ring(ring) => {
                let key = hash_ip(client());
                let at = ring.partition_point(|(point, _)| *point < key);
                (0..ring.len())
                    .map(|i| &self.servers[ring[(at + i) % ring.len()].1 as usize])
                    .find(|u| u.health.available())
            }
            Picker::RandomTwo => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (&self.servers[a], &self.servers[b]);
                match (a.health.available(), b.health.available()) {
                    (true, true) => Some(if lighter(b, a) { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => self.round_robin(),
                }
            }
        }
    }

    fn round_robin(&self) -> Option<&Upstream> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.servers[(start + i) % n])
            .find(|u| u.health.available())
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
            server: None,
            token: None,
        }
    }
}

/// Is `a` less loaded than `b`, relative to their weights? ((load + 1) / weight, compared
/// without division; the +1 makes an idle heavy server win over an idle light one.)
#[inline]
fn lighter(a: &Upstream, b: &Upstream) -> bool {
    (a.in_flight() + 1) * u64::from(b.weight) < (b.in_flight() + 1) * u64::from(a.weight)
}

/// The hash of a client address, the same on every instance and every turnout version (xxh3
/// has a fixed, specified output), so a fleet agrees on where a client goes.
#[inline]
pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => xxhash_rust::xxh3::xxh3_64(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => xxhash_rust::xxh3::xxh3_64(&v4.octets()),
            None => xxhash_rust::xxh3::xxh3_64(&v6.octets()),
        },
    }
}

/// The consistent-hash ring: `RING_POINTS` points per unit of weight for each server, placed by
/// hashing its address, so a server keeps its points whatever else joins or leaves.
fn ring(servers: &[Upstream]) -> Box<[(u64, u32)]> {
    let mut ring: Vec<(u64, u32)> = servers
        .iter()
        .enumerate()
        .flat_map(|(i, u)| {
            (0..RING_POINTS * u.weight).map(move |p| {
                let point =
                    xxhash_rust::xxh3::xxh3_64_with_seed(u.addr.as_str().as_bytes(), u64::from(p));
                (point, i as u32)
            })
        })
        .collect();
    ring.sort_unstable();
    ring.into_boxed_slice()
}

/// One cycle of smooth weighted round robin (nginx's algorithm), computed once: each step
/// adds every server's weight to its score, picks the highest score and takes the total off it.
/// Weights are divided by their common divisor first, so the cycle is as short as it can be.
fn smooth_schedule(servers: &[Upstream]) -> Box<[u32]> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = servers.iter().fold(0, |g, u| gcd(g, u.weight)).max(1);
    let weights: Vec<i64> = servers.iter().map(|u| i64::from(u.weight / g)).collect();
    let total: i64 = weights.iter().sum();
    let mut score = vec![0i64; servers.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..servers.len() {
            score[i] += weights[i];
            if score[i] > score[best] {
                best = i;
            }
        }
        score[best] -= total;
        schedule.push(best as u32);
    }
    schedule.into_boxed_slice()
}

/// A request in flight on a pool. It keeps the pool it started on alive, so the request finishes
/// there whatever switches happen meanwhile.
#[derive(Debug)]
pub struct InFlight {
    pool: Arc<Pool>,
    /// The server's load counter, when its pool's balancer reads loads.
    server: Option<Arc<AtomicUsize>>,
    /// A token held until the request ends ([`InFlight::hold`]): an HTTP/2 connection counts
    /// its open streams by the tokens out.
    token: Option<Arc<()>>,
}

impl InFlight {
    /// The pool the request is on.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The request is now on `server` (its first attempt, or a retry): counted in that
    /// server's load until the guard drops, for the balancers that compare loads.
    #[inline]
    pub fn on_server(&mut self, server: &Upstream) {
        if !self.pool.counts_load() {
            return;
        }
        if let Some(old) = self.server.take() {
            old.fetch_sub(1, Ordering::Relaxed);
        }
        server.load.fetch_add(1, Ordering::Relaxed);
        self.server = Some(Arc::clone(&server.load));
    }

    /// Holds `token` until the request ends (its response's last byte, or its abandonment):
    /// whoever made it counts the requests still under way by its strong count.
    pub fn hold(&mut self, token: Arc<()>) {
        self.token = Some(token);
    }

    /// The request became a tunnel (a 101 Switching Protocols went back): it stops counting as a
    /// request and counts as an open tunnel until the returned guard drops.
    /// A tunnel keeps counting in its server's load: a WebSocket weighs on the server as long
    /// as it is open.
    pub fn into_tunnel(mut self) -> TunnelGuard {
        self.pool.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelGuard {
            pool: Arc::clone(&self.pool),
            server: self.server.take(),
        }
        // `self` drops here and ends the request count.
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(load) = &self.server {
            load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An open tunnel on a pool.
#[derive(Debug)]
pub struct TunnelGuard {
    pool: Arc<Pool>,
    server: Option<Arc<AtomicUsize>>,
}

impl TunnelGuard {
    /// The pool the tunnel is on.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Resolves once the pool's tunnels are asked to close ([`Pool::close_tunnels`]) after
    /// this call; a request made before it does not count.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pool.stats.close_tunnels.subscribe()
    }
}

impl Pool {
    /// Changes once this pool's tunnels and long calls are asked to close
    /// ([`Pool::close_tunnels`]) after this call: a gRPC stream in flight ends then too.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<u64> {
        self.stats.close_tunnels.subscribe()
    }

    /// Asks every tunnel open on this pool (any version of it) to close: a WebSocket gets a
    /// close frame 1001 (Going Away) each way between two frames, another protocol is cut.
    /// Answers how many tunnels were open.
    pub fn close_tunnels(&self) -> usize {
        self.stats.close_tunnels.send_modify(|epoch| *epoch += 1);
        self.stats.tunnels()
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.pool.stats.tunnels.fetch_sub(1, Ordering::Relaxed);
        if let Some(load) = &self.server {
            load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pool_with(balance: Balance, servers: &[(&str, u32)]) -> Arc<Pool> {
        Arc::new(Pool::new(
            PoolName::parse("blue").expect("name"),
            servers
                .iter()
                .map(|(s, w)| Backend {
                    addr: ServerAddr::parse(s).expect("addr"),
                    weight: *w,
                })
                .collect(),
            Arc::new(PoolSettings {
                balance,
                ..PoolSettings::default()
            }),
            crate::metrics::Metrics::new().pool("blue"),
            None,
            PoolCookies {
                sticky: HeaderValue::from_static("turnout-pool=blue"),
                preview: None,
                version: None,
            },
        ))
    }

    fn pool(servers: &[&str]) -> Arc<Pool> {
        let servers: Vec<_> = servers.iter().map(|s| (*s, 1)).collect();
        pool_with(Balance::RoundRobin, &servers)
    }

    const LOCAL: fn() -> IpAddr = || IpAddr::from([127, 0, 0, 1]);

    /// How many of `n` picks went to each server.
    fn spread(p: &Pool, n: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let u = p.pick(LOCAL).expect("server");
            *counts.entry(u.addr.to_string()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn unavailable_servers_are_skipped() {
        for balance in [
            Balance::RoundRobin,
            Balance::Weighted,
            Balance::LeastRequests,
            Balance::IpHash,
            Balance::RandomTwoChoices,
        ] {
            let p = pool_with(
                balance,
                &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)],
            );
            p.servers()[1].health.set_up(false);
            for i in 0..50u8 {
                let picked = p.pick(|| IpAddr::from([10, 0, 0, i])).expect("server");
                assert_ne!(picked.addr.as_str(), "127.0.0.1:2", "{balance}");
            }
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
            assert!(p.pick(LOCAL).is_none(), "{balance}");
        }
        let single = pool(&["127.0.0.1:1"]);
        single.servers()[0].health.set_up(false);
        assert!(single.pick(LOCAL).is_none());
    }

    #[test]
    fn a_kept_server_keeps_its_key_and_a_new_one_gets_its_own() {
        let old = pool(&["127.0.0.1:1", "127.0.0.1:2"]);
        let (k1, k2) = (old.servers()[0].key, old.servers()[1].key);
        assert_ne!(k1, k2);
        let new = Pool::new(
            old.name().clone(),
            ["127.0.0.1:2", "127.0.0.1:3"]
                .iter()
                .map(|s| Backend {
                    addr: ServerAddr::parse(s).expect("addr"),
                    weight: 1,
                })
                .collect(),
            Arc::clone(&old.settings),
            old.metrics.clone(),
            Some(&old),
            old.cookies.clone(),
        );
        assert_eq!(new.servers()[0].key, k2, "the kept server");
        let fresh = new.servers()[1].key;
        assert!(fresh != k1 && fresh != k2, "a new server: {fresh}");
        // Another pool with the same address is another server: its connections are its own.
        assert_ne!(pool(&["127.0.0.1:2"]).servers()[0].key, k2);
    }

    #[test]
    fn round_robin_visits_every_server_in_turn() {
        let p = pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let picked: Vec<_> = (0..6)
            .map(|_| p.pick(LOCAL).expect("server").addr.to_string())
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
        assert!(pool(&[]).pick(LOCAL).is_none());
    }

    #[test]
    fn weighted_round_robin_is_exact_and_smooth() {
        let p = pool_with(
            Balance::Weighted,
            &[("127.0.0.1:1", 5), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)],
        );
        // nginx's documented order for weights 5, 1, 1: a a b a c a a.
        let cycle: Vec<_> = (0..7)
            .map(|_| p.pick(LOCAL).expect("server").addr.as_str()[10..].to_string())
            .collect();
        assert_eq!(cycle, ["1", "1", "2", "1", "3", "1", "1"]);
        let counts = spread(&p, 700);
        assert_eq!(counts["127.0.0.1:1"], 500);
        assert_eq!(counts["127.0.0.1:2"], 100);
        // Common divisors are taken out: 30/10 cycles like 3/1.
        let p = pool_with(
            Balance::Weighted,
            &[("127.0.0.1:1", 30), ("127.0.0.1:2", 10)],
        );
        assert_eq!(spread(&p, 4)["127.0.0.1:1"], 3);
    }

    #[test]
    fn least_requests_avoids_the_busy_server_by_weight() {
        let p = pool_with(
            Balance::LeastRequests,
            &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)],
        );
        assert!(p.counts_load());
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut g = p.begin_request();
            g.on_server(&p.servers()[0]);
            held.push(g);
        }
        // :1 has 3 in flight: the next three go to :2, then they alternate.
        let next: Vec<_> = (0..3)
            .map(|_| {
                let u = p.pick(LOCAL).expect("server");
                let mut g = p.begin_request();
                g.on_server(u);
                held.push(g);
                u.addr.to_string()
            })
            .collect();
        assert_eq!(next, ["127.0.0.1:2"; 3]);
        assert_eq!(p.servers()[1].load.load(Ordering::Relaxed), 3);
        // A retry moves the count; dropping the guards and tunnels clears it.
        held[0].on_server(&p.servers()[1]);
        assert_eq!(p.servers()[0].load.load(Ordering::Relaxed), 2);
        let tunnel = held.pop().expect("guard").into_tunnel();
        assert_eq!(p.servers()[1].load.load(Ordering::Relaxed), 4);
        held.clear();
        assert_eq!(
            p.servers()[1].load.load(Ordering::Relaxed),
            1,
            "the tunnel still counts"
        );
        drop(tunnel);
        assert_eq!(p.servers()[1].load.load(Ordering::Relaxed), 0);
        // Idle, weight 3 against weight 1: the heavy one takes 3 of 4 while they fill up.
        let p = pool_with(
            Balance::LeastRequests,
            &[("127.0.0.1:1", 3), ("127.0.0.1:2", 1)],
        );
        let mut held = Vec::new();
        for _ in 0..8 {
            let u = p.pick(LOCAL).expect("server");
            let mut g = p.begin_request();
            g.on_server(u);
            held.push(g);
        }
        assert_eq!(p.servers()[0].load.load(Ordering::Relaxed), 6);
        assert_eq!(p.servers()[1].load.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn random_two_choices_prefers_the_lighter_of_two() {
        fastrand::seed(7);
        let p = pool_with(
            Balance::RandomTwoChoices,
            &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)],
        );
        // Idle: about a third each.
        let counts = spread(&p, 3000);
        for c in counts.values() {
            assert!((800..=1200).contains(c), "{counts:?}");
        }
        // :1 busy: it wins only when it is not drawn against a lighter one, i.e. never.
        let mut g = p.begin_request();
        g.on_server(&p.servers()[0]);
        let counts = spread(&p, 1000);
        assert!(!counts.contains_key("127.0.0.1:1"), "{counts:?}");
    }

    #[test]
    fn ip_hash_keeps_clients_and_moves_few_when_one_server_changes() {
        let servers: Vec<String> = (1..=10).map(|i| format!("127.0.0.1:{i}")).collect();
        let with = |names: &[String]| {
            let list: Vec<(&str, u32)> = names.iter().map(|s| (s.as_str(), 1)).collect();
            pool_with(Balance::IpHash, &list)
        };
        let clients: Vec<IpAddr> = (0..10_000u32)
            .map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
            .collect();
        let place = |p: &Pool| -> Vec<String> {
            clients
                .iter()
                .map(|c| p.pick(|| *c).expect("server").addr.to_string())
                .collect()
        };
        let ten = with(&servers);
        let before = place(&ten);
        assert_eq!(before, place(&ten), "a client keeps its server");
        // Spread: every server has between half and one and a half of its fair share.
        let mut share: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &before {
            *share.entry(s).or_default() += 1;
        }
        assert!(
            share.values().all(|n| (500..=1500).contains(n)),
            "{share:?}"
        );

        // One server leaves: only its clients move (about 1/10).
        let nine = with(&servers[..9]);
        let after = place(&nine);
        let moved: Vec<usize> = (0..clients.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        assert!(moved.iter().all(|&i| before[i] == servers[9]));
        assert!((500..=1500).contains(&moved.len()), "{} moved", moved.len());

        // One server joins: only clients that go to it move (about 1/11).
        let mut eleven_names = servers.clone();
        eleven_names.push("127.0.0.1:11".into());
        let after = place(&with(&eleven_names));
        let moved: Vec<usize> = (0..clients.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        assert!(moved.iter().all(|&i| after[i] == "127.0.0.1:11"));
        assert!((450..=1400).contains(&moved.len()), "{} moved", moved.len());
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
