//! A rollout's book: what a rollout is asked to do and the reports it gives (under way, and the
//! last few), a fleet rollout's lease on this instance, and the [`StepCheck`] the binary gives
//! for `check_cmd`. Kept apart from `run.rs` so that `Control` holds the book without knowing
//! how a rollout runs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock: a lease's deadline runs under paused time in tests.
use tokio::time::Instant;

use serde::Serialize;
use turnout_config::rollout::RolloutPolicy;

use super::Window;

/// Rollouts kept in the history.
const HISTORY: usize = 10;
/// What a rollout is asked to do.
#[derive(Debug, Clone)]
pub struct RolloutRequest {
    /// The pool to roll out.
    pub to: String,
    /// Its steps, bake and checks.
    pub policy: RolloutPolicy,
    /// Skip the health gate before the first step and the last.
    pub force: bool,
    /// After the last step (the switch), wait this long at most for the baseline to drain.
    pub wait_drained: Option<Duration>,
    /// After the last step, close the baseline's tunnels (WebSockets) after this long.
    pub close_tunnels_after: Option<Duration>,
}

/// A rollout, under way or ended: what `GET /v1/rollout` and the status show.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// Numbers the rollouts of this process.
    pub id: u64,
    /// The pool rolled out.
    pub target: String,
    /// The pool it was live before.
    pub baseline: String,
    /// "running", "passed", "failed" or "aborted".
    pub outcome: &'static str,
    /// The target's share of new clients now, in percent.
    pub percent: u32,
    /// Its steps, bake and checks.
    pub policy: RolloutPolicy,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The steps judged so far, in order.
    pub steps: Vec<StepReport>,
    /// Why it failed or was aborted: the check and the figures on both sides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `wait_drained`: whether the baseline drained after the switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained: Option<bool>,
    /// Milliseconds from the start to the end (to the rollback, for a failed one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
    /// Held at its step by `POST /v1/rollout/pause` (a failing check still rolls it back).
    pub paused: bool,
    /// The step baking now, with its figures so far (verdict "baking"); refreshed at each
    /// recheck, gone once the step is judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baking: Option<StepReport>,
}

/// One step, judged.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The target's share of new clients in the step.
    pub percent: u32,
    /// The mirror phase: the share of requests copied to the target (no client saw it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<u32>,
    /// "pass" or "fail".
    pub verdict: &'static str,
    /// The check that failed: "error_rate", "error_ratio", "p95_latency", "p99_latency",
    /// "min_requests".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<&'static str>,
    /// The target's figures in the step.
    pub target: Window,
    /// The baseline's figures in the step.
    pub baseline: Window,
    /// How long the step ran before its verdict.
    pub ran_ms: u64,
}

/// The rollout under way (with the way to abort it) and the history.
#[derive(Debug, Default)]
pub(crate) struct RolloutBook {
    pub(crate) book: Mutex<Book>,
}

#[derive(Debug, Default)]
pub(crate) struct Book {
    pub(crate) current: Option<(RolloutReport, Arc<tokio::sync::Notify>)>,
    pub(crate) history: VecDeque<RolloutReport>,
    pub(crate) next_id: u64,
    pub(crate) hold: Option<FleetLease>,
}

/// A fleet rollout's lease on this instance (`POST /v1/rollout/hold`; "lease" in the code, so
/// as not to be taken for a pause's held requests): its coordinator renews it while the fleet is split;
/// if the coordinator goes silent past `deadline`, this instance goes back to `baseline` by
/// itself, so a coordinator that died never leaves the fleet split.
#[derive(Debug)]
pub(crate) struct FleetLease {
    pub(crate) id: u64,
    pub(crate) baseline: String,
    pub(crate) deadline: Instant,
    pub(crate) started_at: String,
}

/// The answer to a hold.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseReport {
    /// The pool the instance goes back to if the lease runs out.
    pub baseline: String,
    /// When it runs out unless renewed.
    pub expires_in_ms: u64,
}

impl RolloutBook {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // Only this module writes it, and never panics holding it.
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut RolloutReport)) {
        if let Some((report, _)) = self.lock().current.as_mut() {
            f(report);
        }
    }

    pub(crate) fn paused(&self) -> bool {
        self.lock().current.as_ref().is_some_and(|(r, _)| r.paused)
    }

    pub(crate) fn finish(&self, report: RolloutReport) {
        let mut book = self.lock();
        book.current = None;
        book.history.push_front(report);
        book.history.truncate(HISTORY);
    }
}

/// Runs a rollout's `check_cmd` once a step's own checks passed: `Ok` lets the step pass,
/// `Err` says why not. The binary gives one (`sh -c`, with the step in its environment);
/// turnout-core starts no process of its own.
pub trait StepCheck: Send + Sync + std::fmt::Debug + 'static {
    /// Runs `cmd` for a step of `percent` on `target` (from `baseline`).
    fn check(
        &self,
        cmd: &str,
        target: &str,
        baseline: &str,
        percent: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
}
