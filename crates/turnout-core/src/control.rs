//! The single writer of the routing state. Every change runs: take the writer lock, load the
//! current snapshot, build the next one, persist it, publish it (one pointer store), log it.
//! The data plane never takes this lock; it only loads the snapshot.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnout_config::ServerAddr;

use crate::pool::Pool;
use crate::snapshot::{Router, RoutingSnapshot};
use crate::state::StateFile;
use crate::{Command, CoreError, StateError};

/// What a fresh probe of one server found: `Ok` or why it failed.
pub type ProbeResult = (ServerAddr, Result<(), String>);

/// Probes every server of a pool now. The data plane implements it (it has the HTTP client);
/// the health gate uses it, so the admin API never needs a socket of its own.
pub trait Probe: Send + Sync + std::fmt::Debug + 'static {
    fn probe(&self, pool: Arc<Pool>) -> Pin<Box<dyn Future<Output = Vec<ProbeResult>> + Send>>;
}

#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    router: Router,
    state: Option<StateFile>,
    prober: Option<Arc<dyn Probe>>,
    /// An async mutex because it is held across the state file write (done on the blocking
    /// pool); it only orders writers, never readers.
    writer: tokio::sync::Mutex<()>,
}

impl Control {
    pub fn new(router: Router, state: Option<StateFile>) -> Control {
        Control::with_prober(router, state, None)
    }

    /// With a prober, switches and rollbacks are health-gated.
    pub fn with_prober(
        router: Router,
        state: Option<StateFile>,
        prober: Option<Arc<dyn Probe>>,
    ) -> Control {
        Control {
            inner: Arc::new(Inner {
                router,
                state,
                prober,
                writer: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Applies `command`. A switch or rollback first probes every server of its target pool
    /// (unless `force`, or the pool's checks are off) and is refused when none is healthy. On
    /// success the new snapshot is live (or, for a command that changes nothing, the current
    /// one is returned). On error nothing changed.
    pub async fn apply(
        &self,
        command: Command,
        force: bool,
    ) -> Result<Arc<RoutingSnapshot>, CoreError> {
        if !force {
            self.gate(&command).await?;
        }
        let _writer = self.inner.writer.lock().await;
        let current = self.inner.router.snapshot();
        let Some(next) = command.apply(&current)? else {
            tracing::info!(target: "turnout::admin", %command, generation = current.generation, "no change");
            return Ok(current);
        };
        if let Some(state) = &self.inner.state {
            let bytes = StateFile::render(&next);
            let state = state.clone();
            tokio::task::spawn_blocking(move || state.write(&bytes))
                .await
                .expect("the state file writer does not panic")
                .map_err(|e| match e {
                    StateError::Write { path, source } | StateError::Read { path, source } => {
                        CoreError::Persist { path, source }
                    }
                    StateError::Corrupt { path, detail } => CoreError::Persist {
                        path,
                        source: std::io::Error::other(detail),
                    },
                })?;
        }
        let next = Arc::new(next);
        self.inner.router.publish(Arc::clone(&next));
        match command {
            Command::Switch { .. } => next.env.metrics.switches.inc(),
            Command::Rollback => next.env.metrics.rollbacks.inc(),
            Command::PutPool { .. } => {}
        }
        tracing::info!(
            target: "turnout::admin",
            %command,
            generation = next.generation,
            active = %next.active.name(),
            previous = next.previous.as_ref().map(|p| p.as_str()).unwrap_or("-"),
            "routing changed"
        );
        Ok(next)
    }
}

impl Control {
    /// The health gate: probe the pool `command` would make active, record what was found,
    /// and refuse when no server passed.
    async fn gate(&self, command: &Command) -> Result<(), CoreError> {
        let Some(prober) = &self.inner.prober else {
            return Ok(());
        };
        let current = self.inner.router.snapshot();
        let target = match command {
            Command::Switch { to } => Arc::clone(current.pool(to)?),
            Command::Rollback => {
                let prev = current.previous.as_ref().ok_or(CoreError::NoPrevious)?;
                Arc::clone(current.pool(prev.as_str())?)
            }
            Command::PutPool { .. } => return Ok(()),
        };
        if Arc::ptr_eq(&target, &current.active) || !target.settings().check.enabled {
            return Ok(());
        }
        let results = prober.probe(Arc::clone(&target)).await;
        let mut failures = Vec::new();
        for (addr, result) in &results {
            if let Some(server) = target.servers().iter().find(|u| &u.addr == addr) {
                server.health.record_check(result);
                if server.health.set_up(result.is_ok()) {
                    tracing::info!(
                        pool = %target.name(),
                        server = %addr,
                        healthy = result.is_ok(),
                        error = result.as_ref().err().map(String::as_str).unwrap_or(""),
                        "server health changed (probe before a switch)"
                    );
                }
            }
            if let Err(why) = result {
                failures.push(format!("{addr}: {why}"));
            }
        }
        if results.iter().any(|(_, r)| r.is_ok()) {
            return Ok(());
        }
        if failures.is_empty() {
            failures.push("it has no servers".into());
        }
        let err = CoreError::Unhealthy {
            pool: target.name().to_string(),
            failures,
        };
        tracing::warn!(target: "turnout::admin", %command, error = %err, "refused");
        Err(err)
    }

    /// Waits until `pool` has no request or tunnel in flight, or `limit` has passed; true when
    /// drained. Polls every 10 ms: the request path pays nothing for it.
    pub async fn wait_drained(&self, pool: &Pool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let stats = pool.stats();
            if stats.in_flight() == 0 && stats.tunnels() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use turnout_config::Config;

    fn router() -> Router {
        let config = Config::parse(
            "[pools.blue]\nservers=[\"127.0.0.1:3000\"]\n[pools.green]\nservers=[\"127.0.0.1:4000\"]\n\
             [routing]\nactive=\"blue\"\n",
            Path::new("t.toml"),
        )
        .expect("config");
        Router::new(RoutingSnapshot::bootstrap(&config, None).expect("snapshot"))
    }

    #[tokio::test]
    async fn apply_publishes_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path().join("state.json"));
        let control = Control::new(router(), Some(file.clone()));
        let before = control.router().active();
        control
            .apply(Command::Switch { to: "green".into() }, false)
            .await
            .expect("switch");
        assert_eq!(control.router().active().name().as_str(), "green");
        assert_eq!(
            before.name().as_str(),
            "blue",
            "a loaded pool is never changed"
        );
        let saved = file.load().expect("load").expect("written");
        assert_eq!((saved.active.as_str(), saved.generation), ("green", 1));
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: the rename fails.
        let path = dir.path().join("state.json");
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::write(path.join("x"), "x").expect("fill");
        let control = Control::new(router(), Some(StateFile::new(&path)));
        let e = control
            .apply(Command::Switch { to: "green".into() }, false)
            .await
            .expect_err("must fail");
        assert!(matches!(e, CoreError::Persist { .. }), "{e}");
        let snap = control.router().snapshot();
        assert_eq!((snap.active.name().as_str(), snap.generation), ("blue", 0));
    }
}
