//! What this instance knows of the fleet it follows (`[fleet]`): whether it has joined, whether
//! it knows it is behind the fleet's desired state, and the generations involved. The fleet
//! member (in the binary) writes it; the data plane's health path and the status read it. Held
//! by the [`crate::Router`], so both sides reach it through the one handle they share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// The fleet's view from this instance. Without `[fleet]` it stays [`FleetView::default`]:
/// nothing held, and the health path never consults it.
#[derive(Debug, Default)]
pub struct FleetView {
    /// Why the health path must fail now (not joined yet, or behind the fleet); `None`: pass.
    hold: ArcSwapOption<String>,
    /// Whether this instance follows a fleet at all.
    member: AtomicBool,
    /// The fleet generation this instance serves.
    applied: AtomicU64,
    /// The newest fleet generation this instance has seen.
    seen: AtomicU64,
    /// Whether the store answers this instance now.
    connected: AtomicBool,
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

    /// Marks this instance a fleet member (the status and metrics then report the fleet).
    pub fn set_member(&self) {
        self.member.store(true, Ordering::Relaxed);
    }

    /// Whether this instance follows a fleet.
    pub fn is_member(&self) -> bool {
        self.member.load(Ordering::Relaxed)
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
    }
}
