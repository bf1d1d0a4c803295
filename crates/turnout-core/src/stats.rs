//! The dashboard's time series (`GET /v1/stats`): every second, each pool's requests per
//! second, 5xx rate, p95 latency and requests in flight, from the pool's own counters (the
//! windows a guarded rollout judges), so the page needs no Prometheus. The last
//! [`POINTS`] seconds are kept per pool; a pool that is gone is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use turnout_config::PoolName;

use crate::pool::Pool;
use crate::rollout::Sample;

/// Points kept per pool: five minutes at one a second.
pub const POINTS: usize = 300;

/// How often the sampler looks.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Each pool's last minutes, a point a second, for the dashboard.
#[derive(Debug, Default)]
pub struct Stats {
    series: Mutex<BTreeMap<String, Series>>,
}

#[derive(Debug, Default)]
struct Series {
    last: Option<Sample>,
    points: VecDeque<Point>,
}

/// One pool's second.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Milliseconds since the Unix epoch, at the end of the second.
    pub t: u64,
    /// Requests per second.
    pub rps: f64,
    /// 5xx answers over answers (0 with none).
    pub error_rate: f64,
    /// Latency until the response head; `null` in a second without requests.
    pub p95_ms: Option<f64>,
    /// Requests in flight at the end of the second.
    pub in_flight: usize,
}

impl Stats {
    /// Takes one point per pool of `pools` (a snapshot's), `elapsed` after the last.
    pub fn sample(&self, pools: &BTreeMap<PoolName, Arc<Pool>>, elapsed: Duration) {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let secs = elapsed.as_secs_f64().max(0.001);
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.retain(|name, _| pools.keys().any(|p| p.as_str() == name));
        for (name, pool) in pools {
            let now = pool.metrics().sample();
            let s = series.entry(name.to_string()).or_default();
            if let Some(last) = &s.last {
                let w = now.since(last);
                if s.points.len() == POINTS {
                    s.points.pop_front();
                }
                s.points.push_back(Point {
                    t,
                    rps: w.requests as f64 / secs,
                    error_rate: w.error_rate,
                    p95_ms: w.p95_ms,
                    in_flight: pool.stats().in_flight(),
                });
            }
            s.last = Some(now);
        }
    }

    /// Each pool's points taken after `t` (milliseconds since the epoch), oldest first.
    pub fn since(&self, t: u64) -> BTreeMap<String, Vec<Point>> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    s.points.iter().filter(|p| p.t > t).cloned().collect(),
                )
            })
            .collect()
    }
}
