//! A fleet member: the task that keeps this instance on the fleet's desired routing.
//!
//! Joining: a linearizable read of the fleet; if a change is prepared, wait until it is
//! committed or withdrawn (so an instance started mid-switch comes up on the outcome); apply
//! the desired state (probing the pools it sends traffic to); then, in one transaction that
//! holds only if nothing moved since the read, report under a new lease and rewrite the roster.
//! Until the first join the health path fails ("joining"), so the load balancer sends nothing.
//!
//! Following: a watch from the revision joined at. A prepare is probed and held (the two-phase
//! switch of `Control`) and answered in the member's report; the commit is applied at once; a
//! withdrawn prepare is dropped. When the watch ends (a broken connection, a compacted
//! revision) the member re-reads and watches again; when its lease is lost it joins again. It
//! keeps serving its last state meanwhile (a store down for everyone must not fail the fleet
//! closed), and its health path fails only when it knows it is behind: it has seen a generation
//! it could not apply. It retries every second until it can.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use turnout_core::fleet::MemberStatus;
use turnout_core::{Command, Control};

use crate::desired::{now_ms, Desired, MemberRecord, Prepare};
use crate::error::FleetError;
use crate::store::{Event, FleetStore, Lease, Versioned};

/// This machine's host name: the default `[fleet] instance`, and where a coordinator runs.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Who this member is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its name in the fleet.
    pub instance: String,
    /// Its admin URL, for the roster.
    pub admin: Option<String>,
    /// Its membership lease.
    pub lease_ttl: Duration,
}

/// The member task's state.
#[derive(Debug)]
pub struct Member<S> {
    store: S,
    control: Control,
    me: Identity,
    record: MemberRecord,
    /// The newest desired state seen, whether applied or not, and its revision.
    latest: Option<Desired>,
    latest_revision: i64,
    /// A prepare answered here: its generation, and the local token if a switch was staged.
    staged: Option<(u64, Option<String>)>,
    /// Whether this member has joined once: until then its health path stays held.
    joined: bool,
    /// The lease it is a member under now.
    lease: Option<Lease>,
    /// The roster as last heard, for the status and the dashboard.
    roster: BTreeMap<String, MemberStatus>,
    /// The last report did not reach the store: sent again every second until it does (the
    /// coordinator waits on it).
    unreported: bool,
}

