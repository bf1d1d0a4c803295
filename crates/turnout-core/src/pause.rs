//! Pause and hold: while a pause is on, new requests wait here (their bodies unread, nothing
//! sent to any app) until a resume releases them in arrival order, or they are shed with 503:
//! after `max_hold`, or when more than `max_requests` or `max_bytes` of heads wait (the oldest
//! of the client holding most goes first), or when one client address holds more than
//! `max_per_client` (its own oldest goes: one client cannot push the others out). Only requests that arrive during a pause touch the queue's lock; the request path
//! otherwise sees `None` in the snapshot.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
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
    /// When the pause began.
    pub since: SystemTime,
    /// The longest a request is held.
    pub max_hold: Duration,
    max_requests: usize,
    max_bytes: u64,
    max_per_client: usize,
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Requests waiting, by client address.
    per_client: HashMap<IpAddr, usize>,
    bytes: u64,
    /// Set by the resume: a request that finds it goes on without waiting.
    released: bool,
    /// Counters for the status.
    held_total: u64,
    shed_total: u64,
}

#[derive(Debug)]
struct Waiting {
    client: IpAddr,
    bytes: u64,
    tx: oneshot::Sender<Release>,
}

impl Queue {
    /// Takes the waiting request at `i` out, with its bytes and its client's count.
    fn remove(&mut self, i: usize) -> Option<Waiting> {
        let w = self.waiting.remove(i)?;
        self.bytes -= w.bytes;
        if let Some(n) = self.per_client.get_mut(&w.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&w.client);
            }
        }
        Some(w)
    }

    /// Sheds the oldest waiting request of `client`.
    fn shed_oldest_of(&mut self, client: IpAddr) {
        if let Some(i) = self.waiting.iter().position(|w| w.client == client) {
            if let Some(w) = self.remove(i) {
                self.shed_total += 1;
                let _ = w.tx.send(Release::Shed);
            }
        }
    }

    /// The client holding the most requests now.
    fn heaviest(&self) -> Option<IpAddr> {
        self.per_client
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(ip, _)| *ip)
    }

    /// Drops the waiting requests whose receiver is gone (answered, or their client left).
    fn forget_closed(&mut self) {
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].tx.is_closed() {
                self.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// A request's place in the queue: resolves when it is released or shed.
#[derive(Debug)]
pub enum Held {
    /// Held: resolves when released or shed.
    Waiting(oneshot::Receiver<Release>),
    /// The pause had ended already.
    Released,
}

/// What the status shows of a pause.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PauseStats {
    /// Requests held now.
    pub held: usize,
    /// Their heads' bytes.
    pub held_bytes: u64,
    /// Requests held since the pause began.
    pub held_total: u64,
    /// Requests shed since the pause began.
    pub shed_total: u64,
}

impl Pause {
    /// A pause with `policy`'s bounds, holding each request at most `max_hold` (the policy's unless given).
    pub fn new(policy: &PausePolicy, max_hold: Option<Duration>) -> Pause {
        Pause {
            since: SystemTime::now(),
            max_hold: max_hold.unwrap_or(policy.max_hold),
            max_requests: policy.max_requests,
            max_bytes: policy.max_bytes,
            max_per_client: policy.max_per_client,
            queue: Mutex::default(),
        }
    }

    /// Queues a request from `client` whose head is `bytes` long. Past `max_per_client` the
    /// client's own oldest waiting request is shed; past `max_requests` or `max_bytes`, the
    /// oldest of the client holding the most.
    pub fn hold(&self, client: IpAddr, bytes: u64) -> Held {
        let mut q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.released {
            return Held::Released;
        }
        let (tx, rx) = oneshot::channel();
        q.waiting.push_back(Waiting { client, bytes, tx });
        q.bytes += bytes;
        q.held_total += 1;
        let count = {
            let n = q.per_client.entry(client).or_insert(0);
            *n += 1;
            *n
        };
        let over = |q: &Queue| {
            q.waiting.len() > self.max_requests || (q.bytes > self.max_bytes && q.waiting.len() > 1)
        };
        if count > self.max_per_client || over(&q) {
            // Requests whose clients left first (only when over a bound: it walks the queue).
            q.forget_closed();
        }
        while q.per_client.get(&client).copied().unwrap_or(0) > self.max_per_client {
            q.shed_oldest_of(client);
        }
        while over(&q) {
            let Some(heaviest) = q.heaviest() else { break };
            q.shed_oldest_of(heaviest);
        }
        Held::Waiting(rx)
    }

    /// Holds a request from `client` whose head is `bytes` long: true when the resume released
    /// it, false when it is to be shed (held past `max_hold`, or shed past the bounds).
    pub async fn wait(&self, client: IpAddr, bytes: u64) -> bool {
        let rx = match self.hold(client, bytes) {
            Held::Released => return true,
            Held::Waiting(rx) => rx,
        };
        match tokio::time::timeout(self.max_hold, rx).await {
            Ok(Ok(Release::Go) | Err(_)) => true,
            Ok(Ok(Release::Shed)) => false,
            Err(_) => {
                self.gave_up();
                false
            }
        }
    }

    /// A held request's `max_hold` passed (it is answered 503): counted as shed, and the
    /// requests no longer waiting (this one, and any whose client left) stop counting.
    pub fn gave_up(&self) {
        let mut q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.shed_total += 1;
        q.forget_closed();
    }

