//! The guarded rollout's judgement: a window of one pool's own counters (two samples of its
//! request, 5xx and latency-histogram counters), and the verdict on a step from the target's
//! window beside the baseline's. Pure, with the book of rollouts (`book`); `crate::rollouts` runs the steps.

pub mod book;

use serde::{Deserialize, Serialize};
use turnout_config::rollout::RolloutPolicy;

/// A pool's counters at one moment, since start-up (see `PoolMetrics::sample`). A fleet
/// rollout adds up the samples of every instance (`GET /v1/rollout/sample`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Answers since start-up.
    pub requests: u64,
    /// Answers with a 5xx status.
    pub errors: u64,
    /// The latency histogram: (upper bound in seconds, requests at or under it), rising.
    pub buckets: Vec<(f64, u64)>,
}

/// What one pool did between two samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Window {
    /// Answers in the window.
    pub requests: u64,
    /// Of them, 5xx.
    pub errors: u64,
    /// `errors / requests` (0 with no requests).
    pub error_rate: f64,
    /// Latency until the response head, estimated from the histogram (linear within a
    /// bucket, as Prometheus's `histogram_quantile`); `None` with no requests.
    pub p95_ms: Option<f64>,
    /// As `p95_ms`, for p99.
    pub p99_ms: Option<f64>,
}

impl Sample {
    /// This sample and `other` added up (two instances' counters of the same pool).
    pub fn add(&mut self, other: &Sample) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
            return;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            if mine.0 == theirs.0 {
                mine.1 += theirs.1;
            }
        }
    }

    /// The window from `start` to this sample.
    pub fn since(&self, start: &Sample) -> Window {
        let requests = self.requests.saturating_sub(start.requests);
        let errors = self.errors.saturating_sub(start.errors);
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .map(|&(bound, count)| {
                let before = start
                    .buckets
                    .iter()
                    .find(|(b, _)| *b == bound)
                    .map_or(0, |&(_, c)| c);
                (bound, count.saturating_sub(before))
            })
            .collect();
        // Every finished request is both counted and observed, so the request count is also
        // the histogram's (whose `+Inf` bucket is not in `buckets`).
        let observed = requests;
        Window {
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p95_ms: quantile(&buckets, observed, 0.95).map(|s| s * 1000.0),
            p99_ms: quantile(&buckets, observed, 0.99).map(|s| s * 1000.0),
        }
    }
}

/// The `q` quantile (seconds) of `total` observations spread over cumulative `buckets`.
fn quantile(buckets: &[(f64, u64)], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            let (lo_bound, lo_count) = lower;
            let in_bucket = (count - lo_count) as f64;
            let into = if in_bucket == 0.0 {
                1.0
            } else {
                (rank - lo_count as f64) / in_bucket
            };
            return Some(lo_bound + (bound - lo_bound) * into);
        }
        lower = (bound, count);
    }
    // Beyond the last bound: all that can be said is "more than it".
    Some(lower.0)
}

/// The verdict on one step.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every check passed.
    Pass,
    /// `check` names the check that failed ("error_rate", "error_ratio", "p95_latency",
    /// "p99_latency"); `detail` gives the figures on both sides.
    Fail {
        /// The check.
        check: &'static str,
        /// Both sides' figures.
        detail: String,
    },
    /// Fewer requests on the target than `min_requests`: wait for more.
    TooFew,
}

