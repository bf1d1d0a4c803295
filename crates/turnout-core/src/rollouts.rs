//! Running a guarded rollout: each step's split applied through [`Control`], baked, judged on
//! the pools' own counters, and on a failed check (or an abort) the way back to the baseline at
//! once. One rollout at a time; the last few are kept for `GET /v1/rollout`. A marker file
//! beside the state file says a rollout is under way, so a turnout that stopped half-way goes
//! back to the baseline when it starts again instead of staying split.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

// tokio's clock: the bake, the rechecks and a hold's deadline run under paused time in tests.
use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use turnout_config::rollout::RolloutPolicy;

use crate::command::Command;
use crate::control::Control;
use crate::error::CoreError;
use crate::rollout::book::FleetLease;
pub use crate::rollout::book::{LeaseReport, RolloutReport, RolloutRequest, StepCheck, StepReport};
use crate::rollout::{judge, Verdict};

/// How often a step is judged while it bakes, and while it waits for enough requests.
const RECHECK: Duration = Duration::from_millis(500);

/// The marker a rollout under way leaves beside the state file.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    id: u64,
    target: String,
    baseline: String,
    started_at: String,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The guarded rollouts of one [`Control`] ([`Control::rollouts`]): a named service over its
/// one writer, owning the rollouts' book, their marker file beside the state file, and the
/// step check it is given.
#[derive(Debug, Clone)]
pub struct Rollouts {
    control: Control,
}

impl Control {
    /// The guarded rollouts over this writer.
    pub fn rollouts(&self) -> Rollouts {
        Rollouts {
            control: self.clone(),
        }
    }
}

impl Rollouts {
    /// The rollout under way, if any.
    pub fn current(&self) -> Option<RolloutReport> {
        self.control
            .book()
            .lock()
            .current
            .as_ref()
            .map(|(r, _)| r.clone())
    }

    /// The ended rollouts, newest first.
    pub fn history(&self) -> Vec<RolloutReport> {
        self.control.book().lock().history.iter().cloned().collect()
    }

    /// Starts a rollout of `req.to` from the pool now active, and answers its first report; the
    /// steps run on a task of their own. Refused while another runs, for an unknown or empty
    /// pool, for the pool already active, and (unless forced) when a fresh probe finds no
    /// healthy server in it.
    pub async fn start(&self, req: RolloutRequest) -> Result<RolloutReport, CoreError> {
        self.control.refuse_if_frozen()?;
        let snapshot = self.control.router().snapshot();
        let target = snapshot.pool(&req.to)?;
        if target.servers().is_empty() {
            return Err(CoreError::EmptyPool {
                name: req.to.clone(),
            });
        }
        let baseline = snapshot.active.name().to_string();
        if baseline == req.to {
            return Err(CoreError::Invalid(format!(
                "pool {:?} is already the active pool: there is nothing to roll out",
                req.to
            )));
        }
        if !req.force {
            self.control
                .gate(&Command::Switch { to: req.to.clone() })
                .await?;
        }
        let abort = Arc::new(tokio::sync::Notify::new());
        let report = {
            let mut book = self.control.book().lock();
            if let Some((running, _)) = &book.current {
                return Err(CoreError::RolloutRunning {
                    id: running.id,
                    target: running.target.clone(),
                    percent: running.percent,
                });
            }
            book.next_id += 1;
            let report = RolloutReport {
                id: book.next_id,
                target: req.to.clone(),
                baseline: baseline.clone(),
                outcome: "running",
                percent: 0,
                policy: req.policy.clone(),
                started_at: now_rfc3339(),
                finished_at: None,
                steps: Vec::new(),
                reason: None,
                drained: None,
                took_ms: None,
                paused: false,
                baking: None,
            };
            book.current = Some((report.clone(), Arc::clone(&abort)));
            report
        };
        let marker = Marker {
            id: report.id,
            target: report.target.clone(),
            baseline: report.baseline.clone(),
            started_at: report.started_at.clone(),
        };
        if let Err(e) = self.write_marker(&marker).await {
            self.control.book().lock().current = None;
            return Err(e);
        }
        tracing::info!(target: "turnout::admin", id = report.id, to = %req.to, from = %baseline, steps = ?req.policy.steps, bake = ?req.policy.bake, "rollout started");
        let control = self.clone();
        let id = report.id;
        let (first_step, applied) = tokio::sync::oneshot::channel();
        let by = crate::events::actor();
        self.control.router().snapshot().env.events.push(
            "rollout",
            format!(
                "rollout {id} of {} started by {by}: steps {:?}, bake {} each; new clients go back to {} on a failed check",
                req.to,
                req.policy.steps,
                humantime::format_duration(req.policy.bake),
                baseline
            ),
        );
        // The guard's own changes (its steps, a rollback) are the rollout guard's in the events.
        tokio::spawn(
            crate::events::ACTOR.scope("rollout guard".to_owned(), async move {
                control.run_rollout(report, req, abort, first_step).await
            }),
        );
        // Answer once the first step is live (or has failed), so the answer and the status
        // agree with what clients get.
        let _ = applied.await;
        Ok(self
            .current()
            .filter(|r| r.id == id)
            .or_else(|| self.history().into_iter().find(|r| r.id == id))
            .expect("a rollout is under way or in the history"))
    }

