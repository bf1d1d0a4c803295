//! `turnout fleet upgrade --binary PATH [--max-unavailable N] --etcd URL --fleet NAME`: the
//! in-place upgrade of turnout itself on every member, a few at a time (the rolling deploy
//! the seeds describe, for the one thing blue/green cannot cover). Each batch is upgraded
//! through its members' admin APIs (`POST /v1/upgrade`, at the admin URL each reports), then
//! verified before the next: the new process has joined the fleet and serves its desired
//! generation, and over `--settle` its 5xx rate is not more than one point above the rest of
//! the fleet's. The first member that fails stops the upgrade; the members after it are not
//! touched. Exit 0 all upgraded, 1 stopped (the table says where).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;
use turnout_core::rollout::Sample;
use turnout_fleet::{EtcdStore, FleetStore};

use super::Fleet;
use crate::client::{request, Outcome};

/// How long one member's upgrade call may take (its new process starts and takes over).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(90);

/// The highest 5xx rate an upgraded member may have above the rest of the fleet's.
const MAX_EXCESS_ERROR_RATE: f64 = 0.01;

/// What the upgrade needs beyond the store.
pub(super) struct Upgrade<'a> {
    pub binary: &'a Path,
    pub max_unavailable: usize,
    pub settle: Duration,
    pub token: Option<String>,
    pub timeout: Duration,
}

pub(super) async fn upgrade(store: &EtcdStore, u: &Upgrade<'_>) -> ExitCode {
    let fleet = store.fleet().to_string();
    let stop = |why: String| {
        println!("stopped: {why}");
        ExitCode::from(1)
    };
    let read = match store.read().await {
        Ok(r) => r,
        Err(e) => return stop(e.to_string()),
    };
    let Some(desired) = read.desired else {
        return stop(format!("fleet {fleet} has no desired state in etcd yet"));
    };
    let pools = desired.value.pools.join(",");
    let mut members: Vec<(String, String)> = Vec::new();
    for m in &read.members {
        match &m.value.admin {
            Some(a) => members.push((m.value.instance.clone(), a.clone())),
            None => return stop(format!("member {} reports no admin URL", m.value.instance)),
        }
    }
    members.sort();
    if members.is_empty() {
        return stop(format!("fleet {fleet} has no members"));
    }
    let binary = std::path::absolute(u.binary).unwrap_or_else(|_| u.binary.to_path_buf());
    println!(
        "fleet upgrade: {} member(s) of fleet {fleet} to {}, {} at a time, each watched for {}",
        members.len(),
        binary.display(),
        u.max_unavailable,
        humantime::format_duration(u.settle)
    );
    let client = crate::client::admin_client();
    let all = Fleet {
        instances: members.iter().map(|(_, a)| a.clone()).collect(),
        token: u.token.clone(),
        timeout: u.timeout,
        client: client.clone(),
    };
    let started = Instant::now();
    for batch in members.chunks(u.max_unavailable.max(1)) {
        // 1. Upgrade the batch at once.
        let calls = batch.iter().map(|(name, admin)| {
            let body = json!({ "binary": binary });
            let client = &client;
            async move {
                let outcome = request(
                    client,
                    admin,
                    u.token.as_deref(),
                    Method::POST,
                    "/v1/upgrade",
                    Some(body),
                    UPGRADE_TIMEOUT,
                )
                .await;
                (name, outcome)
            }
        });
        for (name, outcome) in futures_util::future::join_all(calls).await {
            match outcome {
                Outcome::Ok(v) => println!(
                    "{name}: pid {} handed over to pid {} (turnout {}) in {} ms",
                    v["from_pid"],
                    v["pid"],
                    v["version"].as_str().unwrap_or("?"),
                    v["took_ms"]
                ),
                Outcome::Refused(code, e) => {
                    return stop(format!("{name}: the upgrade was refused ({code}): {e}"))
                }
                Outcome::Unreachable(e) => return stop(format!("{name}: no answer: {e}")),
            }
        }
        // 2. Each new process joined the fleet and serves its generation.
        let names: Vec<&str> = batch.iter().map(|(n, _)| n.as_str()).collect();
        if let Err(why) = rejoined(store, &names, u.timeout.max(Duration::from_secs(15))).await {
            return stop(why);
        }
        // 3. Its errors against the rest of the fleet's, over the settle window.
        let path = format!("/v1/rollout/sample?pools={pools}");
        let Some(before) = samples(&all, &path).await else {
            return stop("a member did not answer for its counters".into());
        };
        tokio::time::sleep(u.settle).await;
        let Some(after) = samples(&all, &path).await else {
            return stop("a member did not answer for its counters".into());
        };
        let (mut mine, mut mine0, mut rest, mut rest0) = Default::default();
        for (i, (name, _)) in members.iter().enumerate() {
            let (now, then): (&mut Sample, &mut Sample) = if names.contains(&name.as_str()) {
                (&mut mine, &mut mine0)
            } else {
                (&mut rest, &mut rest0)
            };
            now.add(&after[i]);
            then.add(&before[i]);
        }
        let (upgraded, others) = (mine.since(&mine0), rest.since(&rest0));
        println!(
            "{}: {} requests, {:.1}% 5xx over {} | rest of the fleet: {} requests, {:.1}% 5xx",
            names.join(", "),
            upgraded.requests,
            upgraded.error_rate * 100.0,
            humantime::format_duration(u.settle),
            others.requests,
            others.error_rate * 100.0
        );
        if upgraded.requests > 0 && upgraded.error_rate > others.error_rate + MAX_EXCESS_ERROR_RATE
        {
            return stop(format!(
                "{}: its 5xx rate ({:.1}%) is more than 1 point above the rest of the fleet's ({:.1}%); the members after it were not upgraded",
                names.join(", "),
                upgraded.error_rate * 100.0,
                others.error_rate * 100.0
            ));
        }
    }
    println!(
        "upgraded: every member of fleet {fleet} ({}) in {} ms",
        members.len(),
        started.elapsed().as_millis()
    );
    ExitCode::SUCCESS
}

/// Waits until each of `names` reports the desired generation applied and is not behind.
async fn rejoined(store: &EtcdStore, names: &[&str], limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let mut missing = Vec::new();
        if let Ok(read) = store.read().await {
            let generation = read.desired.as_ref().map_or(0, |d| d.value.generation);
            for name in names {
                let ok = read.members.iter().any(|m| {
                    m.value.instance == *name
                        && m.value.applied == generation
                        && m.value.behind.is_none()
                });
                if !ok {
                    missing.push(*name);
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not rejoin the fleet on its desired generation within {}s; the members after it were not upgraded",
                missing.join(", "),
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each member's counters, summed over the fleet's pools, in the members' order.
async fn samples(all: &Fleet, path: &str) -> Option<Vec<Sample>> {
    let answers = all.all(Method::GET, path, |_| None).await;
    let mut out = Vec::new();
    for (outcome, _) in answers {
        let Outcome::Ok(v) = outcome else { return None };
        let mut sum = Sample::default();
        for (_, pool) in v.as_object()? {
            sum.add(&serde_json::from_value(pool.clone()).ok()?);
        }
        out.push(sum);
    }
    Some(out)
}
