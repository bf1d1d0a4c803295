//! `turnout fleet rollout --to POOL`: a guarded rollout of every instance together. Each step
//! is a fleet split (two-phase: every instance or none), baked, and judged on the sum of every
//! instance's counters (`GET /v1/rollout/sample`); a failed check sends every instance back to
//! the baseline. While the fleet is split, each instance is held (`POST /v1/rollout/hold`,
//! renewed every half second): a coordinator that dies stops renewing, and each instance goes
//! back to the baseline by itself when its hold runs out, so the fleet is never left split.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};
use turnout_core::rollout::{judge, Sample, Verdict, Window};
use turnout_core::RolloutPolicy;

use super::{failure, print_table, Fleet, PhaseArgs, Row};
use crate::client::Outcome;

/// How often the coordinator renews its holds and judges the step under way.
const TICK: Duration = Duration::from_millis(500);

impl Fleet {
    pub(super) async fn rollout(
        &self,
        to: &str,
        policy: &RolloutPolicy,
        phase: &PhaseArgs,
        hold: Duration,
    ) -> ExitCode {
        // 1. Every instance on the same single pool: the baseline.
        let statuses = self.all(Method::GET, "/v1/status", |_| None).await;
        let mut actives = std::collections::BTreeSet::new();
        let mut rows = Vec::new();
        for (instance, (outcome, _)) in self.instances.iter().zip(statuses) {
            match outcome {
                Outcome::Ok(v) if v["weights"].as_object().is_some_and(|w| w.len() == 1) => {
                    actives.insert(v["active"].as_str().unwrap_or("?").to_owned());
                }
                Outcome::Ok(v) => rows.push(Row::new(
                    instance,
                    ("split".into(), crate::client::summary(&v)),
                )),
                other => rows.push(Row::new(instance, failure(other))),
            }
        }
        let baseline = match (rows.is_empty(), actives.len()) {
            (true, 1) => actives.pop_first().expect("one"),
            _ => {
                print_table(&rows);
                eprintln!(
                    "turnout fleet: a rollout needs every instance reachable and on one pool (now: {actives:?}); nothing was changed"
                );
                return ExitCode::from(1);
            }
        };
        if baseline == to {
            eprintln!("turnout fleet: every instance is on {to} already; nothing to roll out");
            return ExitCode::from(1);
        }
        // 2. Hold every instance.
        let ttl = humantime::format_duration(hold).to_string();
        let hold_body = json!({ "baseline": baseline, "ttl": ttl });
        if let Err(rows) = self.renew(&hold_body).await {
            print_table(&rows);
            self.release().await;
            eprintln!("turnout fleet: not every instance could be held; nothing was changed");
            return ExitCode::from(1);
        }
        println!(
            "fleet rollout: {baseline} -> {to} on {} instances, steps {:?}, bake {} each",
            self.instances.len(),
            policy.steps,
            humantime::format_duration(policy.bake)
        );
        let started = Instant::now();
        let pools = format!("/v1/rollout/sample?pools={baseline},{to}");
        for &percent in &policy.steps {
            // 3. The step, on every instance or none.
            let change = if percent == 100 {
                json!({ "to": to })
            } else {
                json!({ "weights": { baseline.as_str(): 100 - percent, to: percent } })
            };
            let targets = self.instances.iter().map(|_| change.clone()).collect();
            if self.two_phase(targets, phase).await != ExitCode::SUCCESS {
                return self
                    .back(
                        &baseline,
                        phase,
                        &format!("step {percent}% could not be applied on every instance"),
                    )
                    .await;
            }
            if percent == 100 {
                self.release().await;
                println!(
                    "passed: {to} takes every new client on every instance ({} ms)",
                    started.elapsed().as_millis()
                );
                return ExitCode::SUCCESS;
            }
            // 4. Bake, renewing the holds; judge the sum of every instance's window (the
            //    first sum, taken at once, is the window's start).
            let step_started = Instant::now();
            let bake_end = step_started + policy.bake;
            let give_up = bake_end + policy.max_wait;
            let mut start: Option<(Sample, Sample)> = None;
            loop {
                if start.is_some() {
                    tokio::time::sleep(TICK).await;
                    if let Err(rows) = self.renew(&hold_body).await {
                        print_table(&rows);
                        return self
                            .back(&baseline, phase, "an instance could not be held")
                            .await;
                    }
                }
                let Some(now) = self.sample_sum(&pools, &baseline, to).await else {
                    let why = "an instance did not answer for its counters";
                    return self.back(&baseline, phase, why).await;
                };
                let Some(start) = &start else {
                    start = Some(now);
                    continue;
                };
                let target = now.1.since(&start.1);
                let base = now.0.since(&start.0);
                let ran = step_started.elapsed().as_millis();
                let baked = Instant::now() >= bake_end;
                let verdict = verdict(policy, &target, &base, baked, to, &baseline, percent).await;
                match verdict {
                    Verdict::Fail { check, detail } => {
                        println!(
                            "{}",
                            line(percent, "fail", Some(check), ran, &target, &base)
                        );
                        return self
                            .back(
                                &baseline,
                                phase,
                                &format!("step {percent}%: {check}: {detail}"),
                            )
                            .await;
                    }
                    Verdict::Pass if baked => {
                        println!("{}", line(percent, "pass", None, ran, &target, &base));
                        break;
                    }
                    Verdict::TooFew if Instant::now() >= give_up => {
                        println!(
                            "{}",
                            line(percent, "fail", Some("min_requests"), ran, &target, &base)
                        );
                        let why = format!(
                            "step {percent}%: min_requests: the fleet's {to} answered {} requests, fewer than the {} needed",
                            target.requests, policy.min_requests
                        );
                        return self.back(&baseline, phase, &why).await;
                    }
                    _ => {}
                }
            }
        }
        self.release().await;
        ExitCode::SUCCESS
    }

