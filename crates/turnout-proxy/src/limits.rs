//! `[limits]` at work: the keyed GCRA rate limiters (`governor`), the per-client counts of
//! requests in flight and of open connections, the allow-list and the dry-run. A request meets
//! [`Limiter::check`] once it is routed (a rate may be a pool's own); a connection meets
//! [`Limiter::connection`] at accept.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::Clock;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::HeaderMap;
use turnout_config::{LimitKey, Limits, RateLimit};
use turnout_core::Metrics;

/// How often keys whose bucket has refilled are dropped: a client idle for its rate's refill
/// time plus this costs nothing any more.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// governor's clock on tokio's time: paused-time tests drive the limiter as they drive every
/// other deadline, and outside tests it is `Instant::now()`.
#[derive(Debug, Clone)]
pub(crate) struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// What a rate counts a request by. An IP is kept as it is; a header's value is kept as its
/// 64-bit hash (no allocation per request, and a fixed size per key whatever the client sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Value(u64),
}

type Keyed = RateLimiter<
    Key,
    DashMapStateStore<Key>,
    TokioClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

/// One `[[limits.rate]]` and its limiter.
#[derive(Debug)]
struct Rate {
    spec: RateLimit,
    limiter: Keyed,
}

/// A request over a limit: its key class and when the client may try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limited {
    pub class: String,
    pub retry_after: Duration,
}

/// The per-client limits of the data plane.
#[derive(Debug)]
pub(crate) struct Limiter {
    dry_run: bool,
    allow: turnout_config::TrustedProxies,
    divide_by_fleet: bool,
    rates: Vec<Rate>,
    requests: Option<(u32, Arc<Counts>)>,
    connections: Option<(u32, Arc<Counts>)>,
    clock: TokioClock,
}

/// Open things per client address; an entry lives while its count is above zero.
type Counts = DashMap<IpAddr, u32>;

/// One request in flight or one open connection, counted for its client until dropped.
#[derive(Debug)]
pub(crate) struct Counted {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let dashmap::Entry::Occupied(mut e) = self.counts.entry(self.ip) {
            if *e.get() <= 1 {
                e.remove();
            } else {
                *e.get_mut() -= 1;
            }
        }
    }
}

/// Counts one more for `ip`, unless it has `max` already (then `None`, and nothing counted).
fn take(counts: &Arc<Counts>, ip: IpAddr, max: u32, force: bool) -> Option<Counted> {
    let mut n = counts.entry(ip).or_insert(0);
    if *n >= max && !force {
        return None;
    }
    *n += 1;
    Some(Counted {
        counts: Arc::clone(counts),
        ip,
    })
}

impl Limiter {
    /// The limiter of `limits` (`None`: nothing is limited, and no request pays for it).
    pub fn new(limits: &Limits) -> Option<Limiter> {
        if limits.is_empty() {
            return None;
        }
        let clock = TokioClock(tokio::time::Instant::now());
        let rates = limits
            .rates
            .iter()
            .map(|spec| {
                // One cell every per/rate; `burst` cells at once.
                let every = spec.per / spec.rate.get();
                let quota = Quota::with_period(every)
                    .expect("a rate's period is over zero")
                    .allow_burst(spec.burst);
                Rate {
                    spec: spec.clone(),
                    limiter: RateLimiter::new(quota, DashMapStateStore::default(), clock.clone()),
                }
            })
            .collect();
        Some(Limiter {
            dry_run: limits.dry_run,
            allow: limits.allow.clone(),
            divide_by_fleet: limits.divide_by_fleet,
            rates,
            requests: limits
                .requests_per_client
                .map(|n| (n, Arc::new(Counts::default()))),
            connections: limits
                .connections_per_client
                .map(|n| (n, Arc::new(Counts::default()))),
            clock,
        })
    }

