//! The routing snapshot and the [`Router`] that publishes it.
//!
//! A snapshot is immutable: a change builds a new one off the hot path and publishes it with one
//! pointer store. A request loads the snapshot once, takes the `Arc<Pool>` it routes to, and keeps
//! that pool to the end, so a switch never moves a request, stream or tunnel already under way.
//!
//! What operators set (the split's weights, the rules, the pools' servers) is kept by name; the
//! parts the request path reads (`active`, `split`, compiled rules) are derived from it by
//! [`RoutingSnapshot::derive`] after every change, so they always point at the current pools.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::HeaderValue;
use turnout_config::{Backend, Balance, Config, HealthCheck, Passive, PoolName, Rule};

use crate::decide::{CompiledRule, Share};
pub use crate::decide::{PreviewSettings, RouteSettings, SkewSettings, StickyBy, VERSION_COOKIE};
use crate::error::CoreError;
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolCookies, PoolSettings};
use crate::split::Weights;
use crate::state::SavedState;

/// What every version of the routing state shares: the settings a new pool is built with and
/// the metrics registry. Fixed for the life of the process.
#[derive(Debug, Default)]
pub struct Env {
    /// `[health]`, for pools without their own.
    pub check: HealthCheck,
    /// `[pools.NAME.health]`, merged over `[health]`.
    pub pool_checks: BTreeMap<PoolName, HealthCheck>,
    /// `[health.passive]`.
    pub passive: Passive,
    /// `[pools.NAME] balance`, for the pools that set one.
    pub pool_balance: BTreeMap<PoolName, Balance>,
    /// `[pools.NAME] protocol`, for the pools that set one.
    pub pool_protocol: BTreeMap<PoolName, turnout_config::Protocol>,
    /// `[grpc] error_codes`: the gRPC statuses that count as a pool's errors.
    pub grpc_errors: turnout_config::GrpcCodes,
    /// Stickiness and preview, from `[routing]`.
    pub routing: RouteSettings,
    /// The counters.
    pub metrics: Metrics,
    /// `[maintenance]`: who passes while maintenance mode is on.
    pub maintenance: turnout_config::MaintenancePolicy,
    /// `[pause]`: the bounds of a pause.
    pub pause: turnout_config::PausePolicy,
    /// When this process started (for the status and `/metrics`).
    pub started_at: Started,
    /// The recent events, for the dashboard.
    pub events: crate::events::Events,
    /// Each pool's last minutes, for the dashboard.
    pub stats: crate::stats::Stats,
    /// The config file's pools as this process loaded them, written into the state file so
    /// that the next start can tell which pools an edit of the file touched.
    pub config_pools: BTreeMap<PoolName, Vec<Backend>>,
}

/// The moment the process built its routing state: "now" by default.
#[derive(Debug, Clone, Copy)]
pub struct Started(pub SystemTime);

impl Default for Started {
    fn default() -> Self {
        Started(SystemTime::now())
    }
}

impl Env {
    /// The fixed part of `config`.
    pub fn from_config(config: &Config) -> Env {
        Env {
            check: config.health.clone(),
            pool_checks: config.pool_health.clone(),
            passive: config.passive.clone(),
            pool_balance: config.pool_balance.clone(),
            pool_protocol: config.pool_protocol.clone(),
            grpc_errors: config.grpc.error_codes,
            routing: RouteSettings {
                skew: config.routing.skew_protection.map(|max_age| SkewSettings {
                    max_age,
                    prefixes: if config.routing.skew_prefixes.is_empty() {
                        config.cache.prefixes.clone()
                    } else {
                        config.routing.skew_prefixes.clone()
                    },
                }),
                ..RouteSettings::from_config(&config.routing)
            },
            metrics: Metrics::new(),
            maintenance: config.maintenance.clone(),
            pause: config.pause,
            started_at: Started::default(),
            events: Default::default(),
            stats: Default::default(),
            config_pools: config.pools.clone(),
        }
    }

