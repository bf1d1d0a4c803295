//! The coordinator: one fleet change through the store, every member or none.
//!
//! Take the fleet's lock under a lease; read the fleet; write the prepare (if the desired
//! state and the roster are as read); wait until every live member acknowledged it (probed,
//! held) or one refused; then one transaction that writes the next desired state only if the
//! prepare, the roster, the desired state and the lock are all unchanged. Anything else
//! withdraws the prepare and changes nothing. A coordinator that dies anywhere before the
//! commit leaves a prepare under a lease that ends with it: members drop it, nothing changed.
//! After the commit, it waits (a bounded time) for every member to report the new generation,
//! and says how long the last one took.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::desired::{now_ms, Change, Desired, MemberRecord, Prepare};
use crate::error::FleetError;
use crate::store::{Event, Expect, FleetRead, FleetStore, Lease};

/// How a coordinator runs a change.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Who is changing the fleet (`user@host:pid`), written into the lock and the desired state.
    pub who: String,
    /// The lock's lease, and how long members hold the prepared change.
    pub ttl: Duration,
    /// How long every member has to acknowledge the prepare.
    pub ack_timeout: Duration,
    /// How long to wait for every member to apply the commit before reporting.
    pub apply_timeout: Duration,
    /// A drill: wait this long between the acknowledgements and the commit.
    pub pause_before_commit: Option<Duration>,
}

/// A committed change.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The desired state written.
    pub desired: Desired,
    /// Each member that acknowledged, with how long after the commit it applied (`None`: not
    /// within the apply timeout).
    pub applied: BTreeMap<String, Option<Duration>>,
    /// The store writes this change took: the coordinator's and the members' answers.
    pub writes: u64,
}

impl Committed {
    /// The time from the commit to the last member applied, if all did.
    pub fn skew(&self) -> Option<Duration> {
        self.applied
            .values()
            .try_fold(Duration::ZERO, |m, a| a.map(|a| m.max(a)))
    }
}

