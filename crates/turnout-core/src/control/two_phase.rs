//! The two-phase switch a fleet uses: prepare on every instance, then commit on every one, or
//! abort on every one. A named service over [`Control`]'s one writer: it stages a change
//! (probed, held under a token for its time to live, a fleet mark armed) and commits it through
//! the same write every other change takes. Only the admin API calls it; the data plane sees
//! only the result.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Control;
use crate::command::Command;
use crate::error::CoreError;
use crate::snapshot::{FleetMark, RoutingSnapshot};

/// The two-phase switch of one [`Control`]: [`Control::two_phase`].
#[derive(Debug, Clone, Copy)]
pub struct TwoPhase<'a> {
    control: &'a Control,
}

impl Control {
    /// The two-phase switch over this writer.
    pub fn two_phase(&self) -> TwoPhase<'_> {
        TwoPhase { control: self }
    }
}

/// A switch that passed its probe and waits for its commit.
#[derive(Debug, Clone)]
pub(super) struct Staged {
    token: String,
    /// A `Switch` or a `Split`.
    command: Command,
    /// The generation it was probed at: a commit after any other change is refused.
    generation: u64,
    expires: Instant,
    ttl: Duration,
    /// The fleet switch's mark, if the prepare came with one.
    mark: Option<String>,
}

/// The answer to a prepare: what a commit needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Prepared {
    /// What the commit or the abort names.
    pub token: String,
    /// The pool a prepared switch goes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The weights a prepared split sets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<std::collections::BTreeMap<String, u32>>,
    /// The generation it was probed at: a commit after any other change is refused.
    pub generation: u64,
    /// How long it is held for its commit.
    pub expires_in_ms: u64,
}

