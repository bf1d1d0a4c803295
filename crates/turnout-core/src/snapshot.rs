//! The routing snapshot and the [`Router`] that publishes it.
//!
//! A snapshot is immutable: a change builds a new one off the hot path and publishes it with one
//! pointer store. A request loads the snapshot once, takes the `Arc<Pool>` it routes to, and keeps
//! that pool to the end, so a switch never moves a request, stream or tunnel already under way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use turnout_config::{Config, HealthCheck, Passive, PoolName, ServerAddr};

use crate::metrics::Metrics;
use crate::pool::{Pool, PoolSettings};
use crate::state::SavedState;
use crate::CoreError;

/// What every version of the routing state shares: the settings a new pool is built with and
/// the metrics registry. Fixed for the life of the process.
#[derive(Debug, Default)]
pub struct Env {
    /// `[health]`, for pools without their own.
    pub check: HealthCheck,
    /// `[pools.NAME.health]`, merged over `[health]`.
    pub pool_checks: BTreeMap<PoolName, HealthCheck>,
    pub passive: Passive,
    pub metrics: Metrics,
}

impl Env {
    pub fn from_config(config: &Config) -> Env {
        Env {
            check: config.health.clone(),
            pool_checks: config.pool_health.clone(),
            passive: config.passive.clone(),
            metrics: Metrics::new(),
        }
    }

    /// Builds pool `name`, carrying counters and health over from `previous`.
    pub fn build_pool(
        &self,
        name: PoolName,
        servers: Vec<ServerAddr>,
        previous: Option<&Pool>,
    ) -> Pool {
        let settings = match previous {
            Some(p) => Arc::new(p.settings().clone()),
            None => Arc::new(PoolSettings {
                check: self.pool_checks.get(&name).unwrap_or(&self.check).clone(),
                passive: self.passive.clone(),
            }),
        };
        let metrics = self.metrics.pool(name.as_str());
        Pool::new(name, servers, settings, metrics, previous)
    }
}

#[derive(Debug, Clone)]
pub struct RoutingSnapshot {
    /// Bumped by every change; lets operators and scripts tell states apart.
    pub generation: u64,
    /// The pool new requests go to.
    pub active: Arc<Pool>,
    /// The pool that was active before the last switch: the rollback target.
    pub previous: Option<PoolName>,
    /// Every pool by name, the active one included.
    pub pools: BTreeMap<PoolName, Arc<Pool>>,
    /// When this snapshot was made (or loaded).
    pub changed_at: SystemTime,
    pub env: Arc<Env>,
}

impl RoutingSnapshot {
    /// The snapshot at start-up: the config's pools and active pool, overridden by the state
    /// file's when there is one (the state file wins: it records what operators did since).
    pub fn bootstrap(
        config: &Config,
        saved: Option<SavedState>,
    ) -> Result<RoutingSnapshot, CoreError> {
        let mut servers = config.pools.clone();
        let (active, previous, generation) = match saved {
            Some(saved) => {
                servers.extend(saved.pools);
                (saved.active, saved.previous, saved.generation)
            }
            None => (config.routing.active.clone(), None, 0),
        };
        let env = Arc::new(Env::from_config(config));
        let pools: BTreeMap<_, _> = servers
            .into_iter()
            .map(|(name, servers)| {
                let pool = Arc::new(env.build_pool(name.clone(), servers, None));
                (name, pool)
            })
            .collect();
        let active = pools
            .get(&active)
            .cloned()
            .ok_or_else(|| unknown_pool(&pools, active.as_str()))?;
        Ok(RoutingSnapshot {
            generation,
            active,
            previous,
            pools,
            changed_at: SystemTime::now(),
            env,
        })
    }

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
}

impl Router {
    pub fn new(snapshot: RoutingSnapshot) -> Router {
        Router {
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
            changed: Arc::new(tokio::sync::watch::Sender::new(())),
        }
    }

    /// The pool a new request goes to. One snapshot load and one reference-count increment;
    /// no lock, no allocation.
    #[inline]
    pub fn active(&self) -> Arc<Pool> {
        Arc::clone(&self.current.load().active)
    }

    /// The whole current snapshot, for readers that hold it across an `.await`.
    pub fn snapshot(&self) -> Arc<RoutingSnapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot: one pointer store. Only [`crate::Control`] calls this, under
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
