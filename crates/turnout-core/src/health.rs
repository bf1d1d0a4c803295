//! The health of one upstream server, as the request path reads it: two flags, both atomics.
//! `up` is the active checker's verdict (thresholds applied by the checker), `ejected` the
//! passive one (too many failed requests in a row). The details for people (last check, last
//! error) sit behind a mutex that only the checker and the status call touch.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use turnout_config::Passive;

/// One server's health: the active checks' verdict and the passive ejection, read by every request without a lock.
#[derive(Debug)]
pub struct ServerHealth {
    up: AtomicBool,
    ejected: AtomicBool,
    /// Failed requests in a row.
    failures: AtomicU32,
    /// Ejections in a row (reset by a success); doubles the next ejection's length.
    ejections: AtomicU32,
    /// Numbers each ejection, so a timer ending an old one cannot end a newer one.
    epoch: AtomicU64,
    detail: Mutex<Detail>,
}

/// What the last active check saw.
#[derive(Debug, Clone, Default)]
pub struct Detail {
    /// When the last active check ended.
    pub last_check: Option<SystemTime>,
    /// Why it failed, if it did.
    pub last_error: Option<String>,
}

impl Default for ServerHealth {
    /// A new server counts as up until its checks say otherwise, so registering a pool or
    /// starting turnout never opens with a burst of 503s.
    fn default() -> Self {
        ServerHealth {
            up: AtomicBool::new(true),
            ejected: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            epoch: AtomicU64::new(0),
            detail: Mutex::new(Detail::default()),
        }
    }
}

impl ServerHealth {
    /// May this server take a request now?
    #[inline]
    pub fn available(&self) -> bool {
        self.up.load(Ordering::Relaxed) && !self.ejected.load(Ordering::Relaxed)
    }

    /// The active checks' verdict.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Taken out by failed requests (until its backoff ends or a check passes).
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Sets the active verdict; true when it changed.
    pub fn set_up(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::Relaxed) != up
    }

    /// Records what an active check saw (for the status call).
    pub fn record_check(&self, result: &Result<(), String>) {
        let mut d = self
            .detail
            .lock()
            .expect("health detail lock is never poisoned");
        d.last_check = Some(SystemTime::now());
        d.last_error = result.as_ref().err().cloned();
    }

    /// What the last active check saw.
    pub fn detail(&self) -> Detail {
        self.detail
            .lock()
            .expect("health detail lock is never poisoned")
            .clone()
    }

    /// A request succeeded: the failure streak ends. Writes only when there was one, so the
    /// common case is two plain loads.
    #[inline]
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed. When this failure completes a streak of `passive.failures`, the server
    /// is ejected and the ejection's number and length are returned: the caller ends it after
    /// that long with [`ServerHealth::end_ejection`].
    pub fn record_failure(&self, passive: &Passive) -> Option<(u64, Duration)> {
        if !passive.enabled {
            return None;
        }
        let streak = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if streak < passive.failures || self.ejected.swap(true, Ordering::Relaxed) {
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let length = passive
            .ejection
            .saturating_mul(1u32 << n)
            .min(passive.max_ejection);
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        Some((epoch, length))
    }

    /// Ends ejection number `epoch` (or, with `None`, whatever ejection is in force: an active
    /// check passed). True when the server was ejected.
    pub fn end_ejection(&self, epoch: Option<u64>) -> bool {
        if let Some(epoch) = epoch {
            if self.epoch.load(Ordering::Relaxed) != epoch {
                return false;
            }
        }
        self.ejected.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive() -> Passive {
        Passive {
            enabled: true,
            failures: 3,
            ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(12),
        }
    }

    #[test]
    fn a_streak_of_failures_ejects_with_growing_backoff() {
        let h = ServerHealth::default();
        let p = passive();
        assert!(h.available());
        assert_eq!(h.record_failure(&p), None);
        h.record_success();
        assert_eq!(h.record_failure(&p), None);
        assert_eq!(h.record_failure(&p), None);
        let (e1, len) = h.record_failure(&p).expect("third in a row ejects");
        assert_eq!(len, Duration::from_secs(5));
        assert!(!h.available());
        assert!(h.end_ejection(Some(e1)));
        assert!(h.available());
        for _ in 0..2 {
            assert_eq!(h.record_failure(&p), None);
        }
        let (e2, len) = h.record_failure(&p).expect("ejected again");
        assert_eq!(len, Duration::from_secs(10), "doubled");
        assert!(e2 > e1, "each ejection has its own number");
        assert!(!h.end_ejection(Some(e1)), "an old timer ends nothing");
        assert!(h.end_ejection(None), "an active check ends it");
        let third = (0..3).filter_map(|_| h.record_failure(&p)).last();
        assert!(h.is_ejected());
        assert_eq!(
            third.map(|(_, l)| l),
            Some(Duration::from_secs(12)),
            "capped"
        );
        h.end_ejection(None);
        h.record_success();
        for _ in 0..2 {
            h.record_failure(&p);
        }
        assert_eq!(
            h.record_failure(&p).map(|(_, l)| l),
            Some(Duration::from_secs(5)),
            "a success resets the backoff"
        );
    }

    #[test]
    fn passive_off_never_ejects() {
        let h = ServerHealth::default();
        let p = Passive {
            enabled: false,
            ..passive()
        };
        for _ in 0..10 {
            assert_eq!(h.record_failure(&p), None);
        }
        assert!(h.available());
        assert!(h.set_up(false));
        assert!(!h.available());
        assert!(!h.set_up(false), "no change");
    }
}