/// Judges a step: the target pool's window beside the baseline's, by `policy`.
pub fn judge(policy: &RolloutPolicy, target: &Window, baseline: &Window) -> Verdict {
    if target.requests < policy.min_requests {
        return Verdict::TooFew;
    }
    let pct = |r: f64| format!("{:.1}%", r * 100.0);
    let sides = |t: String, b: String| {
        format!(
            "target {t} of {} requests, baseline {b} of {}",
            target.requests, baseline.requests
        )
    };
    if target.error_rate > policy.max_error_rate {
        return Verdict::Fail {
            check: "error_rate",
            detail: format!(
                "5xx rate {} is above the ceiling {} ({})",
                pct(target.error_rate),
                pct(policy.max_error_rate),
                sides(pct(target.error_rate), pct(baseline.error_rate))
            ),
        };
    }
    if baseline.requests > 0
        && target.error_rate > policy.error_floor
        && target.error_rate > policy.max_error_ratio * baseline.error_rate
    {
        return Verdict::Fail {
            check: "error_ratio",
            detail: format!(
                "5xx rate {} is above {}x the baseline's {} ({})",
                pct(target.error_rate),
                policy.max_error_ratio,
                pct(baseline.error_rate),
                sides(pct(target.error_rate), pct(baseline.error_rate))
            ),
        };
    }
    let floor_ms = policy.latency_floor.as_secs_f64() * 1000.0;
    for (check, ratio, t, b) in [
        (
            "p95_latency",
            policy.max_p95_ratio,
            target.p95_ms,
            baseline.p95_ms,
        ),
        (
            "p99_latency",
            policy.max_p99_ratio,
            target.p99_ms,
            baseline.p99_ms,
        ),
    ] {
        let (Some(t), Some(b)) = (t, b) else {
            continue;
        };
        if t > floor_ms && t > ratio * b {
            return Verdict::Fail {
                check,
                detail: format!(
                    "{} {t:.1} ms is above {ratio}x the baseline's {b:.1} ms and the floor {floor_ms:.0} ms ({})",
                    &check[..3],
                    sides(format!("{t:.1} ms"), format!("{b:.1} ms"))
                ),
            };
        }
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample of `n` requests, `errors` of them 5xx, all taking about `ms`.
    fn sample(n: u64, errors: u64, ms: f64) -> Sample {
        let bounds = [0.001, 0.005, 0.025, 0.1, 0.25, 1.0];
        Sample {
            requests: n,
            errors,
            buckets: bounds
                .iter()
                .map(|&b| (b, if ms / 1000.0 <= b { n } else { 0 }))
                .collect(),
        }
    }

    fn window(n: u64, errors: u64, ms: f64) -> Window {
        sample(n, errors, ms).since(&Sample::default())
    }

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            min_requests: 50,
            ..RolloutPolicy::default()
        }
    }

    #[test]
    fn a_window_is_the_difference_of_two_samples() {
        let start = sample(100, 2, 2.0);
        let mut end = sample(300, 12, 2.0);
        // 100 more requests in the (0.1, 0.25] bucket.
        end.requests += 100;
        for (bound, count) in &mut end.buckets {
            if *bound >= 0.25 {
                *count += 100;
            }
        }
        let w = end.since(&start);
        assert_eq!((w.requests, w.errors), (300, 10));
        assert!((w.error_rate - 10.0 / 300.0).abs() < 1e-9);
        let p95 = w.p95_ms.expect("p95");
        assert!((100.0..=250.0).contains(&p95), "{p95}");
        let p50 = quantile(
            &end.buckets
                .iter()
                .zip(&start.buckets)
                .map(|(a, b)| (a.0, a.1 - b.1))
                .collect::<Vec<_>>(),
            300,
            0.5,
        )
        .expect("p50");
        assert!(p50 <= 0.005, "{p50}");
        assert_eq!(Sample::default().since(&Sample::default()).p95_ms, None);
    }

    #[test]
    fn each_check_fails_on_its_own_figures() {
        let p = policy();
        let blue = window(1000, 0, 2.0);
        assert_eq!(judge(&p, &window(49, 0, 2.0), &blue), Verdict::TooFew);
        assert_eq!(judge(&p, &window(100, 0, 2.0), &blue), Verdict::Pass);
        // 20% errors: above the 5% ceiling.
        match judge(&p, &window(100, 20, 2.0), &blue) {
            Verdict::Fail { check, detail } => {
                assert_eq!(check, "error_rate");
                assert!(
                    detail.contains("20.0%") && detail.contains("0.0%"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
        // 3%: under the ceiling, but over twice the baseline's 1% and over the 1% floor.
        let blue_errors = window(1000, 10, 2.0);
        let v = judge(&p, &window(100, 3, 2.0), &blue_errors);
        assert!(
            matches!(
                v,
                Verdict::Fail {
                    check: "error_ratio",
                    ..
                }
            ),
            "{v:?}"
        );
        // 0.5%: over twice a baseline with none, but under the floor: noise.
        assert_eq!(judge(&p, &window(1000, 5, 2.0), &blue), Verdict::Pass);
        // +200 ms.
        let v = judge(&p, &window(100, 0, 200.0), &blue);
        assert!(
            matches!(
                v,
                Verdict::Fail {
                    check: "p95_latency",
                    ..
                }
            ),
            "{v:?}"
        );
        // Five times slower, but under the 50 ms floor: not judged slow.
        assert_eq!(
            judge(&p, &window(100, 0, 20.0), &window(1000, 0, 4.0)),
            Verdict::Pass
        );
    }
}