impl TwoPhase<'_> {
    /// Checks that a switch to `to` would be accepted now (the pool exists, has servers, and a
    /// fresh probe finds a healthy one), and holds it for `ttl` under a new token. Nothing
    /// changes until the commit. Refused while another prepared switch is pending.
    ///
    /// With a `mark` (from a fleet switch), requests carrying that mark's cookie go to `to`
    /// from now on: a client the new version served on an instance that committed first stays
    /// on the new version here too.
    pub async fn prepare(
        &self,
        command: Command,
        ttl: Duration,
        mark: Option<&str>,
    ) -> Result<Prepared, CoreError> {
        self.control.refuse_if_frozen()?;
        if let Some(m) = mark.filter(|m| !FleetMark::valid(m)) {
            return Err(CoreError::Invalid(format!(
                "invalid mark {m:?}: 1 to 64 of A-Z a-z 0-9 . _ -"
            )));
        }
        let to = match &command {
            Command::Switch { to } => Some(to.clone()),
            Command::Split { .. } if mark.is_some() => {
                return Err(CoreError::Invalid(
                    "a mark goes with a switch (\"to\"), not with a split".into(),
                ))
            }
            Command::Split { .. } => None,
            other => {
                return Err(CoreError::Invalid(format!(
                    "only a switch or a split can be prepared, not {other}"
                )))
            }
        };
        let current = self.control.inner.router.snapshot();
        let next = command.apply(&current)?;
        self.control.gate(&command).await?;
        let weights = match &command {
            Command::Split { .. } => Some(
                next.as_ref()
                    .map_or_else(|| current.weights.to_map(), |n| n.weights.to_map()),
            ),
            _ => None,
        };
        let now = Instant::now();
        let staged = Staged {
            token: new_token(current.generation),
            command,
            generation: current.generation,
            expires: now + ttl,
            ttl,
            mark: mark.map(str::to_owned),
        };
        {
            let mut slot = self.staged();
            if let Some(pending) = slot.as_ref().filter(|p| p.expires > now) {
                return Err(CoreError::AlreadyPrepared {
                    token: pending.token.clone(),
                    change: pending.command.to_string(),
                    expires_in_ms: millis(pending.expires - now),
                });
            }
            *slot = Some(staged.clone());
        }
        if let (Some(m), Some(to)) = (mark, &to) {
            self.set_prepared_mark(m, to, ttl).await;
        }
        tracing::info!(target: "turnout::admin", change = %staged.command, token = %staged.token, generation = staged.generation, ttl = ?ttl, mark = mark.unwrap_or("-"), "switch prepared");
        // It expires by itself: the slot empties and the log says so.
        let control = self.control.clone();
        let token = staged.token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            let two_phase = control.two_phase();
            if let Some(staged) = two_phase.take_staged(&token) {
                two_phase.expired(&staged).await;
            }
        });
        Ok(Prepared {
            token: staged.token,
            to,
            weights,
            generation: staged.generation,
            expires_in_ms: millis(ttl),
        })
    }

    /// Applies the switch prepared under `token`, at once (its probe was the prepare's). Refused
    /// when the token is unknown or expired, or when anything changed the routing since.
    pub async fn commit(&self, token: &str) -> Result<Arc<RoutingSnapshot>, CoreError> {
        let staged = self
            .take_staged(token)
            .ok_or_else(|| CoreError::NotPrepared {
                token: token.to_string(),
            })?;
        if staged.expires <= Instant::now() {
            // A commit that comes after the time to live but before the expiry's own task ran
            // took the staged switch out of the slot: the expiry happens here instead.
            self.expired(&staged).await;
            return Err(CoreError::NotPrepared {
                token: token.to_string(),
            });
        }
        let command = staged.command;
        let live_mark = staged.mark.as_deref().map(|m| (m, staged.ttl));
        let result = self
            .control
            .write(command, Some((token, staged.generation)), live_mark)
            .await;
        if result.is_err() {
            self.clear_prepared_mark(staged.mark.as_deref()).await;
        }
        result
    }

    /// A prepared switch whose time ran out, taken from the slot: its mark goes, and the log
    /// says so.
    async fn expired(&self, staged: &Staged) {
        self.clear_prepared_mark(staged.mark.as_deref()).await;
        tracing::warn!(target: "turnout::admin", token = %staged.token, "prepared switch expired without a commit; nothing was changed");
    }

    /// Drops the switch prepared under `token`; nothing changes.
    pub async fn abort(&self, token: &str) -> Result<(), CoreError> {
        let staged = self
            .take_staged(token)
            .ok_or_else(|| CoreError::NotPrepared {
                token: token.to_string(),
            })?;
        self.clear_prepared_mark(staged.mark.as_deref()).await;
        tracing::info!(target: "turnout::admin", %token, "prepared switch aborted");
        Ok(())
    }

    /// Publishes the current routing plus a prepared mark: same generation, nothing persisted
    /// (a mark lives no longer than its prepare, which a restart ends anyway).
    async fn set_prepared_mark(&self, value: &str, to: &str, ttl: Duration) {
        let _writer = self.control.inner.writer.lock().await;
        let current = self.control.inner.router.snapshot();
        let Ok(pool) = current.pool(to) else { return };
        let mut next = (*current).clone();
        next.mark = Some(Arc::new(FleetMark::new(
            value,
            Arc::clone(pool),
            false,
            ttl,
        )));
        self.control.inner.router.publish(Arc::new(next));
    }

    /// Takes back the prepared mark `value`, if the live snapshot still has it.
    async fn clear_prepared_mark(&self, value: Option<&str>) {
        let Some(value) = value else { return };
        let _writer = self.control.inner.writer.lock().await;
        let current = self.control.inner.router.snapshot();
        if current
            .mark
            .as_ref()
            .is_some_and(|m| !m.live && m.value == value)
        {
            let mut next = (*current).clone();
            next.mark = None;
            self.control.inner.router.publish(Arc::new(next));
        }
    }

    /// The switch prepared here, if one is pending, for the status call.
    pub fn prepared(&self) -> Option<PreparedStatus> {
        let now = Instant::now();
        self.staged()
            .as_ref()
            .filter(|s| s.expires > now)
            .map(|s| PreparedStatus {
                change: s.command.to_string(),
                expires_in_ms: millis(s.expires - now),
                mark: s.mark.clone(),
            })
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Option<Staged>> {
        // Held for a few instructions, never across an await; a panic while held cannot leave
        // the slot half-written, so a poisoned lock is still usable.
        self.control
            .inner
            .staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Empties the slot if it holds `token`.
    fn take_staged(&self, token: &str) -> Option<Staged> {
        let mut slot = self.staged();
        match slot.as_ref() {
            Some(s) if s.token == token => slot.take(),
            _ => None,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A token nobody can mistake for another prepare's: the generation, the time, and a count.
/// (An identifier, not a secret: the admin token guards the API.)
fn new_token(generation: u64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "g{generation}-{nanos:x}-{}",
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What `prepared` shows: never the token, which is for the fleet command that asked.
#[derive(Debug, serde::Serialize)]
pub struct PreparedStatus {
    /// What the commit would do: "switch to green", "split blue=90 green=10".
    pub change: String,
    /// When it expires.
    pub expires_in_ms: u64,
    /// The fleet mark armed with it, if any.
    pub mark: Option<String>,
}
