//! The single writer of the routing state. Every change runs: take the writer lock, load the
//! current snapshot, build the next one, persist it, publish it (one pointer store), log it.
//! The data plane never takes this lock; it only loads the snapshot. The services composed over
//! this writer live beside it: the two-phase switch (`two_phase.rs`) and the guarded rollouts
//! (`crate::rollouts`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, so the timed rules here (a prepared switch's expiry, the drain's wait) run
// under paused time in tests.
use tokio::time::Instant;

use turnout_config::ServerAddr;

use crate::command::Command;
use crate::error::CoreError;
use crate::error::StateError;
use crate::pool::Pool;
use crate::snapshot::{FleetMark, Router, RoutingSnapshot};
use crate::state::StateFile;

mod two_phase;

pub use crate::handles::{CacheAdmin, CacheStats, CertInfo, TlsAdmin, TlsReloadError};
pub use two_phase::{Prepared, PreparedStatus, TwoPhase};

/// What a fresh probe of one server found: `Ok` or why it failed.
pub type ProbeResult = (ServerAddr, Result<(), String>);

/// Probes every server of a pool now. The data plane implements it (it has the HTTP client);
/// the health gate uses it, so the admin API never needs a socket of its own.
pub trait Probe: Send + Sync + std::fmt::Debug + 'static {
    /// Probes every server of `pool`, each result saying why it failed.
    fn probe(&self, pool: Arc<Pool>) -> Pin<Box<dyn Future<Output = Vec<ProbeResult>> + Send>>;
}

/// The single writer of the routing state: every change goes through it (validated, persisted, published, logged); the admin API holds one, the data plane none. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    router: Router,
    state: Option<StateFile>,
    prober: Option<Arc<dyn Probe>>,
    /// The data plane's cache.
    cache: Option<Arc<dyn CacheAdmin>>,
    /// The HTTPS listener's certificates, when there is such a listener.
    tls: Option<Arc<dyn TlsAdmin>>,
    /// A switch probed by `prepare` and waiting for its `commit` (one at a time).
    staged: std::sync::Mutex<Option<two_phase::Staged>>,
    rollout_policy: turnout_config::rollout::RolloutPolicy,
    /// The guarded rollout under way, and the last ones.
    rollouts: crate::rollout::book::RolloutBook,
    /// Runs a rollout step's `check_cmd` (the binary's `sh -c`).
    step_check: Option<Arc<dyn crate::rollout::book::StepCheck>>,
    /// An async mutex because it is held across the state file write (done on the blocking
    /// pool); it only orders writers, never readers.
    writer: tokio::sync::Mutex<()>,
    /// Set while another process takes this one's place (an in-place upgrade): every change is
    /// refused, so exactly one process writes the state file. Holds what the refusal says.
    frozen: std::sync::Mutex<Option<String>>,
}

/// What `Control` reaches besides the routing state, all given at construction.
#[derive(Debug, Default)]
pub struct Handles {
    /// With a prober, switches and rollbacks are health-gated.
    pub prober: Option<Arc<dyn Probe>>,
    /// The data plane's cache, for `DELETE /v1/cache` and the status.
    pub cache: Option<Arc<dyn CacheAdmin>>,
    /// The HTTPS listener's certificates, for `POST /v1/tls/reload` and the status.
    pub tls: Option<Arc<dyn TlsAdmin>>,
    /// `[rollout]`: what a rollout does unless its call says otherwise.
    pub rollout: turnout_config::rollout::RolloutPolicy,
    /// Runs a rollout step's `check_cmd`; without it, a rollout with one fails its step.
    pub step_check: Option<Arc<dyn crate::rollout::book::StepCheck>>,
}

impl Control {
    /// Routing state only: no probes, no cache, no TLS (tests and benches).
    pub fn new(router: Router, state: Option<StateFile>) -> Control {
        Control::with(router, state, Handles::default())
    }