    /// Takes or renews the hold on every instance; the rows of those that refused.
    async fn renew(&self, body: &Value) -> Result<(), Vec<Row>> {
        let answers = self
            .all(Method::POST, "/v1/rollout/hold", |_| Some(body.clone()))
            .await;
        let rows: Vec<Row> = self
            .instances
            .iter()
            .zip(answers)
            .filter_map(|(instance, (outcome, _))| match outcome {
                Outcome::Ok(_) => None,
                other => Some(Row::new(instance, failure(other))),
            })
            .collect();
        if rows.is_empty() {
            Ok(())
        } else {
            Err(rows)
        }
    }

    async fn release(&self) {
        self.all(Method::DELETE, "/v1/rollout/hold", |_| None).await;
    }

    /// The baseline's and the target's counters, added up over every instance.
    pub(super) async fn sample_sum(
        &self,
        path: &str,
        baseline: &str,
        to: &str,
    ) -> Option<(Sample, Sample)> {
        let answers = self.all(Method::GET, path, |_| None).await;
        let mut sum = (Sample::default(), Sample::default());
        for (outcome, _) in answers {
            let Outcome::Ok(v) = outcome else {
                return None;
            };
            let b: Sample = serde_json::from_value(v[baseline].clone()).ok()?;
            let t: Sample = serde_json::from_value(v[to].clone()).ok()?;
            sum.0.add(&b);
            sum.1.add(&t);
        }
        Some(sum)
    }

    /// Every instance back to the baseline (all or none; if that fails, each instance's hold
    /// runs out and it goes back by itself), the holds released, exit 1.
    async fn back(&self, baseline: &str, phase: &PhaseArgs, why: &str) -> ExitCode {
        let targets = self
            .instances
            .iter()
            .map(|_| json!({ "to": baseline }))
            .collect();
        if self.two_phase(targets, phase).await == ExitCode::SUCCESS {
            self.release().await;
            println!("failed: every instance is back on {baseline}: {why}");
        } else {
            println!(
                "failed: {why}; the switch back to {baseline} did not go through on every instance: each goes back by itself when its hold runs out"
            );
        }
        ExitCode::from(1)
    }
}

/// The verdict on a step's window: `judge`'s, and once the step has baked and passes, its
/// `check_cmd`'s (run here, on the coordinator).
#[allow(clippy::too_many_arguments)]
pub(super) async fn verdict(
    policy: &RolloutPolicy,
    target: &Window,
    base: &Window,
    baked: bool,
    to: &str,
    baseline: &str,
    percent: u32,
) -> Verdict {
    let verdict = judge(policy, target, base);
    if verdict != Verdict::Pass || !baked {
        return verdict;
    }
    match &policy.check_cmd {
        Some(cmd) => match crate::check_cmd::run_check(cmd, to, baseline, percent).await {
            Ok(()) => verdict,
            Err(detail) => Verdict::Fail {
                check: "check_cmd",
                detail,
            },
        },
        None => verdict,
    }
}

/// "step 10%: fail on error_rate after 1003 ms: target ... | baseline ...".
pub(super) fn line(
    percent: u32,
    verdict: &str,
    check: Option<&str>,
    ran_ms: u128,
    target: &Window,
    baseline: &Window,
) -> String {
    let side = |w: &Window| {
        format!(
            "{} requests, {:.1}% 5xx, p95 {}",
            w.requests,
            w.error_rate * 100.0,
            w.p95_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.1} ms"))
        )
    };
    let check = check.map_or_else(String::new, |c| format!(" on {c}"));
    format!(
        "step {percent}%: {verdict}{check} after {ran_ms} ms: target {} | baseline {}",
        side(target),
        side(baseline)
    )
}
