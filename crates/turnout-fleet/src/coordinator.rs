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

    /// The time between the first member applying and the last (the window in which the
    /// fleet served both), if all did.
    pub fn spread(&self) -> Option<Duration> {
        let last = self.skew()?;
        let first = self.applied.values().flatten().min()?;
        Some(last.saturating_sub(*first))
    }
}

/// Runs `change` on `store`'s fleet; `progress` is told each phase.
pub async fn change<S: FleetStore>(
    store: &S,
    change: &Change,
    plan: &Plan,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Committed, FleetError> {
    let mut held = Held::take(store, plan).await?;
    let result = held.commit(change, None, plan, progress).await;
    held.release().await;
    result
}

/// The fleet's lock, held: changes are committed under it, one after another (a rollout's
/// steps), until it is released (or the coordinator dies, and its lease with it).
#[derive(Debug)]
pub struct Held<'a, S> {
    store: &'a S,
    lease: Lease,
    keep: tokio::task::JoinHandle<String>,
    /// Store writes so far (the lease, the lock).
    writes: u64,
}

impl<'a, S: FleetStore> Held<'a, S> {
    /// Takes the lock under a new lease of the plan's ttl, kept alive until released.
    pub async fn take(store: &'a S, plan: &Plan) -> Result<Held<'a, S>, FleetError> {
        let lease = store.grant(plan.ttl).await?;
        let keep = tokio::spawn({
            let store = store.clone();
            let ttl = plan.ttl;
            async move { store.keep_alive(lease, ttl).await }
        });
        let held = Held {
            store,
            lease,
            keep,
            writes: 2,
        };
        match store.lock(lease, &plan.who).await {
            Ok(Ok(())) => Ok(held),
            Ok(Err(holder)) => {
                held.release().await;
                Err(FleetError::Busy {
                    fleet: store.fleet().to_string(),
                    holder,
                })
            }
            Err(e) => {
                held.release().await;
                Err(e)
            }
        }
    }

    /// Whether the lock is still held (its lease renewed).
    pub fn alive(&self) -> bool {
        !self.keep.is_finished()
    }

    /// Lets the lock go (and any prepare left under it).
    pub async fn release(self) {
        self.keep.abort();
        let _ = self.store.revoke(self.lease).await;
    }

    /// One change under the lock: prepare, acknowledgements, commit. With `rollout`, the
    /// desired state written says a rollout is under way (members restore its baseline if
    /// the lock goes without it ending).
    pub async fn commit(
        &mut self,
        change: &Change,
        rollout: Option<crate::desired::UnderWay>,
        plan: &Plan,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Committed, FleetError> {
        let mut writes = std::mem::take(&mut self.writes);
        self.rounds(change, rollout, plan, progress, &mut writes)
            .await
    }

    async fn rounds(
        &self,
        change: &Change,
        rollout: Option<crate::desired::UnderWay>,
        plan: &Plan,
        progress: &mut (dyn FnMut(&str) + Send),
        writes: &mut u64,
    ) -> Result<Committed, FleetError> {
        let (store, lease) = (self.store, self.lease);
        // A member that joins between the read and the prepare moves the roster: read again.
        for _round in 0..3 {
            let read = store.read().await?;
            let Some(desired) = read.desired.clone() else {
                return Err(FleetError::Empty {
                    fleet: store.fleet().to_string(),
                });
            };
            let mut next = desired.value.next(change, &plan.who)?;
            next.rollout = rollout.clone();
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
            *writes += 1;
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
            *writes += acked.len() as u64;
            if let Some(pause) = plan.pause_before_commit {
                progress(&format!(
                    "drill: waiting {} before the commit",
                    humantime_secs(pause)
                ));
                tokio::time::sleep(pause).await;
            }
            if !self.alive() {
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
            *writes += 1;
            progress(&format!(
                "committed generation {}; waiting for every member to apply it",
                next.generation
            ));
            let applied = applications(store, committed_at, &acked, &next, plan).await;
            *writes += applied.values().filter(|a| a.is_some()).count() as u64;
            // The lease's revoke, when released.
            return Ok(Committed {
                desired: next,
                applied,
                writes: *writes + 1,
            });
        }
        Err(FleetError::Refused(
            "members kept joining during the prepare; try again".into(),
        ))
    }
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
    let deadline = Instant::now() + plan.apply_timeout;
    let mut from = after - 1;
    // A watch that ends (its etcd member died) is resumed from a fresh read.
    while Instant::now() < deadline && applied.values().any(Option::is_none) {
        let Ok(mut events) = store.watch(from).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(read) = store.read().await {
                from = read.revision;
                note_applied(&read, next, &mut applied);
            }
            continue;
        };
        while applied.values().any(Option::is_none) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Member(name, Some(m)))) if m.value.applied >= next.generation => {
                    if let Some(slot) = applied.get_mut(&name) {
                        *slot = Some(delay(next, &m.value));
                    }
                }
                Ok(Some(Event::Member(name, None))) => {
                    applied.remove(&name);
                }
                Ok(Some(Event::Ended(_)) | None) => {
                    // Read what was missed, and watch again from there.
                    if let Ok(read) = store.read().await {
                        from = read.revision;
                        note_applied(&read, next, &mut applied);
                    }
                    break;
                }
                Err(_) => return applied,
                Ok(Some(_)) => {}
            }
        }
    }
    applied
}

/// How long after `next`'s commit member `m` applied it.
fn delay(next: &Desired, m: &MemberRecord) -> Duration {
    Duration::from_millis(m.applied_ms.saturating_sub(next.committed_ms))
}

/// Notes each member of `read` that serves `next`'s generation.
fn note_applied(
    read: &FleetRead,
    next: &Desired,
    applied: &mut BTreeMap<String, Option<Duration>>,
) {
    for m in &read.members {
        if m.value.applied >= next.generation {
            if let Some(slot) = applied.get_mut(&m.value.instance) {
                *slot = Some(delay(next, &m.value));
            }
        }
    }
}