    /// The writer over `router`, persisting to `state`, with the handles it administers.
    pub fn with(router: Router, state: Option<StateFile>, handles: Handles) -> Control {
        let Handles {
            prober,
            cache,
            tls,
            rollout,
            step_check,
        } = handles;
        Control {
            inner: Arc::new(Inner {
                router,
                state,
                prober,
                cache,
                tls,
                staged: std::sync::Mutex::new(None),
                rollouts: Default::default(),
                rollout_policy: rollout,
                step_check,
                writer: tokio::sync::Mutex::new(()),
                frozen: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The routing state it writes.
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// `[rollout]` from the config: the policy a rollout call overrides field by field.
    pub fn rollout_policy(&self) -> &turnout_config::rollout::RolloutPolicy {
        &self.inner.rollout_policy
    }

    pub(crate) fn book(&self) -> &crate::rollout::book::RolloutBook {
        &self.inner.rollouts
    }

    /// What runs a rollout step's `check_cmd`, if the binary gave one.
    pub(crate) fn step_check(&self) -> Option<&Arc<dyn crate::rollout::book::StepCheck>> {
        self.inner.step_check.as_ref()
    }

    pub(crate) fn state_file(&self) -> Option<&StateFile> {
        self.inner.state.as_ref()
    }

    /// The data plane's cache, if it was given one.
    pub fn cache(&self) -> Option<&Arc<dyn CacheAdmin>> {
        self.inner.cache.as_ref()
    }

    /// The HTTPS listener's certificates, if there is such a listener.
    pub fn tls(&self) -> Option<&Arc<dyn TlsAdmin>> {
        self.inner.tls.as_ref()
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
        self.write(command, None, None).await
    }

    /// The write itself, under the writer lock; with `expect`, only if the generation is still
    /// that one (else nothing changes); with `live_mark` (value, window), the new snapshot
    /// carries that fleet mark, live.
    async fn write(
        &self,
        command: Command,
        expect: Option<(&str, u64)>,
        live_mark: Option<(&str, Duration)>,
    ) -> Result<Arc<RoutingSnapshot>, CoreError> {
        let _writer = self.inner.writer.lock().await;
        self.refuse_if_frozen()?;
        let current = self.inner.router.snapshot();
        if let Some((token, prepared)) = expect {
            if current.generation != prepared {
                return Err(CoreError::Moved {
                    token: token.to_string(),
                    prepared,
                    now: current.generation,
                });
            }
        }
        let Some(mut next) = command.apply(&current)? else {
            tracing::info!(target: "turnout::admin", %command, generation = current.generation, "no change");
            return Ok(current);
        };
        if let Some((value, window)) = live_mark {
            next.mark = Some(Arc::new(FleetMark::new(
                value,
                Arc::clone(&next.active),
                true,
                window,
            )));
        }
        if let Some(state) = &self.inner.state {
            let bytes = StateFile::render(&next.saved(), next.changed_at);
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
        // After the publish: a released request routes against the new state.
        if let (Some(pause), None) = (&current.pause, &next.pause) {
            pause.release();
        }
        match command {
            Command::Switch { .. } | Command::Split { .. } => next.env.metrics.switches.inc(),
            Command::Rollback => next.env.metrics.rollbacks.inc(),
            Command::PutPool { .. }
            | Command::SetRules { .. }
            | Command::Mirror { .. }
            | Command::Maintenance { .. }
            | Command::Pause { .. }
            | Command::Resume => {}
        }
        let kind = match command {
            Command::Switch { .. } => "switch",
            Command::Split { .. } => "split",
            Command::Rollback => "rollback",
            Command::PutPool { .. } => "pool",
            Command::SetRules { .. } => "rules",
            Command::Mirror { .. } => "mirror",
            Command::Maintenance { .. } => "maintenance",
            Command::Pause { .. } => "pause",
            Command::Resume => "resume",
        };
        next.env.events.push(
            kind,
            format!(
                "{command}: {} live (generation {})",
                next.active.name(),
                next.generation
            ),
        );
        tracing::info!(
            target: "turnout::admin",
            %command,
            generation = next.generation,
            active = %next.active.name(),
            weights = %next.weights,
            previous = %next.previous.as_ref().map_or_else(|| "-".to_string(), ToString::to_string),
            "routing changed"
        );
        Ok(next)
    }
}

impl Control {
    /// Stops every change from now on (waiting for one under way to be written first), so that
    /// another process can read the state file and own it: each change is refused with
    /// [`CoreError::Upgrading`] saying `detail`, until [`Control::thaw`].
    pub async fn freeze(&self, detail: String) {
        let _writer = self.inner.writer.lock().await;
        *self.frozen() = Some(detail);
    }

    /// [`Control::freeze`], unless `refuse` (run under the writer lock, so no change can slip
    /// in between the check and the freeze) gives a reason not to, which is answered.
    pub async fn freeze_unless(
        &self,
        detail: String,
        refuse: impl FnOnce(&Control) -> Option<String>,
    ) -> Result<(), String> {
        let _writer = self.inner.writer.lock().await;
        if let Some(why) = refuse(self) {
            return Err(why);
        }
        *self.frozen() = Some(detail);
        Ok(())
    }

    /// Takes changes again (the other process did not take over).
    pub fn thaw(&self) {
        *self.frozen() = None;
    }

    /// `Err(Upgrading)` while frozen.
    pub fn refuse_if_frozen(&self) -> Result<(), CoreError> {
        match &*self.frozen() {
            Some(detail) => Err(CoreError::Upgrading {
                detail: detail.clone(),
            }),
            None => Ok(()),
        }
    }

    fn frozen(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // Only ever replaced whole: a poisoned lock still holds a whole value.
        self.inner
            .frozen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Records what a probe of `target` found on each server (as an active check would).
fn record_probe(target: &Pool, results: &[ProbeResult], why: &str) {
    for (addr, result) in results {
        if let Some(server) = target.servers().iter().find(|u| &u.addr == addr) {
            server.health.record_check(result);
            if server.health.set_up(result.is_ok()) {
                tracing::info!(
                    pool = %target.name(),
                    server = %addr,
                    healthy = result.is_ok(),
                    error = result.as_ref().err().map(String::as_str).unwrap_or(""),
                    "server health changed ({why})"
                );
            }
        }
    }
}

impl Control {
    /// Probes every server of pool `name` now, as a switch to it would (the health path, on a
    /// fresh connection), and records what it finds; the routing does not change. Empty when
    /// this turnout has no prober (a library user's).
    pub async fn probe_pool(&self, name: &str) -> Result<Vec<ProbeResult>, CoreError> {
        let target = Arc::clone(self.inner.router.snapshot().pool(name)?);
        let Some(prober) = &self.inner.prober else {
            return Ok(Vec::new());
        };
        let results = prober.probe(Arc::clone(&target)).await;
        record_probe(&target, &results, "probe");
        Ok(results)
    }

    /// The health gate: probe each pool `command` would send a larger share of new clients to
    /// (or a new rule would send to), record what was found, and refuse when one of them has no
    /// server that passed.
    pub(crate) async fn gate(&self, command: &Command) -> Result<(), CoreError> {
        let Some(prober) = &self.inner.prober else {
            return Ok(());
        };
        let current = self.inner.router.snapshot();
        if matches!(command, Command::PutPool { .. }) {
            return Ok(());
        }
        let Some(next) = command.apply(&current)? else {
            return Ok(());
        };
        for target in Command::gaining(&current, &next) {
            if target.settings().check.enabled {
                self.probe_one(prober.as_ref(), command, &target).await?;
            }
        }
        Ok(())
    }

    async fn probe_one(
        &self,
        prober: &dyn Probe,
        command: &Command,
        target: &Arc<Pool>,
    ) -> Result<(), CoreError> {
        let results = prober.probe(Arc::clone(target)).await;
        record_probe(target, &results, "probe before a switch");
        let mut failures = Vec::new();
        for (addr, result) in &results {
            if let Err(why) = result {
                failures.push(format!("{addr}: {why}"));
            }
        }
        let gate = target.settings().check.gate;
        let total = target.servers().len();
        let needed = gate.needed(total);
        let passed = results.iter().filter(|(_, r)| r.is_ok()).count();
        if passed >= needed && passed > 0 {
            return Ok(());
        }
        if failures.is_empty() {
            failures.push("it has no servers".into());
        }
        let pool = target.name().to_string();
        let err = if passed == 0 {
            CoreError::Unhealthy { pool, failures }
        } else {
            CoreError::GateNotMet {
                pool,
                gate: gate.to_string(),
                passed,
                total,
                needed,
                failures,
            }
        };
        tracing::warn!(target: "turnout::admin", %command, error = %err, "refused");
        Err(err)
    }

    /// After `after`, closes the tunnels of every pool in `pools` that still takes no new
    /// clients then (a switch's `close_tunnels_after`: a deploy script knows when the old
    /// container can stop while WebSockets stay open). In the background.
    pub fn close_tunnels_after(&self, pools: Vec<Arc<Pool>>, after: Duration) {
        let router = self.inner.router.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let now = router.snapshot();
            for pool in pools {
                if let Some(why) = crate::command::in_use(&now, pool.name()) {
                    tracing::info!(pool = %pool.name(), why, "tunnels left open: the pool serves again");
                    continue;
                }
                let open = pool.close_tunnels();
                tracing::info!(target: "turnout::admin", pool = %pool.name(), tunnels = open, "closing the old pool's tunnels (close_tunnels_after)");
            }
        });
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
    async fn a_freeze_is_refused_by_a_check_made_under_the_writer_lock() {
        let control = Control::new(router(), None);
        let paused = |c: &Control| {
            c.router()
                .snapshot()
                .pause
                .as_ref()
                .map(|_| "a pause is on".to_owned())
        };
        control
            .apply(Command::Pause { max_hold: None }, false)
            .await
            .expect("pause");
        assert_eq!(
            control.freeze_unless("upgrading".into(), paused).await,
            Err("a pause is on".into())
        );
        assert!(control.refuse_if_frozen().is_ok(), "not frozen");
        control.apply(Command::Resume, false).await.expect("resume");
        control
            .freeze_unless("upgrading".into(), paused)
            .await
            .expect("nothing to refuse it");
        assert!(matches!(
            control
                .apply(Command::Pause { max_hold: None }, false)
                .await,
            Err(CoreError::Upgrading { .. })
        ));
        control.thaw();
        control
            .apply(Command::Switch { to: "green".into() }, false)
            .await
            .expect("changes land again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_prepared_switch_expires_at_its_ttl_and_not_before() {
        let control = Control::new(router(), None);
        let switch = || Command::Switch { to: "green".into() };
        let ttl = Duration::from_secs(10);
        let p = control
            .two_phase()
            .prepare(switch(), ttl, None)
            .await
            .expect("prepare");
        tokio::time::advance(Duration::from_millis(9_990)).await;
        assert!(
            control.two_phase().prepared().is_some(),
            "still pending just before its ttl"
        );
        control
            .two_phase()
            .commit(&p.token)
            .await
            .expect("commit within the ttl");
        assert_eq!(control.router().active().name().as_str(), "green");

        let back = Command::Switch { to: "blue".into() };
        let p = control
            .two_phase()
            .prepare(back, ttl, None)
            .await
            .expect("prepare");
        tokio::time::advance(ttl + Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        assert!(
            control.two_phase().prepared().is_none(),
            "expired by itself"
        );
        assert!(matches!(
            control.two_phase().commit(&p.token).await,
            Err(CoreError::NotPrepared { .. })
        ));
        assert_eq!(
            control.router().active().name().as_str(),
            "green",
            "nothing changed"
        );
        // A new prepare is taken once the old one has expired.
        control
            .two_phase()
            .prepare(switch(), ttl, None)
            .await
            .expect("a prepare after the expiry");
    }

    /// A commit that arrives after the time to live, before the expiry's own task has run,
    /// expires the prepare itself: refused, and its fleet mark taken back at once (a mark left
    /// behind would send marked clients to the pool of a switch that never happened).
    #[tokio::test(start_paused = true)]
    async fn a_late_commit_that_beats_the_expiry_task_still_takes_the_mark_back() {
        let control = Control::new(router(), None);
        let ttl = Duration::from_secs(10);
        let p = control
            .two_phase()
            .prepare(Command::Switch { to: "green".into() }, ttl, Some("f1"))
            .await
            .expect("prepare");
        assert!(
            control.router().snapshot().mark.is_some(),
            "the mark is armed"
        );
        // Past the ttl, without yielding: the expiry task has not run.
        tokio::time::advance(ttl + Duration::from_millis(1)).await;
        assert!(matches!(
            control.two_phase().commit(&p.token).await,
            Err(CoreError::NotPrepared { .. })
        ));
        assert!(
            control.router().snapshot().mark.is_none(),
            "the mark went with the expired prepare"
        );
        assert_eq!(control.router().active().name().as_str(), "blue");
        // The expiry task then finds nothing left to do.
        tokio::task::yield_now().await;
        assert!(control.two_phase().prepared().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_drained_waits_for_the_last_request_or_its_limit() {
        let control = Control::new(router(), None);
        let blue = control.router().active();
        let in_flight = blue.begin_request();
        let started = Instant::now();
        assert!(!control.wait_drained(&blue, Duration::from_secs(30)).await);
        assert!(started.elapsed() >= Duration::from_secs(30));
        let waiter = {
            let (control, blue) = (control.clone(), Arc::clone(&blue));
            tokio::spawn(async move { control.wait_drained(&blue, Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_secs(12)).await;
        drop(in_flight);
        let started = Instant::now();
        assert!(
            waiter.await.expect("join"),
            "drained once the request ended"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
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
        assert_eq!(
            (saved.weights.to_string(), saved.generation),
            ("green=100".into(), 1)
        );
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
