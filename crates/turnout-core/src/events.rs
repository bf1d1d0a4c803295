//! What happened lately, for people watching (the dashboard, `GET /v1/events`): routing
//! changes, servers going down or coming back, ejections, upgrades. An in-memory ring of the
//! last [`CAPACITY`], each numbered, so a reader asks only for what it has not seen. Never on a
//! request's path: written by the single writer, the checker and the ejection of a server.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// Events kept.
pub const CAPACITY: usize = 200;

/// The recent events (routing and health changes), the last [`CAPACITY`], for the dashboard.
#[derive(Debug, Default)]
pub struct Events {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Event>,
    next: u64,
}

tokio::task_local! {
    /// Who is acting, for the events pushed meanwhile: set by the admin API around each call
    /// (`CLI`, `fleet`, `dashboard`, `API (curl/8.5.0)`) and by the rollout guard around its
    /// steps. Events pushed outside any (health checks, ejections) are turnout's own.
    pub static ACTOR: String;
}

/// Who acts now (see [`ACTOR`]).
pub fn actor() -> String {
    ACTOR
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "turnout".to_owned())
}

/// One event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// 1, 2, 3... in this process.
    pub id: u64,
    /// RFC 3339, milliseconds.
    pub at: String,
    /// `switch`, `rollback`, `split`, `pool`, `rules`, `mirror`, `maintenance`, `pause`,
    /// `resume`, `health`, `ejected`, `upgrade`.
    pub kind: &'static str,
    /// What happened, in words.
    pub message: String,
    /// Who made it happen: `CLI`, `fleet`, `dashboard`, `API (...)`, `rollout guard`, or
    /// `turnout` itself (health checks, ejections, upgrades).
    pub by: String,
}

impl Events {
    /// Records an event of `kind`, by whoever acts now ([`actor`]).
    pub fn push(&self, kind: &'static str, message: String) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.next += 1;
        let id = ring.next;
        if ring.events.len() == CAPACITY {
            ring.events.pop_front();
        }
        ring.events.push_back(Event {
            id,
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind,
            message,
            by: actor(),
        });
    }

    /// The events numbered above `after` still kept, oldest first.
    pub fn since(&self, after: u64) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.events
            .iter()
            .filter(|e| e.id > after)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_events_numbered() {
        let events = Events::default();
        for i in 0..CAPACITY + 5 {
            events.push("switch", format!("event {i}"));
        }
        let all = events.since(0);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].id, 6);
        assert_eq!(all[0].message, "event 5");
        let last = events.since(all[CAPACITY - 2].id);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].id, (CAPACITY + 5) as u64);
        assert!(events.since(last[0].id).is_empty());
    }
}
