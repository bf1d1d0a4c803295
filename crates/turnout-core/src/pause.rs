//! Pause and hold: while a pause is on, new requests wait here (their bodies unread, nothing
//! sent to any app) until a resume releases them in arrival order, or they are shed with 503:
//! after `max_hold`, or, oldest first, when more than `max_requests` or `max_bytes` of heads
//! wait. Only requests that arrive during a pause touch the queue's lock; the request path
//! otherwise sees `None` in the snapshot.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use turnout_config::PausePolicy;

/// What a held request is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Resumed: route it now, against the routing state of that moment.
    Go,
    /// Shed to keep the queue within its bounds: answer 503.
    Shed,
}

/// One pause, from `turnout pause` to `turnout resume`.
#[derive(Debug)]
pub struct Pause {
    pub since: SystemTime,
    pub max_hold: Duration,
    max_requests: usize,
    max_bytes: u64,
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<(u64, oneshot::Sender<Release>)>,
    bytes: u64,
    /// Set by the resume: a request that finds it goes on without waiting.
    released: bool,
    /// Counters for the status.
    held_total: u64,
    shed_total: u64,
}

/// A request's place in the queue: resolves when it is released or shed.
#[derive(Debug)]
pub enum Held {
    Waiting(oneshot::Receiver<Release>),
    /// The pause had ended already.
    Released,
}

/// What the status shows of a pause.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PauseStats {
    pub held: usize,
    pub held_bytes: u64,
    pub held_total: u64,
    pub shed_total: u64,
}

impl Pause {
    pub fn new(policy: &PausePolicy, max_hold: Option<Duration>) -> Pause {
        Pause {
            since: SystemTime::now(),
            max_hold: max_hold.unwrap_or(policy.max_hold),
            max_requests: policy.max_requests,
            max_bytes: policy.max_bytes,
            queue: Mutex::default(),
        }
    }

    /// Queues a request whose head is `bytes` long; sheds the oldest waiting ones while the
    /// queue is over its bounds.
    pub fn hold(&self, bytes: u64) -> Held {
        let mut q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.released {
            return Held::Released;
        }
        let (tx, rx) = oneshot::channel();
        q.waiting.push_back((bytes, tx));
        q.bytes += bytes;
        q.held_total += 1;
        let over = |q: &Queue| {
            q.waiting.len() > self.max_requests || (q.bytes > self.max_bytes && q.waiting.len() > 1)
        };
        if over(&q) {
            // Requests whose clients left first (only when over a bound: it walks the queue).
            forget_closed(&mut q);
        }
        while over(&q) {
            let Some((b, oldest)) = q.waiting.pop_front() else {
                break;
            };
            q.bytes -= b;
            q.shed_total += 1;
            let _ = oldest.send(Release::Shed);
        }
        Held::Waiting(rx)
    }

    /// A held request's `max_hold` passed (it is answered 503): counted as shed, and the
    /// requests no longer waiting (this one, and any whose client left) stop counting.
    pub fn gave_up(&self) {
        let mut q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.shed_total += 1;
        forget_closed(&mut q);
    }

    /// The resume: every waiting request goes on, in the order it came.
    pub fn release(&self) {
        let mut q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.released = true;
        q.bytes = 0;
        for (_, tx) in q.waiting.drain(..) {
            let _ = tx.send(Release::Go);
        }
    }

    pub fn stats(&self) -> PauseStats {
        let q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        PauseStats {
            held: q.waiting.iter().filter(|(_, tx)| !tx.is_closed()).count(),
            held_bytes: q.bytes,
            held_total: q.held_total,
            shed_total: q.shed_total,
        }
    }
}

/// Drops the waiting requests whose receiver is gone (answered, or their client left), and
/// their bytes.
fn forget_closed(q: &mut Queue) {
    let mut bytes = q.bytes;
    q.waiting.retain(|(b, tx)| {
        let keep = !tx.is_closed();
        if !keep {
            bytes -= b;
        }
        keep
    });
    q.bytes = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_requests: usize, max_bytes: u64) -> PausePolicy {
        PausePolicy {
            max_hold: Duration::from_secs(30),
            max_requests,
            max_bytes,
        }
    }

    fn waiting(h: Held) -> oneshot::Receiver<Release> {
        match h {
            Held::Waiting(rx) => rx,
            Held::Released => panic!("released"),
        }
    }

    #[test]
    fn the_oldest_is_shed_past_the_bounds_and_the_rest_released_in_order() {
        let pause = Pause::new(&policy(2, 1000), None);
        let mut a = waiting(pause.hold(10));
        let mut b = waiting(pause.hold(10));
        let mut c = waiting(pause.hold(10));
        assert_eq!(
            a.try_recv(),
            Ok(Release::Shed),
            "over 2 requests: the oldest goes"
        );
        assert!(b.try_recv().is_err() && c.try_recv().is_err());
        let s = pause.stats();
        assert_eq!(
            (s.held, s.held_bytes, s.held_total, s.shed_total),
            (2, 20, 3, 1)
        );
        // Bytes: a large head sheds the older ones, never itself alone.
        let mut d = waiting(pause.hold(995));
        assert_eq!(b.try_recv(), Ok(Release::Shed));
        assert_eq!(c.try_recv(), Ok(Release::Shed));
        pause.release();
        assert_eq!(d.try_recv(), Ok(Release::Go));
        assert!(
            matches!(pause.hold(10), Held::Released),
            "after the resume, no wait"
        );
    }

    #[test]
    fn requests_whose_clients_left_are_not_shed_in_place_of_live_ones() {
        let pause = Pause::new(&policy(2, 1000), None);
        let gone = waiting(pause.hold(10));
        let mut live = waiting(pause.hold(10));
        drop(gone);
        let mut newest = waiting(pause.hold(10));
        assert!(
            live.try_recv().is_err() && newest.try_recv().is_err(),
            "the one gone made room"
        );
        assert_eq!(pause.stats().shed_total, 0);
    }

    #[test]
    fn requests_that_gave_up_stop_counting() {
        let pause = Pause::new(&policy(10, 1000), Some(Duration::from_millis(5)));
        assert_eq!(pause.max_hold, Duration::from_millis(5));
        let a = waiting(pause.hold(100));
        let _b = waiting(pause.hold(50));
        drop(a);
        pause.gave_up();
        let s = pause.stats();
        assert_eq!((s.held, s.held_bytes, s.shed_total), (1, 50, 1));
    }
}
