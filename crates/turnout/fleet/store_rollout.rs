//! `turnout fleet rollout --to POOL --etcd URL --fleet NAME`: a guarded rollout of the fleet
//! through its desired state. One lock for the whole rollout; each step is a fleet change under
//! it (prepare, every member's acknowledgement, one commit) that marks the desired state "a
//! rollout is under way, baseline B". Each step bakes and is judged, as `turnout rollout` judges
//! one instance, on the sum of every member's counters (each member's `GET /v1/rollout/sample`,
//! at the admin URL it reports). A failed step commits the baseline back. If this command dies,
//! its lock's lease ends, and the first member to see the lock gone with the rollout still
//! marked writes the baseline back for the whole fleet: never left split.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use turnout_core::rollout::{Sample, Verdict};
use turnout_core::RolloutPolicy;
use turnout_fleet::coordinator::{Held, Plan};
use turnout_fleet::desired::UnderWay;
use turnout_fleet::{Change, EtcdStore, FleetStore};

use super::Fleet;

/// How often a step's counters are summed and judged.
const TICK: Duration = Duration::from_millis(500);

/// Runs the rollout; exit 0 passed, 1 rolled back (or refused with nothing changed).
pub(super) async fn rollout(
    store: &EtcdStore,
    to: &str,
    policy: &RolloutPolicy,
    plan: &Plan,
    token: Option<String>,
    timeout: Duration,
) -> ExitCode {
    let fleet = store.fleet().to_string();
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("turnout fleet: fleet {fleet}: {e}");
        ExitCode::from(1)
    };
    let mut held = match Held::take(store, plan).await {
        Ok(h) => h,
        Err(e) => return fail(&e),
    };
    let read = match store.read().await {
        Ok(r) => r,
        Err(e) => {
            held.release().await;
            return fail(&e);
        }
    };
    let baseline = match read.desired.as_ref().map(|d| &d.value.weights) {
        Some(w) if w.len() == 1 => w.keys().next().cloned().unwrap_or_default(),
        _ => {
            held.release().await;
            return fail(&"a rollout starts from one pool taking every new client; the fleet is split (or empty): switch it first");
        }
    };
    if baseline == to {
        held.release().await;
        return fail(&format!(
            "the fleet is on {to} already; nothing to roll out"
        ));
    }
    let under_way = UnderWay {
        baseline: baseline.clone(),
        to: to.to_string(),
        by: plan.who.clone(),
    };
    println!(
        "fleet rollout: {baseline} -> {to} on fleet {fleet}, steps {:?}, bake {} each",
        policy.steps,
        humantime::format_duration(policy.bake)
    );
    let mut progress = |line: &str| eprintln!("fleet {}: {line}", store.fleet());
    let started = Instant::now();
    for &percent in &policy.steps {
        let (change, marked) = if percent >= 100 {
            (Change::Switch { to: to.to_string() }, None)
        } else {
            (
                Change::Split {
                    weights: vec![(baseline.clone(), 100 - percent), (to.to_string(), percent)],
                },
                Some(under_way.clone()),
            )
        };
        if let Err(e) = held.commit(&change, marked, plan, &mut progress).await {
            return back(held, &baseline, plan, &format!("step {percent}%: {e}")).await;
        }
        if percent >= 100 {
            held.release().await;
            println!(
                "passed: {to} takes every new client on every member ({} ms)",
                started.elapsed().as_millis()
            );
            return ExitCode::SUCCESS;
        }
        match bake(
            store, &held, to, &baseline, percent, policy, &token, timeout,
        )
        .await
        {
            Ok(()) => {}
            Err(why) => return back(held, &baseline, plan, &why).await,
        }
    }
    held.release().await;
    ExitCode::SUCCESS
}

/// Bakes one step and judges it on the members' summed counters: `Err(why)` when it fails.
#[allow(clippy::too_many_arguments)]
async fn bake(
    store: &EtcdStore,
    held: &Held<'_, EtcdStore>,
    to: &str,
    baseline: &str,
    percent: u32,
    policy: &RolloutPolicy,
    token: &Option<String>,
    timeout: Duration,
) -> Result<(), String> {
    let step_started = Instant::now();
    let bake_end = step_started + policy.bake;
    let give_up = bake_end + policy.max_wait;
    let path = format!("/v1/rollout/sample?pools={baseline},{to}");
    let mut start: Option<(Sample, Sample)> = None;
    loop {
        if start.is_some() {
            tokio::time::sleep(TICK).await;
        }
        if !held.alive() {
            return Err("the fleet lock was lost (the store did not answer in time)".into());
        }
        // The members now: one that left is no longer counted, one that joined is.
        let read = store.read().await.map_err(|e| e.to_string())?;
        let instances: Vec<String> = read
            .members
            .iter()
            .filter_map(|m| m.value.admin.clone())
            .collect();
        if instances.is_empty() {
            return Err("no member reports an admin URL to read its counters from".into());
        }
        let members = Fleet {
            instances,
            token: token.clone(),
            timeout,
            client: crate::client::admin_client(),
        };
        let Some(now) = members.sample_sum(&path, baseline, to).await else {
            return Err("a member did not answer for its counters".into());
        };
        let Some(first) = &start else {
            start = Some(now);
            continue;
        };
        let target = now.1.since(&first.1);
        let base = now.0.since(&first.0);
        let ran = step_started.elapsed().as_millis();
        let baked = Instant::now() >= bake_end;
        let verdict =
            super::rollout::verdict(policy, &target, &base, baked, to, baseline, percent).await;
        match verdict {
            Verdict::Fail { check, detail } => {
                println!(
                    "{}",
                    super::rollout::line(percent, "fail", Some(check), ran, &target, &base)
                );
                return Err(format!("step {percent}%: {check}: {detail}"));
            }
            Verdict::Pass if baked => {
                println!(
                    "{}",
                    super::rollout::line(percent, "pass", None, ran, &target, &base)
                );
                return Ok(());
            }
            Verdict::TooFew if Instant::now() >= give_up => {
                println!(
                    "{}",
                    super::rollout::line(
                        percent,
                        "fail",
                        Some("min_requests"),
                        ran,
                        &target,
                        &base
                    )
                );
                return Err(format!(
                    "step {percent}%: min_requests: the fleet's {to} answered {} requests, fewer than the {} needed",
                    target.requests, policy.min_requests
                ));
            }
            _ => {}
        }
    }
}

/// The baseline back for the whole fleet (one change under the lock), then the lock released;
/// exit 1. If even that fails, releasing the lock makes the members restore it themselves.
async fn back(mut held: Held<'_, EtcdStore>, baseline: &str, plan: &Plan, why: &str) -> ExitCode {
    let mut quiet = |_: &str| {};
    let change = Change::Switch {
        to: baseline.to_string(),
    };
    match held.commit(&change, None, plan, &mut quiet).await {
        Ok(_) => println!("failed: every member is back on {baseline}: {why}"),
        Err(e) => println!(
            "failed: {why}; the switch back to {baseline} did not commit ({e}): the members restore it themselves once the lock is gone"
        ),
    }
    held.release().await;
    ExitCode::from(1)
}