    /// Builds pool `name`, carrying counters and health over from `previous`.
    pub fn build_pool(
        &self,
        name: PoolName,
        servers: Vec<Backend>,
        previous: Option<&Pool>,
    ) -> Pool {
        let settings = match previous {
            Some(p) => Arc::new(p.settings().clone()),
            None => Arc::new(PoolSettings {
                check: self.pool_checks.get(&name).unwrap_or(&self.check).clone(),
                passive: self.passive.clone(),
                balance: self.pool_balance.get(&name).copied().unwrap_or_default(),
                protocol: self.pool_protocol.get(&name).copied().unwrap_or_default(),
                grpc_errors: self.grpc_errors,
            }),
        };
        let metrics = self.metrics.pool(name.as_str());
        let cookie = |name: &str, value: &str| {
            HeaderValue::try_from(format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax"))
                .expect("cookie names and pool names are header-safe")
        };
        let generation = previous.map_or(0, |p| p.generation() + 1);
        let version = self.routing.skew.as_ref().map(|skew| {
            let value = format!("{name}.{generation}");
            let header = HeaderValue::try_from(format!(
                "{VERSION_COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                skew.max_age.as_secs().max(1)
            ))
            .expect("pool names are cookie-safe");
            (header, value)
        });
        let cookies = PoolCookies {
            version,
            sticky: cookie(&self.routing.sticky_cookie, name.as_str()),
            preview: self.routing.preview.as_ref().map(|p| match &p.token {
                None => cookie(&p.cookie, name.as_str()),
                Some(t) => cookie(&p.cookie, &format!("{name}:{t}")),
            }),
        };
        Pool::new(name, servers, settings, metrics, previous, cookies)
    }
}

/// The routing state at one moment, immutable: what the data plane loads once per request. A change builds the next one and publishes it.
#[derive(Debug, Clone)]
pub struct RoutingSnapshot {
    /// Bumped by every change; lets operators and scripts tell states apart.
    pub generation: u64,
    /// The split: each pool that takes new clients, with its weight. A switch makes it one
    /// pool at 100.
    pub weights: Weights,
    /// The split before the last change of it: the rollback target.
    pub previous: Option<Weights>,
    /// A/B rules, in order; the first that matches a request picks its pool.
    pub rules: Arc<[Rule]>,
    /// Every pool by name, the active one included.
    pub pools: BTreeMap<PoolName, Arc<Pool>>,
    /// Derived: the pool with the largest weight (the live version, for the health path and
    /// for status).
    pub active: Arc<Pool>,
    /// Derived: the split's pools with their cumulative weights, for the draw.
    pub(crate) split: Box<[Share]>,
    /// Derived: `rules` with their pools resolved.
    pub(crate) compiled: Box<[CompiledRule]>,
    /// When this snapshot was made (or loaded).
    pub changed_at: SystemTime,
    /// The fixed part (never changes after start-up).
    pub env: Arc<Env>,
    /// A fleet switch in progress (see [`FleetMark`]); any other change ends it.
    pub mark: Option<Arc<FleetMark>>,
    /// Shadow traffic (a rollout's mirror phase): a share of requests also sent to a pool, its
    /// answers discarded. Any other change ends it; never persisted.
    pub mirror: Option<Arc<Mirror>>,
    /// Maintenance mode: requests but the health path and `[maintenance]`'s allow-lists get
    /// 503 and the page. Persisted; other changes keep it.
    pub maintenance: Option<Arc<Maintenance>>,
    /// A pause: new requests are held until the resume. Other changes keep it (pause, switch,
    /// resume is the point); never persisted (a restart ends it).
    pub pause: Option<Arc<crate::pause::Pause>>,
}

pub use crate::state::Maintenance;

impl RoutingSnapshot {
    /// What the state file keeps of this snapshot.
    pub fn saved(&self) -> SavedState {
        SavedState {
            generation: self.generation,
            weights: self.weights.clone(),
            previous: self.previous.clone(),
            pools: self
                .pools
                .iter()
                .map(|(name, pool)| {
                    let servers = pool
                        .servers()
                        .iter()
                        .map(|u| Backend {
                            addr: u.addr.clone(),
                            weight: u.weight,
                        })
                        .collect();
                    (name.clone(), servers)
                })
                .collect(),
            rules: Some(self.rules.to_vec()),
            maintenance: self.maintenance.as_deref().cloned(),
            config_pools: Some(self.env.config_pools.clone()),
        }
    }

    /// What `/metrics` shows of this state now (in flight, health, the split, the gates).
    pub fn gauges(&self) -> crate::metrics::Gauges<'_> {
        crate::metrics::Gauges {
            generation: self.generation,
            maintenance: self.maintenance.is_some(),
            pause: self.pause.as_ref().map(|p| p.stats()),
            started_at: self.env.started_at.0,
            pools: self
                .pools
                .iter()
                .map(|(name, pool)| crate::metrics::PoolGauges {
                    name: name.as_str(),
                    in_flight: pool.stats().in_flight(),
                    tunnels: pool.stats().tunnels(),
                    active: Arc::ptr_eq(pool, &self.active),
                    weight: i64::from(self.weights.get(name.as_str())),
                    servers: pool
                        .servers()
                        .iter()
                        .map(|u| (u.addr.as_str(), u.health.available()))
                        .collect(),
                })
                .collect(),
            fleet: None,
        }
    }