    /// Holds the rollout under way at its step (`paused`), or lets it go on: while paused a
    /// step neither passes nor fails for too few requests, but a failing check still sends
    /// every new client back to the baseline.
    pub fn pause(&self, paused: bool) -> Result<RolloutReport, CoreError> {
        let mut book = self.control.book().lock();
        match book.current.as_mut() {
            Some((report, _)) => {
                report.paused = paused;
                tracing::info!(target: "turnout::admin", id = report.id, paused, "rollout {}", if paused { "paused" } else { "resumed" });
                Ok(report.clone())
            }
            None => Err(CoreError::NoRollout),
        }
    }

    /// Stops the rollout under way and sends every new client back to its baseline.
    pub fn abort(&self) -> Result<RolloutReport, CoreError> {
        match &self.control.book().lock().current {
            Some((report, abort)) => {
                abort.notify_one();
                self.control.router().snapshot().env.events.push(
                    "rollout",
                    format!(
                        "rollout {} of {} aborted at {}% by {}; new clients go back to {}",
                        report.id,
                        report.target,
                        report.percent,
                        crate::events::actor(),
                        report.baseline
                    ),
                );
                Ok(report.clone())
            }
            None => Err(CoreError::NoRollout),
        }
    }

    /// Takes or renews a fleet rollout's hold: unless renewed within `ttl`, every new client
    /// goes back to `baseline`. Refused for an unknown pool, and while a hold for another
    /// baseline is in place.
    pub async fn lease(&self, baseline: &str, ttl: Duration) -> Result<LeaseReport, CoreError> {
        self.control.router().snapshot().pool(baseline)?;
        let deadline = Instant::now() + ttl;
        let created = {
            let mut book = self.control.book().lock();
            match &mut book.hold {
                Some(hold) if hold.baseline == baseline => {
                    hold.deadline = deadline;
                    None
                }
                Some(hold) => {
                    return Err(CoreError::Invalid(format!(
                        "a fleet rollout holds this instance for baseline {:?}; release it first (DELETE /v1/rollout/hold)",
                        hold.baseline
                    )))
                }
                None => {
                    book.next_id += 1;
                    let hold = FleetLease {
                        id: book.next_id,
                        baseline: baseline.to_string(),
                        deadline,
                        started_at: now_rfc3339(),
                    };
                    let marker = Marker {
                        id: hold.id,
                        target: "(fleet rollout)".into(),
                        baseline: hold.baseline.clone(),
                        started_at: hold.started_at.clone(),
                    };
                    let id = hold.id;
                    book.hold = Some(hold);
                    Some((id, marker))
                }
            }
        };
        if let Some((id, marker)) = created {
            if let Err(e) = self.write_marker(&marker).await {
                self.control.book().lock().hold = None;
                return Err(e);
            }
            tracing::info!(target: "turnout::admin", baseline, ttl_ms = ttl.as_millis() as u64, "a fleet rollout holds this instance");
            let control = self.clone();
            tokio::spawn(async move { control.watch_lease(id).await });
        }
        Ok(LeaseReport {
            baseline: baseline.to_string(),
            expires_in_ms: ttl.as_millis() as u64,
        })
    }