    /// The resume: every waiting request goes on, in the order it came.
    pub fn release(&self) {
        let mut q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.released = true;
        q.bytes = 0;
        q.per_client.clear();
        for w in q.waiting.drain(..) {
            let _ = w.tx.send(Release::Go);
        }
    }

    /// Its counters now.
    pub fn stats(&self) -> PauseStats {
        let q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        PauseStats {
            held: q.waiting.iter().filter(|w| !w.tx.is_closed()).count(),
            held_bytes: q.bytes,
            held_total: q.held_total,
            shed_total: q.shed_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_requests: usize, max_bytes: u64) -> PausePolicy {
        PausePolicy {
            max_hold: Duration::from_secs(30),
            max_requests,
            max_bytes,
            max_per_client: max_requests,
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    fn waiting(h: Held) -> oneshot::Receiver<Release> {
        match h {
            Held::Waiting(rx) => rx,
            Held::Released => panic!("released"),
        }
    }

    #[test]
    fn the_oldest_is_shed_past_the_bounds_and_the_rest_released_in_order() {
        let pause = Pause::new(&policy(2, 1000), None);
        let mut a = waiting(pause.hold(A, 10));
        let mut b = waiting(pause.hold(A, 10));
        let mut c = waiting(pause.hold(A, 10));
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
        let mut d = waiting(pause.hold(A, 995));
        assert_eq!(b.try_recv(), Ok(Release::Shed));
        assert_eq!(c.try_recv(), Ok(Release::Shed));
        pause.release();
        assert_eq!(d.try_recv(), Ok(Release::Go));
        assert!(
            matches!(pause.hold(A, 10), Held::Released),
            "after the resume, no wait"
        );
    }

    #[test]
    fn requests_whose_clients_left_are_not_shed_in_place_of_live_ones() {
        let pause = Pause::new(&policy(2, 1000), None);
        let gone = waiting(pause.hold(A, 10));
        let mut live = waiting(pause.hold(A, 10));
        drop(gone);
        let mut newest = waiting(pause.hold(A, 10));
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
        let a = waiting(pause.hold(A, 100));
        let _b = waiting(pause.hold(A, 50));
        drop(a);
        pause.gave_up();
        let s = pause.stats();
        assert_eq!((s.held, s.held_bytes, s.shed_total), (1, 50, 1));
    }

    #[test]
    fn one_client_past_its_share_sheds_its_own_oldest_not_the_others() {
        let pause = Pause::new(
            &PausePolicy {
                max_per_client: 3,
                ..policy(10, 1_000_000)
            },
            None,
        );
        let mut others: Vec<_> = (0..3).map(|_| waiting(pause.hold(B, 10))).collect();
        let mut flood: Vec<_> = (0..60).map(|_| waiting(pause.hold(A, 10))).collect();
        for rx in &mut others {
            assert!(rx.try_recv().is_err(), "another client's request was shed");
        }
        let shed = flood
            .iter_mut()
            .map(|rx| rx.try_recv())
            .filter(|r| *r == Ok(Release::Shed))
            .count();
        assert_eq!(shed, 57, "the flood keeps its 3 newest");
        let s = pause.stats();
        assert_eq!((s.held, s.shed_total), (6, 57));
        pause.release();
        for rx in &mut others {
            assert_eq!(rx.try_recv(), Ok(Release::Go));
        }
    }

    #[test]
    fn past_the_total_the_heaviest_client_gives_way() {
        let pause = Pause::new(
            &PausePolicy {
                max_per_client: 8,
                ..policy(10, 1_000_000)
            },
            None,
        );
        let mut b: Vec<_> = (0..3).map(|_| waiting(pause.hold(B, 10))).collect();
        let mut a: Vec<_> = (0..8).map(|_| waiting(pause.hold(A, 10))).collect();
        // 11 > 10: A holds most, so A's oldest goes.
        assert_eq!(a[0].try_recv(), Ok(Release::Shed));
        assert!(b.iter_mut().all(|rx| rx.try_recv().is_err()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_held_past_max_hold_is_shed_and_one_resumed_in_time_goes() {
        let pause =
            std::sync::Arc::new(Pause::new(&policy(10, 1000), Some(Duration::from_secs(30))));
        let started = tokio::time::Instant::now();
        let late = {
            let pause = std::sync::Arc::clone(&pause);
            tokio::spawn(async move { pause.wait(A, 10).await })
        };
        tokio::time::sleep(Duration::from_secs(20)).await;
        let on_time = {
            let pause = std::sync::Arc::clone(&pause);
            tokio::spawn(async move { pause.wait(B, 10).await })
        };
        // The first has waited its 30 s; the second only 10 of them.
        tokio::time::sleep(Duration::from_millis(10_001)).await;
        assert!(!late.await.expect("join"), "shed at max_hold");
        assert!(started.elapsed() >= Duration::from_secs(30));
        pause.release();
        assert!(on_time.await.expect("join"), "released by the resume");
        let s = pause.stats();
        assert_eq!((s.held, s.held_total, s.shed_total), (0, 2, 1));
        assert!(pause.wait(A, 10).await, "after the resume, no wait");
    }
}