    /// Version-skew protection: the pool an asset request goes to because the page it came
    /// from was loaded from that version of it ([`VERSION_COOKIE`]), while that version is
    /// still here (same pool generation), handed that version out to page loads, and has a
    /// server to take it. `None`: route as usual. For an asset request: the caller has found
    /// its path under the skew prefixes (normalising a path once per request is enough).
    #[inline]
    pub fn skew_pool(&self, headers: &http::HeaderMap) -> Option<&Arc<Pool>> {
        let value = crate::decide::cookie_value(headers, VERSION_COOKIE)?;
        let (name, generation) = value.rsplit_once('.')?;
        let pool = self.pools.get(name)?;
        // Only a version this instance handed out (a page load routed to that pool at that
        // generation the ordinary way): a forged cookie cannot reach a staged or dark pool.
        (generation.parse::<u64>().ok()? == pool.generation()
            && pool.has_given_version()
            && pool.available() > 0)
            .then_some(pool)
    }

    /// The maintenance mode a request to `path` from `client` is held to, or `None` when it
    /// passes: no maintenance, an allowed path prefix or client address, or a preview request
    /// (`preview`: the decision came from a valid preview header or cookie).
    #[inline]
    pub fn maintenance_for(
        &self,
        path: &str,
        client: impl FnOnce() -> std::net::IpAddr,
        preview: bool,
    ) -> Option<&Arc<Maintenance>> {
        let m = self.maintenance.as_ref()?;
        let policy = &self.env.maintenance;
        // On the normalised path, segment by segment: `/health/../admin` is not under
        // `/health`, and a path that cannot be normalised is under no prefix.
        if preview || crate::path::under_any(path, &policy.allow_paths) {
            return None;
        }
        if !policy.allow_ips.is_empty() && policy.allow_ips.contains(&client()) {
            return None;
        }
        Some(m)
    }
}

/// Copies of a share of live requests sent to `pool` as well: the client gets only its own
/// pool's answer, and the copy's answer is counted in `pool`'s metrics and thrown away.
#[derive(Debug)]
pub struct Mirror {
    /// The pool the copies go to.
    pub pool: Arc<Pool>,
    /// Of every 100 requests with one of `methods`.
    pub percent: u32,
    /// The methods copied.
    pub methods: Vec<http::Method>,
    /// A request whose body is longer (or of unknown length) is not copied.
    pub max_body: u64,
    /// Copies on their way now; past [`Mirror::MAX_IN_FLIGHT`] a copy is dropped (and
    /// counted), so a target that never answers cannot pile up sockets.
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Dropped with the mirror (the last snapshot holding it): copies still on their way see
    /// their receivers close and end at once.
    ended: tokio::sync::watch::Sender<()>,
}

impl Mirror {
    /// Copies in flight at most, per mirror.
    pub const MAX_IN_FLIGHT: usize = 64;
    /// The most a copy may take, head and body (or the response timeout, if shorter).
    pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

    /// Copies `percent` of the requests with one of `methods` and a body of at most `max_body` bytes to `pool`.
    pub fn new(pool: Arc<Pool>, percent: u32, methods: Vec<http::Method>, max_body: u64) -> Mirror {
        Mirror {
            pool,
            percent,
            methods,
            max_body,
            in_flight: Arc::default(),
            ended: tokio::sync::watch::Sender::new(()),
        }
    }

    /// Resolves once the mirror has ended (no snapshot holds it any more).
    pub fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.ended.subscribe();
        async move { while rx.changed().await.is_ok() {} }
    }

    /// Whether a request with `method` is copied this time (`draw`: a random number).
    #[inline]
    pub fn takes(&self, method: &http::Method, draw: u32) -> bool {
        draw % 100 < self.percent && self.methods.iter().any(|m| m == method)
    }
}

