//! What this instance knows of the fleet it follows (`[fleet]`): whether it has joined, whether
//! it knows it is behind the fleet's desired state, and the generations involved. The fleet
//! member (in the binary) writes it; the data plane's health path and the status read it. Held
//! by the [`crate::Router`], so both sides reach it through the one handle they share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;

/// One member of the fleet as this instance last heard of it (the status and the dashboard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// Its name.
    pub instance: String,
    /// The fleet generation it serves.
    pub applied: u64,
    /// Why it is behind, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behind: Option<String>,
    /// The turnout version it runs.
    pub version: String,
    /// When it applied its generation (ms since the Unix epoch).
    pub applied_ms: u64,
}

/// This instance's fleet, for `GET /v1/status` (`fleet`) and the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// The fleet's name.
    pub name: String,
    /// This instance's name in it.
    pub instance: String,
    /// The fleet generation this instance serves.
    pub applied: u64,
    /// The newest fleet generation it has seen.
    pub seen: u64,
    /// Whether the store answers it now.
    pub connected: bool,
    /// Why its health path fails, if it does (joining, or behind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// The time from the last commit to this instance applying it, in milliseconds.
    pub last_apply_ms: u64,
    /// The time from the last commit to the last member applying it, in milliseconds, once
    /// every member this instance knows of reports it (`None` until then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet_apply_ms: Option<u64>,
    /// Every member it knows of, this one included.
    pub members: Vec<MemberStatus>,
}

/// The fleet's view from this instance. Without `[fleet]` it stays [`FleetView::default`]:
/// nothing held, and the health path never consults it.
#[derive(Debug, Default)]
pub struct FleetView {
    /// Why the health path must fail now (not joined yet, or behind the fleet); `None`: pass.
    hold: ArcSwapOption<String>,
    /// The fleet generation this instance serves.
    applied: AtomicU64,
    /// The newest fleet generation this instance has seen.
    seen: AtomicU64,
    /// Whether the store answers this instance now.
    connected: AtomicBool,
    /// (fleet, instance), once a member.
    names: ArcSwapOption<(String, String)>,
    /// The roster as last heard.
    members: ArcSwap<Vec<MemberStatus>>,
    /// Commit to applied here, for the last change, in milliseconds.
    lag_ms: AtomicU64,
    /// When the newest generation seen was committed (ms since the Unix epoch).
    committed_ms: AtomicU64,
}

impl FleetView {
    /// Why the load balancer's health check must fail now, if it must: read by the health path
    /// (one atomic load; not on the request path).
    pub fn hold(&self) -> Option<Arc<String>> {
        self.hold.load_full()
    }

    /// The health path fails with `reason` from now on.
    pub fn hold_with(&self, reason: String) {
        self.hold.store(Some(Arc::new(reason)));
    }

    /// The health path passes again (as far as the fleet goes).
    pub fn release(&self) {
        self.hold.store(None);
    }

    /// Marks this instance member `instance` of `fleet` (the status and metrics then report
    /// the fleet).
    pub fn set_member(&self, fleet: &str, instance: &str) {
        self.names
            .store(Some(Arc::new((fleet.to_string(), instance.to_string()))));
    }

    /// Records the roster as last heard.
    pub fn set_members(&self, members: Vec<MemberStatus>) {
        self.members.store(Arc::new(members));
    }

    /// Members in the roster as last heard (0 outside a fleet, or before the first roster).
    pub fn member_count(&self) -> usize {
        self.members.load().len()
    }

    /// Records when the newest generation seen was committed.
    pub fn set_committed_ms(&self, ms: u64) {
        self.committed_ms.store(ms, Ordering::Relaxed);
    }

    /// Records the time from the last commit to its application here.
    pub fn set_lag_ms(&self, ms: u64) {
        self.lag_ms.store(ms, Ordering::Relaxed);
    }

    /// The fleet as this instance sees it (`None` without `[fleet]`).
    pub fn status(&self) -> Option<FleetStatus> {
        let names = self.names.load_full()?;
        let (applied, seen) = self.generations();
        let members = (**self.members.load()).clone();
        let committed = self.committed_ms.load(Ordering::Relaxed);
        let fleet_apply_ms =
            (!members.is_empty() && committed > 0 && members.iter().all(|m| m.applied == seen))
                .then(|| {
                    members
                        .iter()
                        .map(|m| m.applied_ms.saturating_sub(committed))
                        .max()
                        .unwrap_or(0)
                });
        Some(FleetStatus {
            name: names.0.clone(),
            instance: names.1.clone(),
            applied,
            seen,
            connected: self.connected(),
            hold: self.hold().map(|h| (*h).clone()),
            last_apply_ms: self.lag_ms.load(Ordering::Relaxed),
            fleet_apply_ms,
            members,
        })
    }

    /// Whether this instance follows a fleet.
    pub fn is_member(&self) -> bool {
        self.names.load().is_some()
    }

    /// Records the generation applied and the newest seen.
    pub fn set_generations(&self, applied: u64, seen: u64) {
        self.applied.store(applied, Ordering::Relaxed);
        self.seen.store(seen.max(applied), Ordering::Relaxed);
    }

    /// (applied, newest seen).
    pub fn generations(&self) -> (u64, u64) {
        (
            self.applied.load(Ordering::Relaxed),
            self.seen.load(Ordering::Relaxed),
        )
    }

    /// Records whether the store answers.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    /// Whether the store answered last.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_and_release_and_generations() {
        let v = FleetView::default();
        assert!(v.hold().is_none() && !v.is_member());
        assert!(v.status().is_none(), "no fleet, no fleet status");
        v.set_member("shop", "web-1");
        assert!(v.is_member());
        assert_eq!(v.status().map(|s| s.name), Some("shop".to_string()));
        v.hold_with("joining fleet shop".into());
        assert_eq!(
            v.hold().as_deref().map(String::as_str),
            Some("joining fleet shop")
        );
        v.release();
        assert!(v.hold().is_none());
        v.set_generations(3, 2);
        assert_eq!(v.generations(), (3, 3), "seen is never behind applied");
        v.set_generations(3, 5);
        assert_eq!(v.generations(), (3, 5));
        let member = |name: &str, applied, applied_ms| MemberStatus {
            instance: name.into(),
            applied,
            behind: None,
            version: "0".into(),
            applied_ms,
        };
        v.set_generations(5, 5);
        v.set_committed_ms(1_000);
        v.set_members(vec![member("a", 5, 1_004), member("b", 4, 900)]);
        assert_eq!(
            v.status().and_then(|s| s.fleet_apply_ms),
            None,
            "b has not applied 5"
        );
        v.set_members(vec![member("a", 5, 1_004), member("b", 5, 1_011)]);
        assert_eq!(v.status().and_then(|s| s.fleet_apply_ms), Some(11));
    }
}