    /// Ends the fleet rollout's hold (its coordinator is done): the routing stays as it is.
    /// Answers whether there was one.
    pub async fn release_lease(&self) -> bool {
        let released = self.control.book().lock().hold.take().is_some();
        if released {
            self.remove_marker().await;
            tracing::info!(target: "turnout::admin", "the fleet rollout released this instance");
        }
        released
    }

    /// The hold's watchdog: back to the baseline when its coordinator stops renewing it.
    async fn watch_lease(&self, id: u64) {
        loop {
            // `Ok(deadline)`: renewed, sleep on; `Err(Some(hold))`: ran out; `Err(None)`:
            // released, or another hold took its place.
            let next = {
                let mut book = self.control.book().lock();
                match &book.hold {
                    Some(hold) if hold.id == id && Instant::now() < hold.deadline => {
                        Ok(hold.deadline)
                    }
                    Some(hold) if hold.id == id => Err(book.hold.take()),
                    _ => Err(None),
                }
            };
            match next {
                Ok(deadline) => tokio::time::sleep_until(deadline).await,
                Err(Some(hold)) => return self.lease_expired(hold).await,
                Err(None) => return,
            }
        }
    }

    async fn lease_expired(&self, hold: FleetLease) {
        tracing::warn!(target: "turnout::admin", baseline = %hold.baseline, "the fleet rollout's coordinator stopped renewing its hold; every new client goes back to the baseline");
        if let Err(e) = self
            .control
            .apply(
                Command::Switch {
                    to: hold.baseline.clone(),
                },
                true,
            )
            .await
        {
            tracing::error!(target: "turnout::admin", error = %e, "could not go back to the baseline");
        }
        self.remove_marker().await;
        let env = Arc::clone(&self.control.router().snapshot().env);
        env.metrics.rollouts.with_label_values(&["failed"]).inc();
        self.control.book().finish(RolloutReport {
            id: hold.id,
            target: "(fleet rollout)".into(),
            baseline: hold.baseline.clone(),
            outcome: "failed",
            percent: 0,
            policy: RolloutPolicy::default(),
            started_at: hold.started_at,
            finished_at: Some(now_rfc3339()),
            steps: Vec::new(),
            reason: Some(format!(
                "the fleet rollout's coordinator stopped renewing its hold; this instance went back to the baseline {}",
                hold.baseline
            )),
            drained: None,
            took_ms: None,
            paused: false,
            baking: None,
        });
    }

    /// Every pool's counters now, for a fleet rollout's coordinator (which adds them up over
    /// the instances and judges the sum).
    pub fn samples(
        &self,
        pools: &[&str],
    ) -> Result<Vec<(String, crate::rollout::Sample)>, CoreError> {
        let snapshot = self.control.router().snapshot();
        pools
            .iter()
            .map(|name| {
                let pool = snapshot.pool(name)?;
                Ok((name.to_string(), pool.metrics().sample()))
            })
            .collect()
    }

    async fn remove_marker(&self) {
        if let Some(path) = self.marker_path() {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        }
    }

    /// At start-up: a rollout marker left by a turnout that stopped half-way sends every new
    /// client back to the baseline it named (and is recorded as a failed rollout). Answers
    /// whether it found one.
    pub async fn recover(&self) -> Result<bool, CoreError> {
        let Some(path) = self.marker_path() else {
            return Ok(false);
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(false);
        };
        let Ok(marker) = serde_json::from_str::<Marker>(&text) else {
            tracing::warn!(path = %path.display(), "an unreadable rollout marker was removed; the routing is as the state file says");
            let _ = std::fs::remove_file(&path);
            return Ok(false);
        };
        tracing::warn!(target: "turnout::admin", id = marker.id, to = %marker.target, baseline = %marker.baseline, "turnout stopped during a rollout; every new client goes back to the baseline");
        let reason = format!(
            "turnout stopped during this rollout (started {}); it went back to the baseline {} when it started again",
            marker.started_at, marker.baseline
        );
        self.control
            .apply(
                Command::Switch {
                    to: marker.baseline.clone(),
                },
                true,
            )
            .await?;
        let _ = std::fs::remove_file(&path);
        self.control.book().finish(RolloutReport {
            id: marker.id,
            target: marker.target,
            baseline: marker.baseline,
            outcome: "failed",
            percent: 0,
            policy: RolloutPolicy::default(),
            started_at: marker.started_at,
            finished_at: Some(now_rfc3339()),
            steps: Vec::new(),
            reason: Some(reason),
            drained: None,
            took_ms: None,
            paused: false,
            baking: None,
        });
        self.control
            .router()
            .snapshot()
            .env
            .metrics
            .rollouts
            .with_label_values(&["failed"])
            .inc();
        Ok(true)
    }