/// The mark of one fleet switch, shared by every instance it prepares, so a client the new
/// version has served on one instance is not sent back to the old one on another that has not
/// committed yet. Prepared here: requests carrying the mark's cookie go to `pool` already.
/// Committed here (`live`): responses from `pool` set the cookie, until `until`.
#[derive(Debug)]
pub struct FleetMark {
    /// The mark's value, in the cookie.
    pub value: String,
    /// The pool a marked request goes to.
    pub pool: Arc<Pool>,
    /// Committed (the mark routes for its window) rather than only prepared.
    pub live: bool,
    /// When it stops routing.
    pub until: std::time::Instant,
    /// The whole `Set-Cookie` value, made once.
    pub set_cookie: http::HeaderValue,
}

/// The cookie that carries a fleet switch's mark.
pub const MARK_COOKIE: &str = "turnout-mark";

impl FleetMark {
    /// The mark `value` for `pool`, routing for `window`.
    pub fn new(value: &str, pool: Arc<Pool>, live: bool, window: std::time::Duration) -> FleetMark {
        let set_cookie = http::HeaderValue::try_from(format!(
            "{MARK_COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
            window.as_secs().max(1)
        ))
        .expect("a mark is validated to be cookie-safe");
        FleetMark {
            value: value.to_owned(),
            pool,
            live,
            until: std::time::Instant::now() + window,
            set_cookie,
        }
    }