    /// A connection from `peer` at accept: counted (the count is held until the connection
    /// closes), or `None` when the peer has its limit open already and it must be closed.
    /// In dry-run it is counted and let on.
    pub fn connection(&self, peer: IpAddr, metrics: &Metrics) -> Result<Option<Counted>, ()> {
        let Some((max, counts)) = &self.connections else {
            return Ok(None);
        };
        if self.allow.contains(&peer) {
            return Ok(None);
        }
        match take(counts, peer, *max, false) {
            Some(c) => Ok(Some(c)),
            None => {
                metrics.connection_limited(self.dry_run);
                tracing::info!(client = %peer, limit = max, dry_run = self.dry_run, "over [limits] connections_per_client");
                if self.dry_run {
                    Ok(take(counts, peer, *max, true))
                } else {
                    Err(())
                }
            }
        }
    }

    /// One request from `client` for `path`, routed to `pool`: passes (holding its in-flight
    /// count, if one is kept) or is over a limit. `members`: the fleet's live members, when
    /// rates are divided among them.
    pub fn check(
        &self,
        client: IpAddr,
        headers: &HeaderMap,
        path: &str,
        pool: Option<&str>,
        members: usize,
        metrics: &Metrics,
    ) -> Result<Option<Counted>, Limited> {
        if self.allow.contains(&client) {
            return Ok(None);
        }
        // Each request costs this many cells: a rate divided among n members.
        let cost = if self.divide_by_fleet {
            NonZeroU32::new(u32::try_from(members).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
        } else {
            NonZeroU32::MIN
        };
        for rate in &self.rates {
            let spec = &rate.spec;
            if spec
                .path_prefix
                .as_deref()
                .is_some_and(|p| !path.starts_with(p))
                || spec.pool.as_ref().is_some_and(|p| Some(p.as_str()) != pool)
            {
                continue;
            }
            let key = match &spec.key {
                LimitKey::Client => Key::Ip(client),
                LimitKey::Header(name) => match headers.get(name) {
                    Some(v) => {
                        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
                        v.as_bytes().hash(&mut h);
                        Key::Value(h.finish())
                    }
                    // Not counted by this rate (a client-keyed rate may still cover it).
                    None => continue,
                },
            };
            let retry_after = match rate.limiter.check_key_n(&key, cost) {
                Ok(Ok(())) => continue,
                Ok(Err(not_until)) => not_until.wait_time_from(self.clock.now()),
                // More members than the burst: each one's share is under one request.
                Err(_) => spec.per,
            };
            self.over(&spec.name, client, retry_after, metrics)?;
        }
        let Some((max, counts)) = &self.requests else {
            return Ok(None);
        };
        match take(counts, client, *max, false) {
            Some(c) => Ok(Some(c)),
            None => {
                self.over("in_flight", client, Duration::from_secs(1), metrics)?;
                Ok(take(counts, client, *max, true))
            }
        }
    }

    /// A request over limit `class`: counted and logged; refused unless in dry-run.
    fn over(
        &self,
        class: &str,
        client: IpAddr,
        retry_after: Duration,
        metrics: &Metrics,
    ) -> Result<(), Limited> {
        metrics.limited(class, self.dry_run);
        if self.dry_run {
            tracing::info!(target: "turnout::limits", %client, class, "would be limited (dry_run)");
            return Ok(());
        }
        tracing::debug!(target: "turnout::limits", %client, class, "limited");
        Err(Limited {
            class: class.to_owned(),
            retry_after: retry_after.max(Duration::from_secs(1)),
        })
    }

    /// Drops the keys whose buckets have refilled (they hold nothing a new key would not), and
    /// gives the memory back.
    pub fn sweep(&self) {
        for r in &self.rates {
            r.limiter.retain_recent();
            r.limiter.shrink_to_fit();
        }
        for (_, counts) in self.requests.iter().chain(&self.connections) {
            counts.shrink_to_fit();
        }
    }

    /// Keys tracked now, over every rate.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.rates.iter().map(|r| r.limiter.len()).sum()
    }
}

#[cfg(test)]
mod tests;