    fn marker_path(&self) -> Option<PathBuf> {
        let state = self.control.state_file()?.path();
        let mut name = state.file_name()?.to_os_string();
        name.push(".rollout");
        Some(state.with_file_name(name))
    }

    async fn write_marker(&self, marker: &Marker) -> Result<(), CoreError> {
        let Some(path) = self.marker_path() else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(marker).expect("a marker serializes");
        let file = crate::state::StateFile::new(path.clone());
        tokio::task::spawn_blocking(move || file.write(&bytes))
            .await
            .expect("the marker writer does not panic")
            .map_err(|e| CoreError::Persist {
                path,
                source: std::io::Error::other(e.to_string()),
            })
    }

    async fn run_rollout(
        &self,
        mut report: RolloutReport,
        req: RolloutRequest,
        abort: Arc<tokio::sync::Notify>,
        first_step: tokio::sync::oneshot::Sender<()>,
    ) {
        let started = Instant::now();
        let env = Arc::clone(&self.control.router().snapshot().env);
        let metrics = &env.metrics;
        let mut first_step = Some(first_step);
        let (outcome, reason) = self.steps(&mut report, &req, &abort, &mut first_step).await;
        let back = outcome != "passed" && outcome != "left";
        if back {
            // Back to the baseline at once; forced: its servers served until a moment ago.
            let to = report.baseline.clone();
            if let Err(e) = self.control.apply(Command::Switch { to }, true).await {
                tracing::error!(target: "turnout::admin", error = %e, "the rollout could not go back to its baseline");
            }
            // A failed mirror phase: the switch above changed nothing, so end the copies.
            if let Err(e) = self.control.apply(Command::Mirror { to: None }, true).await {
                tracing::error!(target: "turnout::admin", error = %e, "the rollout could not stop its mirror");
            }
        }
        let outcome = if outcome == "left" {
            "aborted"
        } else {
            outcome
        };
        metrics.rollout_percent.set(0);
        metrics.rollouts.with_label_values(&[outcome]).inc();
        report.outcome = outcome;
        report.percent = if outcome == "passed" { 100 } else { 0 };
        report.reason = reason;
        report.finished_at = Some(now_rfc3339());
        report.took_ms = Some(started.elapsed().as_millis() as u64);
        self.remove_marker().await;
        let last = report
            .steps
            .last()
            .map(|s| {
                format!(
                    " (target {} requests, {:.1}% 5xx; baseline {} requests, {:.1}% 5xx)",
                    s.target.requests,
                    s.target.error_rate * 100.0,
                    s.baseline.requests,
                    s.baseline.error_rate * 100.0
                )
            })
            .unwrap_or_default();
        env.events.push(
            "rollout",
            match outcome {
                "passed" => format!(
                    "rollout {} passed: {} takes every new client after {} step(s){last}",
                    report.id,
                    report.target,
                    report.steps.len()
                ),
                _ => format!(
                    "rollout {} of {} {outcome}: {}; new clients back on {}{last}",
                    report.id,
                    report.target,
                    report.reason.as_deref().unwrap_or("no reason given"),
                    report.baseline
                ),
            },
        );
        match outcome {
            "passed" => {
                tracing::info!(target: "turnout::admin", id = report.id, to = %report.target, took_ms = report.took_ms, "rollout passed")
            }
            _ => {
                tracing::warn!(target: "turnout::admin", id = report.id, to = %report.target, baseline = %report.baseline, outcome, reason = report.reason.as_deref().unwrap_or(""), took_ms = report.took_ms, "rollout ended; new clients go to the baseline")
            }
        }
        self.control.book().finish(report);
        // A rollout that failed before its first step was live.
        if let Some(tx) = first_step {
            let _ = tx.send(());
        }
    }