/// Runs `change` on `store`'s fleet; `progress` is told each phase.
pub async fn change<S: FleetStore>(
    store: &S,
    change: &Change,
    plan: &Plan,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Committed, FleetError> {
    let lease = store.grant(plan.ttl).await?;
    let keep = tokio::spawn({
        let store = store.clone();
        let ttl = plan.ttl;
        async move { store.keep_alive(lease, ttl).await }
    });
    let result = locked(store, lease, change, plan, progress, &keep).await;
    keep.abort();
    // Ends the lock and any prepare left (a withdrawn one is gone already).
    let _ = store.revoke(lease).await;
    result
}

async fn locked<S: FleetStore>(
    store: &S,
    lease: Lease,
    change: &Change,
    plan: &Plan,
    progress: &mut (dyn FnMut(&str) + Send),
    keep: &tokio::task::JoinHandle<String>,
) -> Result<Committed, FleetError> {
    if let Err(holder) = store.lock(lease, &plan.who).await? {
        return Err(FleetError::Busy {
            fleet: store.fleet().to_string(),
            holder,
        });
    }
    // grant + lock
    let mut writes = 2;
    // A member that joins between the read and the prepare moves the roster: read again.
    for _round in 0..3 {
        let read = store.read().await?;
        let Some(desired) = read.desired.clone() else {
            return Err(FleetError::Empty {
                fleet: store.fleet().to_string(),
            });
        };
        let mut next = desired.value.next(change, &plan.who)?;
        let expect = Expect {
            desired: desired.revision,
            roster: read.roster,
            prepare: 0,
        };
        let prepare = Prepare {
            next: next.clone(),
            ttl_ms: u64::try_from(plan.ttl.as_millis()).unwrap_or(u64::MAX),
        };
        let Some(prepared_at) = store.prepare(lease, &prepare, expect).await? else {
            progress("the fleet moved before the prepare; reading it again");
            continue;
        };
        writes += 1;
        let members: BTreeSet<String> = read
            .members
            .iter()
            .map(|m| m.value.instance.clone())
            .collect();
        progress(&format!(
            "prepared generation {} ({change}) on {} member(s); waiting for each to acknowledge",
            next.generation,
            members.len()
        ));
        let acked = match acknowledgements(store, prepared_at, &read, &next, plan).await {
            Ok(acked) => acked,
            Err(e) => {
                let _ = store.withdraw(prepared_at).await;
                return Err(e);
            }
        };
        writes += acked.len() as u64;
        if let Some(pause) = plan.pause_before_commit {
            progress(&format!(
                "drill: waiting {} before the commit",
                humantime_secs(pause)
            ));
            tokio::time::sleep(pause).await;
        }
        if keep.is_finished() {
            return Err(FleetError::LockLost);
        }
        next.committed_ms = now_ms();
        let expect = Expect {
            prepare: prepared_at,
            ..expect
        };
        let committed_at = match store.commit(lease, &next, expect).await {
            Ok(Some(rev)) => rev,
            Ok(None) => {
                let _ = store.withdraw(prepared_at).await;
                let now = store.read().await?;
                if now.prepare.is_none() && now.lock.is_none() {
                    return Err(FleetError::LockLost);
                }
                return Err(FleetError::Refused(
                    "the fleet changed between the prepare and the commit".into(),
                ));
            }
            Err(e) => settle(store, lease, &next, expect, plan, e).await?,
        };
        writes += 1;
        progress(&format!(
            "committed generation {}; waiting for every member to apply it",
            next.generation
        ));
        let applied = applications(store, committed_at, &acked, &next, plan).await;
        writes += applied.values().filter(|a| a.is_some()).count() as u64;
        // the lease's revoke
        writes += 1;
        return Ok(Committed {
            desired: next,
            applied,
            writes,
        });
    }
    Err(FleetError::Refused(
        "members kept joining during the prepare; try again".into(),
    ))
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Waits until every member of `read` acknowledged `next`'s prepare, or one refused, or the
/// time is up; members whose lease ends meanwhile are no longer waited for.
async fn acknowledgements<S: FleetStore>(
    store: &S,
    after: i64,
    read: &FleetRead,
    next: &Desired,
    plan: &Plan,
) -> Result<BTreeSet<String>, FleetError> {
    let mut waiting: BTreeSet<String> = read
        .members
        .iter()
        .map(|m| m.value.instance.clone())
        .collect();
    let mut acked = BTreeSet::new();
    let mut events = store.watch(after).await?;
    let deadline = Instant::now() + plan.ack_timeout;
    while !waiting.is_empty() {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => {
                return Err(FleetError::Refused(format!(
                    "no acknowledgement within {} from: {}",
                    humantime_secs(plan.ack_timeout),
                    waiting.iter().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
            Ok(e) => e,
        };
        match event {
            Some(Event::Member(name, Some(m))) => {
                if let Some((g, why)) = &m.value.refused {
                    if *g == next.generation {
                        return Err(FleetError::Refused(format!("{name}: {why}")));
                    }
                }
                if m.value.prepared == Some(next.generation) && waiting.remove(&name) {
                    acked.insert(name);
                }
            }
            Some(Event::Member(name, None)) => {
                // Its lease ended: it left the fleet, and joins again through a read.
                waiting.remove(&name);
            }
            Some(Event::Prepare(None)) | Some(Event::Lock(None)) => {
                return Err(FleetError::LockLost);
            }
            Some(Event::Ended(why)) => {
                return Err(FleetError::Refused(format!(
                    "lost the store while waiting for acknowledgements: {why}"
                )))
            }
            None => {
                return Err(FleetError::Refused(
                    "lost the store while waiting for acknowledgements".into(),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(acked)
}

/// The commit's answer was lost (the store's leader died, the connection broke): read until
/// the store answers, and tell whether it happened (the desired state is ours) or cannot
/// any more (the prepare is gone without it); while the prepare is still there, commit
/// again (the transaction's comparisons make a second attempt safe). The commit's revision
/// when it happened.
async fn settle<S: FleetStore>(
    store: &S,
    lease: Lease,
    next: &Desired,
    expect: Expect,
    plan: &Plan,
    error: FleetError,
) -> Result<i64, FleetError> {
    let deadline = Instant::now() + plan.ttl.max(Duration::from_secs(5));
    let mut last = error.to_string();
    loop {
        if Instant::now() >= deadline {
            return Err(FleetError::Unknown(format!(
                "the commit failed, and the store has not settled since: {last}"
            )));
        }
        match store.read().await {
            Ok(read) => match read.desired {
                Some(d) if &d.value == next => return Ok(d.revision),
                _ if read.prepare.is_none() => return Err(FleetError::LockLost),
                _ => match store.commit(lease, next, expect).await {
                    Ok(Some(rev)) => return Ok(rev),
                    Ok(None) => {}
                    Err(e) => last = e.to_string(),
                },
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (up to the plan's apply timeout) until every member in `members` reports `next`'s
/// generation applied; each one's delay after the commit.
async fn applications<S: FleetStore>(
    store: &S,
    after: i64,
    members: &BTreeSet<String>,
    next: &Desired,
    plan: &Plan,
) -> BTreeMap<String, Option<Duration>> {
    let mut applied: BTreeMap<String, Option<Duration>> =
        members.iter().map(|m| (m.clone(), None)).collect();
    let delay =
        |m: &MemberRecord| Duration::from_millis(m.applied_ms.saturating_sub(next.committed_ms));
    let Ok(mut events) = store.watch(after - 1).await else {
        return applied;
    };
    let deadline = Instant::now() + plan.apply_timeout;
    while applied.values().any(Option::is_none) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Member(name, Some(m)))) if m.value.applied >= next.generation => {
                if let Some(slot) = applied.get_mut(&name) {
                    *slot = Some(delay(&m.value));
                }
            }
            Ok(Some(Event::Member(name, None))) => {
                applied.remove(&name);
            }
            Ok(Some(Event::Ended(_)) | None) | Err(_) => break,
            Ok(Some(_)) => {}
        }
    }
    applied
}

/// `turnout fleet status`: the fleet as read now.
pub async fn status<S: FleetStore>(store: &S) -> Result<FleetRead, FleetError> {
    store.read().await
}
