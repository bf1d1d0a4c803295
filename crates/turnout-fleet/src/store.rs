//! The store behind a fleet, as a trait: what a member and a coordinator need of it (a
//! linearizable read of the fleet's keys, leases, compare-and-swap transactions, a watch that
//! resumes from a revision). [`crate::etcd::EtcdStore`] is the one implementation; another
//! store (DynamoDB's conditional writes and TTLs, for teams without a cluster) implements the
//! same calls.
//!
//! The fleet's keys, under `/turnout/fleets/NAME/`: `desired` (the routing every member
//! serves), `prepare` (a change waiting for every member's acknowledgement, under the
//! coordinator's lease), `lock` (the coordinator, under the same lease), `roster` (rewritten at
//! every join, so a commit can tell nobody joined since its prepare), and `members/INSTANCE`
//! (each member's report, under its own lease).

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::desired::{Desired, MemberRecord, Prepare};
use crate::error::FleetError;

/// A value with the store revision it was last written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// The revision of its last write.
    pub revision: i64,
}

/// Everything under the fleet's keys, read at one revision.
#[derive(Debug, Clone, Default)]
pub struct FleetRead {
    /// The store's revision at the read: a watch resumes after it.
    pub revision: i64,
    /// The desired state (`None`: the fleet was never seeded).
    pub desired: Option<Versioned<Desired>>,
    /// A prepared change, if one is pending.
    pub prepare: Option<Versioned<Prepare>>,
    /// Who holds the lock, if anyone.
    pub lock: Option<Versioned<String>>,
    /// The revision of the last join (0: nobody joined yet).
    pub roster: i64,
    /// The members whose lease is alive.
    pub members: Vec<Versioned<MemberRecord>>,
}

/// What a watch reports, in store order.
#[derive(Debug, Clone)]
pub enum Event {
    /// The desired state was written (a commit).
    Desired(Versioned<Desired>),
    /// A change was prepared (`Some`), or the prepare went (`None`: committed, withdrawn, or
    /// its coordinator's lease ran out).
    Prepare(Option<Versioned<Prepare>>),
    /// The lock was taken (`Some`) or let go.
    Lock(Option<String>),
    /// Someone joined.
    Roster(i64),
    /// A member's report was written (`Some`) or its lease ended.
    Member(String, Option<Versioned<MemberRecord>>),
    /// A record that is not one turnout wrote: skipped, and said.
    Corrupt(FleetError),
    /// The watch ended (the connection broke, or its revision was compacted): re-read, and
    /// watch again from the read's revision.
    Ended(String),
}

/// The revisions a transaction compares: it commits only if each is still so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expect {
    /// The desired state's revision.
    pub desired: i64,
    /// The roster's revision.
    pub roster: i64,
    /// The prepare's revision (0: there must be none).
    pub prepare: i64,
}

/// A lease: an id the store ends after its time to live unless it is kept alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease(pub i64);

/// The calls a fleet makes of its store.
pub trait FleetStore: Clone + Send + Sync + 'static {
    /// The fleet's name.
    fn fleet(&self) -> &str;

    /// Every fleet key, read linearizably (a read the store's leader confirms).
    fn read(&self) -> impl Future<Output = Result<FleetRead, FleetError>> + Send;

    /// Writes the first desired state, unless there is one: `true` if this call wrote it.
    fn seed(&self, desired: &Desired) -> impl Future<Output = Result<bool, FleetError>> + Send;

    /// A new lease of `ttl`.
    fn grant(&self, ttl: Duration) -> impl Future<Output = Result<Lease, FleetError>> + Send;

    /// Keeps `lease` alive; returns when it ends (the store says it is gone, or it could not
    /// be renewed before its time to live ran out), with why.
    fn keep_alive(&self, lease: Lease, ttl: Duration) -> impl Future<Output = String> + Send;

    /// Ends `lease` now, and the keys held under it.
    fn revoke(&self, lease: Lease) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Joins: writes `member` under `lease` and rewrites the roster, only if the desired state
    /// is still at `desired_revision` and no change is prepared. `false`: something moved.
    fn join(
        &self,
        lease: Lease,
        member: &MemberRecord,
        desired_revision: i64,
    ) -> impl Future<Output = Result<bool, FleetError>> + Send;

    /// Rewrites this member's report under its lease.
    fn report(
        &self,
        lease: Lease,
        member: &MemberRecord,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Takes the lock for `holder` under `lease`: `Err(holder)` names who has it.
    fn lock(
        &self,
        lease: Lease,
        holder: &str,
    ) -> impl Future<Output = Result<Result<(), String>, FleetError>> + Send;

    /// Writes `prepare` under `lease` if `expect` holds (and the lock is under `lease`): its
    /// revision, or `None` if something moved.
    fn prepare(
        &self,
        lease: Lease,
        prepare: &Prepare,
        expect: Expect,
    ) -> impl Future<Output = Result<Option<i64>, FleetError>> + Send;

    /// Commits: writes `desired` and deletes the prepare, only if `expect` holds and the lock
    /// is still under `lease`. The commit's revision, or `None`: something moved, nothing
    /// written.
    fn commit(
        &self,
        lease: Lease,
        desired: &Desired,
        expect: Expect,
    ) -> impl Future<Output = Result<Option<i64>, FleetError>> + Send;

    /// Writes `desired` over the one at `desired_revision` only if nobody holds the lock and
    /// nothing is prepared: a member ending a rollout whose coordinator is gone. `false`:
    /// another member (or a coordinator) was first.
    fn restore(
        &self,
        desired: &Desired,
        desired_revision: i64,
    ) -> impl Future<Output = Result<bool, FleetError>> + Send;

    /// Deletes the prepare written at `revision`, if it is still that one.
    fn withdraw(&self, revision: i64) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// The fleet's events after `revision`, until the watch ends ([`Event::Ended`] is the last).
    fn watch(
        &self,
        after: i64,
    ) -> impl Future<Output = Result<mpsc::Receiver<Event>, FleetError>> + Send;
}