    /// Is `value` a usable mark: 1 to 64 of `A-Z a-z 0-9 . _ -`?
    pub fn valid(value: &str) -> bool {
        (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    /// Does the request carry this mark? (No allocation.)
    pub fn carried_by(&self, headers: &http::HeaderMap) -> bool {
        crate::decide::cookie_value(headers, MARK_COOKIE) == Some(self.value.as_str())
    }
}

impl RoutingSnapshot {
    /// The snapshot at start-up: the config's pools and active pool, overridden by the state
    /// file's when there is one (the state file wins: it records what operators did since).
    pub fn bootstrap(
        config: &Config,
        saved: Option<SavedState>,
    ) -> Result<RoutingSnapshot, CoreError> {
        let mut servers = config.pools.clone();
        let mut rules: Arc<[Rule]> = config.routing.rules.clone().into();
        let maintenance = saved
            .as_ref()
            .and_then(|s| s.maintenance.clone())
            .map(Arc::new);
        let (weights, previous, generation) = match saved {
            Some(saved) => {
                if let Some(saved_rules) = saved.rules {
                    rules = saved_rules.into();
                }
                let named = |name: &PoolName| {
                    saved.weights.iter().any(|(n, _)| n == name)
                        || saved
                            .previous
                            .as_ref()
                            .is_some_and(|p| p.iter().any(|(n, _)| n == name))
                        || rules.iter().any(|r| &r.to == name)
                };
                let merged = crate::reload::merge_pools(
                    &config.pools,
                    saved.pools,
                    saved.config_pools.as_ref(),
                    named,
                );
                for note in &merged.notes {
                    tracing::info!(pool = %note.pool, "{}", note.what);
                }
                servers = merged.pools;
                (saved.weights, saved.previous, saved.generation)
            }
            None => (Weights::single(config.routing.active.clone()), None, 0),
        };
        let env = Arc::new(Env::from_config(config));
        let pools: BTreeMap<_, _> = servers
            .into_iter()
            .map(|(name, servers)| {
                let pool = Arc::new(env.build_pool(name.clone(), servers, None));
                (name, pool)
            })
            .collect();
        let placeholder = Arc::clone(
            pools
                .values()
                .next()
                .ok_or_else(|| unknown_pool(&pools, weights.primary().as_str()))?,
        );
        let mut snapshot = RoutingSnapshot {
            generation,
            weights,
            previous,
            rules,
            pools,
            active: placeholder,
            split: Box::default(),
            compiled: Box::default(),
            changed_at: SystemTime::now(),
            env,
            mark: None,
            mirror: None,
            maintenance,
            pause: None,
        };
        snapshot.derive()?;
        Ok(snapshot)
    }

    /// Rebuilds the derived parts (`active`, `split`, compiled rules) from the names, against
    /// the current pools. Fails, naming the pool, when one they name does not exist.
    pub fn derive(&mut self) -> Result<(), CoreError> {
        let mut split = Vec::with_capacity(self.weights.len());
        let mut upto = 0u64;
        for (name, weight) in self.weights.iter() {
            let pool = Arc::clone(self.pool(name.as_str())?);
            upto += u64::from(weight);
            split.push(Share { pool, upto });
        }
        self.active = Arc::clone(self.pool(self.weights.primary().as_str())?);
        self.split = split.into_boxed_slice();
        self.compiled = self
            .rules
            .iter()
            .map(|rule| CompiledRule::new(rule, Arc::clone(self.pool(rule.to.as_str())?)))
            .collect::<Result<_, CoreError>>()?;
        Ok(())
    }

    /// The pool the previous split gave most weight: what a rollback makes primary.
    pub fn previous_primary(&self) -> Option<&PoolName> {
        self.previous.as_ref().map(Weights::primary)
    }

    /// The pool named `name`, or the error listing the pools there are.
    pub fn pool(&self, name: &str) -> Result<&Arc<Pool>, CoreError> {
        self.pools
            .get(name)
            .ok_or_else(|| unknown_pool(&self.pools, name))
    }
}

pub(crate) fn unknown_pool(pools: &BTreeMap<PoolName, Arc<Pool>>, name: &str) -> CoreError {
    CoreError::UnknownPool {
        name: name.to_owned(),
        known: pools
            .keys()
            .map(PoolName::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The handle on the live snapshot: cheap to clone, lock-free to read.
#[derive(Debug, Clone)]
pub struct Router {
    current: Arc<ArcSwap<RoutingSnapshot>>,
    changed: Arc<tokio::sync::watch::Sender<()>>,
    fleet: Arc<crate::fleet::FleetView>,
}

impl Router {
    /// Samples each pool of the live snapshot every [`crate::stats::INTERVAL`] into its
    /// [`crate::stats::Stats`] (the dashboard's series), until the task is aborted.
    pub fn spawn_stats_sampler(&self) -> tokio::task::JoinHandle<()> {
        let router = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::stats::INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let now = tokio::time::Instant::now();
                let snapshot = router.snapshot();
                snapshot.env.stats.sample(&snapshot.pools, now - last);
                last = now;
            }
        })
    }

    /// A router publishing `snapshot` first.
    pub fn new(snapshot: RoutingSnapshot) -> Router {
        Router {
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
            changed: Arc::new(tokio::sync::watch::Sender::new(())),
            fleet: Arc::default(),
        }
    }

    /// What this instance knows of its fleet (`[fleet]`): the health path's hold, generations.
    pub fn fleet(&self) -> &crate::fleet::FleetView {
        &self.fleet
    }

    /// The pool a new request goes to. One snapshot load and one reference-count increment;
    /// no lock, no allocation.
    #[inline]
    pub fn active(&self) -> Arc<Pool> {
        Arc::clone(&self.current.load().active)
    }

    /// The current snapshot, borrowed for a moment (no reference count touched in the common
    /// case): for the request path, which must not hold it across an `.await`.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingSnapshot>> {
        self.current.load()
    }

    /// The whole current snapshot, for readers that hold it across an `.await`.
    pub fn snapshot(&self) -> Arc<RoutingSnapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot: one pointer store. Only [`crate::control::Control`] calls this, under
    /// its writer lock. Tasks that react to changes (the health checker) are woken.
    pub(crate) fn publish(&self, snapshot: Arc<RoutingSnapshot>) {
        self.current.store(snapshot);
        self.changed.send_replace(());
    }

    /// A receiver that is marked changed at every publish.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod mark_tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn mark() -> FleetMark {
        let config = Config::parse(
            "[pools.blue]\nservers=[\"127.0.0.1:3000\"]\n[routing]\nactive=\"blue\"\n",
            std::path::Path::new("t.toml"),
        )
        .expect("config");
        let snap = RoutingSnapshot::bootstrap(&config, None).expect("snapshot");
        FleetMark::new(
            "f1a",
            Arc::clone(&snap.active),
            true,
            Duration::from_secs(30),
        )
    }

    #[test]
    fn the_mark_is_found_among_cookies_and_only_exactly() {
        let m = mark();
        let has = |values: &[&'static str]| {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append(http::header::COOKIE, HeaderValue::from_static(v));
            }
            m.carried_by(&headers)
        };
        assert!(has(&["turnout-mark=f1a"]));
        assert!(has(&["theme=dark", "a=1; turnout-mark=f1a; b=2"]));
        assert!(!has(&["turnout-mark=f1ab"]));
        assert!(!has(&["xturnout-mark=f1a"]));
        assert!(!has(&[]));
        assert_eq!(
            m.set_cookie,
            "turnout-mark=f1a; Path=/; Max-Age=30; HttpOnly; SameSite=Lax"
        );
        assert!(FleetMark::valid("f18a-x_1.2"));
        assert!(!FleetMark::valid(""));
        assert!(!FleetMark::valid("a;b"));
        assert!(!FleetMark::valid(&"x".repeat(65)));
    }
}