    /// The steps, in order. Answers the outcome ("passed", "failed", "aborted", or "left" when
    /// someone else changed the routing meanwhile and it must stay as they left it) and why.
    async fn steps(
        &self,
        report: &mut RolloutReport,
        req: &RolloutRequest,
        abort: &tokio::sync::Notify,
        first_step: &mut Option<tokio::sync::oneshot::Sender<()>>,
    ) -> (&'static str, Option<String>) {
        let policy = &req.policy;
        let env = Arc::clone(&self.control.router().snapshot().env);
        let metrics = &env.metrics;
        // The mirror phase (percent 0: no client goes to the target), then the steps.
        let mirror = (policy.mirror_percent > 0).then_some(0);
        for (percent, mirrored) in mirror
            .into_iter()
            .map(|p| (p, true))
            .chain(policy.steps.iter().map(|&p| (p, false)))
        {
            let name = if mirrored {
                format!("mirror of {}%", policy.mirror_percent)
            } else {
                format!("step {percent}%")
            };
            let command = if mirrored {
                Command::Mirror {
                    to: Some(crate::command::MirrorSpec {
                        to: req.to.clone(),
                        percent: policy.mirror_percent,
                        methods: policy.mirror_methods.clone(),
                        max_body: policy.mirror_max_body,
                    }),
                }
            } else if percent == 100 {
                Command::Switch { to: req.to.clone() }
            } else {
                Command::Split {
                    weights: vec![
                        (report.baseline.clone(), i64::from(100 - percent)),
                        (req.to.clone(), i64::from(percent)),
                    ],
                }
            };
            let applied = match self
                .control
                .apply(command, req.force || percent < 100)
                .await
            {
                Ok(snapshot) => snapshot,
                Err(e) => return ("failed", Some(format!("{name}: {e}"))),
            };
            report.percent = percent;
            metrics.rollout_percent.set(i64::from(percent));
            self.control.book().update(|r| r.percent = percent);
            if let Some(tx) = first_step.take() {
                let _ = tx.send(());
            }
            tracing::info!(target: "turnout::admin", id = report.id, to = %req.to, percent, mirrored, "rollout step");
            if percent == 100 {
                if let (Some(after), Ok(old)) =
                    (req.close_tunnels_after, applied.pool(&report.baseline))
                {
                    self.control
                        .close_tunnels_after(vec![Arc::clone(old)], after);
                }
                if let Some(limit) = req.wait_drained {
                    if let Ok(old) = applied.pool(&report.baseline) {
                        let old = Arc::clone(old);
                        let drained = self.control.wait_drained(&old, limit).await;
                        report.drained = Some(drained);
                    }
                }
                return ("passed", None);
            }
            let generation = applied.generation;
            let sample = |name: &str| {
                self.control
                    .router()
                    .snapshot()
                    .pool(name)
                    .map(|p| p.metrics().sample())
                    .unwrap_or_default()
            };
            let (t0, b0) = (sample(&req.to), sample(&report.baseline));
            let step_started = Instant::now();
            let give_up = step_started + policy.bake + policy.max_wait;
            let bake_end = step_started + policy.bake;
            // Judged every RECHECK while it bakes: a failing check ends the step at once (fewer
            // clients meet a bad version); a pass counts only once the whole bake has run.
            let mut wake = (step_started + RECHECK).min(bake_end);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    () = abort.notified() => {
                        return ("aborted", Some(format!("aborted at {percent}% by an admin call")));
                    }
                }
                let now = self.control.router().snapshot();
                if now.generation != generation {
                    return (
                        "left",
                        Some(format!(
                            "the routing was changed by another call during the step at {percent}% (generation {} -> {}); the rollout stopped and left it as it is",
                            generation, now.generation
                        )),
                    );
                }
                let target = sample(&req.to).since(&t0);
                let baseline = sample(&report.baseline).since(&b0);
                let ran_ms = step_started.elapsed().as_millis() as u64;
                let step = |verdict, check| StepReport {
                    percent,
                    mirror: mirrored.then_some(policy.mirror_percent),
                    verdict,
                    check,
                    target: target.clone(),
                    baseline: baseline.clone(),
                    ran_ms,
                };
                self.control
                    .book()
                    .update(|r| r.baking = Some(step("baking", None)));
                let baked = Instant::now() >= bake_end;
                // Paused: no step passes and none fails for too few requests; a failing check
                // still rolls back.
                let paused = self.control.book().paused();
                let recheck = Instant::now() + RECHECK;
                let mut verdict = judge(policy, &target, &baseline);
                if verdict == Verdict::Pass && baked && !paused {
                    if let Some(cmd) = &policy.check_cmd {
                        if let Err(detail) = self.check_cmd(cmd, report, percent).await {
                            verdict = Verdict::Fail {
                                check: "check_cmd",
                                detail,
                            };
                        }
                    }
                }
                match verdict {
                    Verdict::Pass | Verdict::TooFew if !baked => wake = recheck.min(bake_end),
                    Verdict::Pass if paused => wake = recheck,
                    Verdict::TooFew if paused => wake = recheck,
                    Verdict::Pass => {
                        metrics.rollout_steps.with_label_values(&["pass"]).inc();
                        env.events.push(
                            "rollout",
                            format!(
                                "rollout {} {name} passed after {ran_ms} ms: target {} requests, {:.1}% 5xx; baseline {} requests, {:.1}% 5xx",
                                report.id,
                                target.requests,
                                target.error_rate * 100.0,
                                baseline.requests,
                                baseline.error_rate * 100.0
                            ),
                        );
                        let s = step("pass", None);
                        report.steps.push(s.clone());
                        self.control.book().update(|r| {
                            r.steps.push(s);
                            r.baking = None;
                        });
                        break;
                    }
                    Verdict::Fail { check, detail } => {
                        metrics.rollout_steps.with_label_values(&["fail"]).inc();
                        report.steps.push(step("fail", Some(check)));
                        return ("failed", Some(format!("{name}: {check}: {detail}")));
                    }
                    Verdict::TooFew if Instant::now() >= give_up => {
                        metrics.rollout_steps.with_label_values(&["fail"]).inc();
                        report.steps.push(step("fail", Some("min_requests")));
                        return (
                            "failed",
                            Some(format!(
                                "{name}: min_requests: the target answered {} requests in {} ms, fewer than the {} needed for a verdict (bake {} + max_wait {})",
                                target.requests,
                                ran_ms,
                                policy.min_requests,
                                humantime::format_duration(policy.bake),
                                humantime::format_duration(policy.max_wait)
                            )),
                        );
                    }
                    Verdict::TooFew => wake = Instant::now() + RECHECK,
                }
            }
        }
        ("passed", None)
    }

    /// The step's `check_cmd` through the check the binary gave; without one, the step fails
    /// saying so (a rollout never passes a check nobody ran).
    async fn check_cmd(
        &self,
        cmd: &str,
        report: &RolloutReport,
        percent: u32,
    ) -> Result<(), String> {
        match self.control.step_check() {
            Some(check) => {
                check
                    .check(cmd, &report.target, &report.baseline, percent)
                    .await
            }
            None => Err(
                "check_cmd cannot run here: this turnout was given no way to run commands".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The guarded rollout in paused time: a bake of a minute is judged in milliseconds, with
    //! the pools' own counters fed as the data plane feeds them.

    use std::path::Path;

    use turnout_config::Config;

    use super::*;
    use crate::snapshot::Router;
    use crate::snapshot::RoutingSnapshot;

    fn control() -> Control {
        let config = Config::parse(
            "[pools.blue]\nservers=[\"127.0.0.1:3000\"]\n[pools.green]\nservers=[\"127.0.0.1:4000\"]\n\
             [routing]\nactive=\"blue\"\n",
            Path::new("t.toml"),
        )
        .expect("config");
        Control::new(
            Router::new(RoutingSnapshot::bootstrap(&config, None).expect("snapshot")),
            None,
        )
    }

    fn request(min_requests: u64) -> RolloutRequest {
        RolloutRequest {
            to: "green".into(),
            policy: RolloutPolicy {
                steps: vec![50, 100],
                bake: Duration::from_secs(60),
                min_requests,
                max_wait: Duration::from_secs(30),
                ..RolloutPolicy::default()
            },
            force: false,
            wait_drained: None,
            close_tunnels_after: None,
        }
    }

    /// Feeds each pool `per_second` answers a (virtual) second, green's with `green_status`,
    /// until the rollout ends (at most 10 virtual minutes); the ended report.
    async fn feed(control: &Control, per_second: u64, green_status: u16) -> RolloutReport {
        for _ in 0..600 {
            if control.rollouts().current().is_none() {
                break;
            }
            let snapshot = control.router().snapshot();
            for (pool, status) in [("blue", 200), ("green", green_status)] {
                let metrics = snapshot.pool(pool).expect("pool").metrics();
                for _ in 0..per_second {
                    metrics.observe(status, 0.002);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        control
            .rollouts()
            .history()
            .into_iter()
            .next()
            .expect("the rollout ended")
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_target_takes_every_client_after_the_whole_bake() {
        let control = control();
        let started = Instant::now();
        control.rollouts().start(request(20)).await.expect("start");
        let report = feed(&control, 10, 200).await;
        assert_eq!(report.outcome, "passed", "{report:?}");
        assert!(
            started.elapsed() >= Duration::from_secs(60),
            "the whole bake ran"
        );
        assert_eq!(report.steps.len(), 1, "{report:?}");
        assert_eq!(
            (report.steps[0].percent, report.steps[0].verdict),
            (50, "pass")
        );
        assert!(report.baking.is_none());
        assert_eq!(control.router().active().name().as_str(), "green");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_target_is_rolled_back_at_the_first_recheck_with_enough_requests() {
        let control = control();
        let started = Instant::now();
        control.rollouts().start(request(20)).await.expect("start");
        let report = feed(&control, 10, 500).await;
        assert_eq!(report.outcome, "failed", "{report:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "failed early, not after the bake: {:?}",
            started.elapsed()
        );
        assert!(
            report
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("error_rate")),
            "{report:?}"
        );
        assert_eq!(control.router().active().name().as_str(), "blue");
        assert_eq!(
            control.router().snapshot().weights.to_map().len(),
            1,
            "no split left"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn too_few_requests_fail_the_step_after_the_bake_and_max_wait() {
        let control = control();
        let started = Instant::now();
        control
            .rollouts()
            .start(request(1_000))
            .await
            .expect("start");
        let report = feed(&control, 1, 200).await;
        assert_eq!(report.outcome, "failed", "{report:?}");
        assert_eq!(
            report.steps.last().and_then(|s| s.check),
            Some("min_requests")
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(90) && took < Duration::from_secs(95),
            "bake 60 s + max_wait 30 s: {took:?}"
        );
        assert_eq!(control.router().active().name().as_str(), "blue");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_sends_every_client_back_and_says_who() {
        let control = control();
        crate::events::ACTOR
            .scope("CLI".to_owned(), control.rollouts().start(request(20)))
            .await
            .expect("start");
        tokio::time::sleep(Duration::from_secs(5)).await;
        crate::events::ACTOR
            .scope("dashboard".to_owned(), async { control.rollouts().abort() })
            .await
            .expect("abort");
        let report = feed(&control, 0, 200).await;
        assert_eq!(report.outcome, "aborted", "{report:?}");
        assert_eq!(control.router().active().name().as_str(), "blue");
        let events = control.router().snapshot().env.events.since(0);
        let said = |needle: &str, by: &str| {
            events
                .iter()
                .any(|e| e.kind == "rollout" && e.message.contains(needle) && e.by == by)
        };
        assert!(said("started by CLI", "CLI"), "{events:?}");
        assert!(
            said("aborted at 50% by dashboard", "dashboard"),
            "{events:?}"
        );
        assert!(
            said("aborted: aborted at 50%", "rollout guard"),
            "{events:?}"
        );
    }
}