/// The task renewing the member's lease: it ends when the lease is lost, with why; dropped,
/// it stops renewing.
struct KeepAlive(tokio::task::JoinHandle<String>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a member waits after applying a commit before it reports it (see `on_desired`).
const REPORT_AFTER_APPLY: Duration = Duration::from_millis(150);

/// How long to wait between attempts when the store does not answer.
const RETRY: Duration = Duration::from_millis(500);

impl<S: FleetStore> Member<S> {
    /// A member of `store`'s fleet, changing the routing through `control`.
    pub fn new(store: S, control: Control, me: Identity) -> Member<S> {
        let record = MemberRecord {
            instance: me.instance.clone(),
            admin: me.admin.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..MemberRecord::default()
        };
        Member {
            store,
            control,
            me,
            record,
            latest: None,
            latest_revision: 0,
            staged: None,
            joined: false,
            lease: None,
            roster: BTreeMap::new(),
            unreported: false,
        }
    }

    /// Joins and follows the fleet until `stop` completes, then leaves the roster (its lease
    /// revoked, so no coordinator waits for it); `joined` is told at the first join. The health
    /// path is held ("joining") until then.
    pub async fn run(
        mut self,
        joined: oneshot::Sender<()>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::select! {
            () = self.serve(joined) => {}
            () = stop => {}
        }
        if let Some(lease) = self.lease.take() {
            if let Err(e) = self.store.revoke(lease).await {
                tracing::warn!(error = %e, "could not leave the fleet's roster; it drops this instance when the lease runs out");
            } else {
                tracing::info!(fleet = %self.store.fleet(), "left the fleet's roster");
            }
        }
    }

    async fn serve(&mut self, joined: oneshot::Sender<()>) {
        let view = self.control.router().fleet();
        view.set_member(self.store.fleet(), &self.me.instance);
        view.hold_with(format!(
            "joining fleet {}: not serving the fleet's routing yet",
            self.store.fleet()
        ));
        let mut joined = Some(joined);
        loop {
            match self.join().await {
                Ok((lease, revision)) => {
                    if let Some(tx) = joined.take() {
                        let _ = tx.send(());
                    }
                    self.lease = Some(lease);
                    let why = self.follow(lease, revision).await;
                    tracing::warn!(fleet = %self.store.fleet(), reason = %why, "left the fleet's roster; joining again");
                    self.lease = None;
                    let _ = self.store.revoke(lease).await;
                }
                Err(e) => {
                    self.control.router().fleet().set_connected(false);
                    tracing::warn!(fleet = %self.store.fleet(), error = %e, "could not join the fleet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// One join: read, wait out a pending prepare, apply, and register, all at one revision.
    async fn join(&mut self) -> Result<(Lease, i64), FleetError> {
        loop {
            let read = self.store.read().await?;
            self.control.router().fleet().set_connected(true);
            self.set_roster(&read.members);
            let Some(desired) = read.desired else {
                let seed = Desired::seed(&self.control.router().snapshot(), &self.me.instance);
                if self.store.seed(&seed).await? {
                    tracing::info!(fleet = %self.store.fleet(), generation = 1, "seeded the fleet's desired state from this instance's routing");
                }
                continue;
            };
            if let Some(p) = read.prepare {
                // A change is under way: come up on its outcome, not on what it replaces.
                self.wait_resolved(read.revision, &p.value).await?;
                continue;
            }
            if desired.value.rollout.is_some() && read.lock.is_none() {
                // A rollout whose coordinator is gone: its baseline first.
                self.latest = Some(desired.value.clone());
                self.latest_revision = desired.revision;
                self.orphaned().await;
                continue;
            }
            self.latest_revision = desired.revision;
            self.apply(&desired.value, false).await;
            let lease = self.store.grant(self.me.lease_ttl).await?;
            if self
                .store
                .join(lease, &self.record, desired.revision)
                .await?
            {
                tracing::info!(fleet = %self.store.fleet(), instance = %self.me.instance, generation = desired.value.generation, "joined the fleet");
                self.joined = true;
                if self.record.behind.is_none() {
                    self.control.router().fleet().release();
                }
                return Ok((lease, read.revision));
            }
            let _ = self.store.revoke(lease).await;
        }
    }

    /// Waits until the pending prepare is committed or withdrawn (or its time is up).
    async fn wait_resolved(&self, after: i64, prepare: &Prepare) -> Result<(), FleetError> {
        let mut events = self.store.watch(after).await?;
        let limit = Duration::from_millis(prepare.ttl_ms) + self.me.lease_ttl;
        let resolved = async {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Desired(_) | Event::Prepare(None) | Event::Ended(_) => return,
                    _ => {}
                }
            }
        };
        let _ = tokio::time::timeout(limit, resolved).await;
        Ok(())
    }

    /// Follows the fleet from `revision` until the lease is lost; returns why.
    async fn follow(&mut self, lease: Lease, revision: i64) -> String {
        let mut keep = KeepAlive(tokio::spawn({
            let store = self.store.clone();
            let ttl = self.me.lease_ttl;
            async move { store.keep_alive(lease, ttl).await }
        }));
        let mut events = match self.store.watch(revision).await {
            Ok(rx) => rx,
            Err(e) => return e.to_string(),
        };
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                why = &mut keep.0 => return why.unwrap_or_else(|e| e.to_string()),
                event = events.recv() => match event {
                    Some(Event::Desired(d)) => self.on_desired(lease, d).await,
                    Some(Event::Prepare(Some(p))) => self.on_prepare(lease, p).await,
                    Some(Event::Prepare(None)) => self.on_withdrawn(lease).await,
                    Some(Event::Corrupt(e)) => {
                        tracing::error!(fleet = %self.store.fleet(), error = %e, "a fleet record is not one turnout wrote; ignored");
                    }
                    ended @ (Some(Event::Ended(_)) | None) => {
                        if let Some(Event::Ended(why)) = ended {
                            tracing::info!(fleet = %self.store.fleet(), reason = %why, "the watch ended; reading the fleet again");
                        }
                        match self.resume(lease, &mut keep).await {
                            Ok(rx) => events = rx,
                            Err(why) => return why,
                        }
                    }
                    Some(Event::Member(name, record)) => self.heard(name, record.map(|r| r.value)),
                    Some(Event::Lock(None)) => self.orphaned().await,
                    Some(Event::Lock(Some(_)) | Event::Roster(_)) => {}
                },
                _ = retry.tick(), if self.record.behind.is_some() || self.unreported => {
                    if let Some(d) = self.latest.clone().filter(|_| self.record.behind.is_some()) {
                        self.apply(&d, false).await;
                    }
                    self.report(lease).await;
                }
            }
        }
    }

    /// After a watch ended: re-read (until the store answers, or the lease is lost), catch up,
    /// and watch again from the read's revision.
    async fn resume(
        &mut self,
        lease: Lease,
        keep: &mut KeepAlive,
    ) -> Result<mpsc::Receiver<Event>, String> {
        loop {
            let attempt = async {
                let read = self.store.read().await?;
                let rx = self.store.watch(read.revision).await?;
                Ok::<_, FleetError>((read, rx))
            };
            tokio::select! {
                why = &mut keep.0 => return Err(why.unwrap_or_else(|e| e.to_string())),
                result = attempt => match result {
                    Ok((read, rx)) => {
                        self.control.router().fleet().set_connected(true);
                        self.set_roster(&read.members);
                        if let Some(d) = read.desired {
                            self.on_desired(lease, d).await;
                        }
                        if read.lock.is_none() {
                            self.orphaned().await;
                        }
                        match read.prepare {
                            Some(p) if self.staged.as_ref().map(|s| s.0) != Some(p.value.next.generation) => {
                                self.on_prepare(lease, p).await;
                            }
                            None if self.staged.is_some() => self.on_withdrawn(lease).await,
                            _ => {}
                        }
                        return Ok(rx);
                    }
                    Err(e) => {
                        self.control.router().fleet().set_connected(false);
                        tracing::warn!(fleet = %self.store.fleet(), error = %e, "the store does not answer; serving the last state");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        }
    }

    /// A committed desired state: applied at once (the staged switch when this member
    /// prepared it, else probed first).
    async fn on_desired(&mut self, lease: Lease, d: Versioned<Desired>) {
        let generation = d.value.generation;
        if generation >= self.latest.as_ref().map_or(0, |l| l.generation) {
            self.latest_revision = d.revision;
        }
        if generation <= self.record.applied && self.record.behind.is_none() {
            return;
        }
        let mut prepared_here = false;
        if let Some((g, token)) = self.staged.take() {
            if g == generation {
                prepared_here = true;
                if let Some(token) = token {
                    if let Err(e) = self.control.two_phase().commit(&token).await {
                        tracing::warn!(error = %e, "the prepared switch could not be committed as staged; applying the fleet's state directly");
                    }
                }
            } else if let Some(token) = token {
                let _ = self.control.two_phase().abort(&token).await;
            }
        }
        self.apply(&d.value, prepared_here).await;
        // The report waits until the commit's fan-out to every member is over: fifty reports
        // written while etcd still sends the commit to the last watchers delayed those by up
        // to 80 ms (3 etcd members, 50 instances, benches/fleet-skew.sh); waiting 150 ms
        // brought the worst spread between the first and last member applied to 18 ms. The
        // coordinator learns of the application that much later; nothing serves later.
        tokio::time::sleep(REPORT_AFTER_APPLY).await;
        self.report(lease).await;
    }

    /// The lock went while the desired state says a rollout is under way: its coordinator is
    /// gone. Writes the baseline back (only if nobody was first), which every member, this one
    /// included, then applies from the watch.
    async fn orphaned(&mut self) {
        let Some(next) = self
            .latest
            .as_ref()
            .and_then(|d| d.abandoned(&self.me.instance))
        else {
            return;
        };
        match self.store.restore(&next, self.latest_revision).await {
            Ok(true) => {
                tracing::warn!(fleet = %self.store.fleet(), generation = next.generation, change = %next.change, "the rollout's coordinator is gone: restored its baseline for the fleet")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not restore the baseline of an abandoned rollout; another member will, or this one on its next read")
            }
        }
    }

    /// Brings the routing to `desired` and records the outcome (applied, or behind and why).
    async fn apply(&mut self, desired: &Desired, force: bool) {
        let view = self.control.router().fleet();
        self.latest = Some(desired.clone());
        match desired.apply(&self.control, force).await {
            Ok(()) => {
                if self.record.applied != desired.generation {
                    let lag = now_ms().saturating_sub(desired.committed_ms);
                    view.set_lag_ms(lag);
                    tracing::info!(fleet = %self.store.fleet(), generation = desired.generation, change = %desired.change, lag_ms = lag, "applied the fleet's routing");
                    self.record.applied_ms = now_ms();
                }
                self.record.applied = desired.generation;
                self.record.behind = None;
                if self.joined {
                    view.release();
                }
            }
            Err(e) => {
                let why = format!(
                    "behind fleet {}: generation {} ({}) not applied here: {e}",
                    self.store.fleet(),
                    desired.generation,
                    desired.change
                );
                if self.record.behind.as_deref() != Some(&why) {
                    tracing::error!(reason = %why, "this instance is behind its fleet; its health path fails until it catches up");
                }
                view.hold_with(why.clone());
                self.record.behind = Some(why);
            }
        }
        view.set_generations(self.record.applied, desired.generation);
        view.set_committed_ms(desired.committed_ms);
    }

    /// A prepared change: probe and hold it, then answer in the report.
    async fn on_prepare(&mut self, lease: Lease, p: Versioned<Prepare>) {
        let next = &p.value.next;
        if let Some((_, Some(token))) = self.staged.take() {
            let _ = self.control.two_phase().abort(&token).await;
        }
        let snapshot = self.control.router().snapshot();
        let ttl = Duration::from_millis(p.value.ttl_ms);
        let outcome = match next.split_command(&snapshot) {
            None => Ok(None),
            Some(command) => {
                let mark = match &command {
                    Command::Switch { .. } => Some(format!("fleet-g{}", next.generation)),
                    _ => None,
                };
                self.control
                    .two_phase()
                    .prepare(command, ttl, mark.as_deref())
                    .await
                    .map(|prepared| Some(prepared.token))
            }
        };
        match outcome {
            Ok(token) => {
                self.staged = Some((next.generation, token));
                self.record.prepared = Some(next.generation);
                self.record.refused = None;
            }
            Err(e) => {
                self.record.prepared = None;
                self.record.refused = Some((next.generation, e.to_string()));
            }
        }
        self.report(lease).await;
    }

    /// The prepare went without a commit: drop what was staged.
    async fn on_withdrawn(&mut self, lease: Lease) {
        if let Some((_, token)) = self.staged.take() {
            if let Some(token) = token {
                let _ = self.control.two_phase().abort(&token).await;
            }
            tracing::info!(fleet = %self.store.fleet(), "the prepared change was withdrawn; nothing changed");
        }
        if self.record.prepared.take().is_some() || self.record.refused.take().is_some() {
            self.report(lease).await;
        }
    }

    /// The roster from a read.
    fn set_roster(&mut self, members: &[Versioned<MemberRecord>]) {
        self.roster = members
            .iter()
            .map(|m| (m.value.instance.clone(), status_of(&m.value)))
            .collect();
        self.publish_roster();
    }

    /// A member's report, or its leaving (`None`).
    fn heard(&mut self, name: String, record: Option<MemberRecord>) {
        match record {
            Some(r) => {
                let status = status_of(&r);
                if self.roster.get(&name) == Some(&status) {
                    return;
                }
                self.roster.insert(name, status);
            }
            None => {
                self.roster.remove(&name);
            }
        }
        self.publish_roster();
    }

    fn publish_roster(&self) {
        self.control
            .router()
            .fleet()
            .set_members(self.roster.values().cloned().collect());
    }

    async fn report(&mut self, lease: Lease) {
        match self.store.report(lease, &self.record).await {
            Ok(()) => self.unreported = false,
            Err(e) => {
                self.control.router().fleet().set_connected(false);
                if !self.unreported {
                    tracing::warn!(error = %e, "could not report to the fleet; trying again every second");
                }
                self.unreported = true;
            }
        }
    }
}

fn status_of(r: &MemberRecord) -> MemberStatus {
    MemberStatus {
        instance: r.instance.clone(),
        applied: r.applied,
        behind: r.behind.clone(),
        version: r.version.clone(),
        applied_ms: r.applied_ms,
    }
}
