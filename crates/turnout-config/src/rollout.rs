//! `[rollout]`: how a guarded rollout steps toward its pool and what makes it roll back. The
//! same policy comes from the config file and, field by field, from a `POST /v1/rollout` body;
//! both go through [`RolloutPolicy::check`].

use std::time::Duration;

use serde::Deserialize;

use crate::duration::HumanDuration;

/// A validated rollout policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RolloutPolicy {
    /// The target pool's share of new clients at each step, in percent, rising; the last is 100
    /// (a normal switch).
    pub steps: Vec<u32>,
    /// How long each step runs before it is judged.
    #[serde(with = "humantime_serde_ms")]
    pub bake: Duration,
    /// Requests the target pool must answer in a step's window before it is judged.
    pub min_requests: u64,
    /// How much longer than `bake` a step waits for `min_requests`; then the rollout fails.
    #[serde(with = "humantime_serde_ms")]
    pub max_wait: Duration,
    /// The target's 5xx rate above which a step fails, whatever the baseline's (0.05 = 5%).
    pub max_error_rate: f64,
    /// A step also fails when the target's 5xx rate is above this many times the baseline's
    /// and above `error_floor`.
    pub max_error_ratio: f64,
    /// The 5xx rate below which the ratio is not judged (so 1 error in 100 is no "10 times the baseline").
    pub error_floor: f64,
    /// A step fails when the target's p95 (p99) latency is above this many times the
    /// baseline's and above `latency_floor`.
    pub max_p95_ratio: f64,
    /// As `max_p95_ratio`, for p99.
    pub max_p99_ratio: f64,
    /// Latencies below this are not judged by ratio.
    #[serde(with = "humantime_serde_ms")]
    pub latency_floor: Duration,
    /// Before the first step, copy this share of live requests (percent, 0 for none) to the
    /// target for a bake, its answers thrown away, and judge it like a step.
    pub mirror_percent: u32,
    /// The methods a mirror copies. Non-idempotent methods only when listed here.
    pub mirror_methods: Vec<String>,
    /// A request whose body is longer than this many bytes (or of unknown length) is not
    /// copied; a copied body is kept in memory until the original has sent it.
    pub mirror_max_body: u64,
    /// A command (`sh -c`) run once a step's own checks passed; the step passes only if it
    /// exits 0 (a smoke test of the new version, say). Config file only: never from an API
    /// call, which must not be able to run commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_cmd: Option<String>,
}

/// Every float of a checked policy is finite (never NaN), so equality is total.
impl Eq for RolloutPolicy {}

/// Durations in answers as whole milliseconds.
mod humantime_serde_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            steps: vec![5, 25, 50, 100],
            bake: Duration::from_secs(60),
            min_requests: 100,
            max_wait: Duration::from_secs(300),
            max_error_rate: 0.05,
            max_error_ratio: 2.0,
            error_floor: 0.01,
            max_p95_ratio: 1.5,
            max_p99_ratio: 2.0,
            latency_floor: Duration::from_millis(50),
            check_cmd: None,
            mirror_percent: 0,
            mirror_methods: vec!["GET".into(), "HEAD".into(), "OPTIONS".into()],
            mirror_max_body: 64 * 1024,
        }
    }
}

/// `[rollout]` as written, and the fields a `POST /v1/rollout` body may override: every one
/// optional, unset ones keep the value underneath.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutOverrides {
    /// `[rollout] steps`.
    pub steps: Option<Vec<u32>>,
    /// `[rollout] bake`.
    pub bake: Option<HumanDuration>,
    /// `[rollout] min_requests`.
    pub min_requests: Option<u64>,
    /// `[rollout] max_wait`.
    pub max_wait: Option<HumanDuration>,
    /// `[rollout] max_error_rate`.
    pub max_error_rate: Option<f64>,
    /// `[rollout] max_error_ratio`.
    pub max_error_ratio: Option<f64>,
    /// `[rollout] error_floor`.
    pub error_floor: Option<f64>,
    /// `[rollout] max_p95_ratio`.
    pub max_p95_ratio: Option<f64>,
    /// `[rollout] max_p99_ratio`.
    pub max_p99_ratio: Option<f64>,
    /// `[rollout] latency_floor`.
    pub latency_floor: Option<HumanDuration>,
    /// `[rollout] check_cmd`.
    pub check_cmd: Option<String>,
    /// `[rollout] mirror_percent`.
    pub mirror_percent: Option<u32>,
    /// `[rollout] mirror_methods`.
    pub mirror_methods: Option<Vec<String>>,
    /// `[rollout] mirror_max_body`.
    pub mirror_max_body: Option<u64>,
}

impl RolloutPolicy {
    /// This policy with `over`'s fields in place of its own, checked. The error names the field.
    pub fn merged(&self, over: &RolloutOverrides) -> Result<RolloutPolicy, (&'static str, String)> {
        let mut p = self.clone();
        if let Some(steps) = &over.steps {
            p.steps = steps.clone();
        }
        let set_d = |into: &mut Duration, from: &Option<HumanDuration>| {
            if let Some(d) = from {
                *into = d.0;
            }
        };
        set_d(&mut p.bake, &over.bake);
        set_d(&mut p.max_wait, &over.max_wait);
        set_d(&mut p.latency_floor, &over.latency_floor);
        if let Some(cmd) = &over.check_cmd {
            p.check_cmd = Some(cmd.clone()).filter(|c| !c.trim().is_empty());
        }
        if let Some(m) = over.mirror_percent {
            p.mirror_percent = m;
        }
        if let Some(n) = over.mirror_max_body {
            p.mirror_max_body = n;
        }
        if let Some(methods) = &over.mirror_methods {
            p.mirror_methods = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        }
        if let Some(n) = over.min_requests {
            p.min_requests = n;
        }
        for (into, from) in [
            (&mut p.max_error_rate, over.max_error_rate),
            (&mut p.max_error_ratio, over.max_error_ratio),
            (&mut p.error_floor, over.error_floor),
            (&mut p.max_p95_ratio, over.max_p95_ratio),
            (&mut p.max_p99_ratio, over.max_p99_ratio),
        ] {
            if let Some(v) = from {
                *into = v;
            }
        }
        p.check()?;
        Ok(p)
    }

    /// Whether the policy makes sense; the error names the field and what is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let steps = &self.steps;
        if steps.is_empty() {
            return Err(("steps", "needs at least one step, the last 100".into()));
        }
        if let Some(s) = steps.iter().find(|s| !(1..=100).contains(*s)) {
            return Err(("steps", format!("{s} is not a percentage from 1 to 100")));
        }
        if steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(("steps", format!("{steps:?} must rise step by step")));
        }
        if steps.last() != Some(&100) {
            return Err(("steps", format!("{steps:?} must end at 100 (the switch)")));
        }
        if self.mirror_percent > 100 {
            return Err((
                "mirror_percent",
                format!("{} is not a percentage from 0 to 100", self.mirror_percent),
            ));
        }
        if self.mirror_percent > 0 && self.mirror_methods.is_empty() {
            return Err(("mirror_methods", "needs at least one method to copy".into()));
        }
        if let Some(m) = self
            .mirror_methods
            .iter()
            .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            return Err(("mirror_methods", format!("{m:?} is not a method")));
        }
        if self.bake.is_zero() {
            return Err(("bake", "must be longer than 0s".into()));
        }
        for (field, rate) in [
            ("max_error_rate", self.max_error_rate),
            ("error_floor", self.error_floor),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err((
                    field,
                    format!("{rate} is not a rate from 0 to 1 (0.05 = 5%)"),
                ));
            }
        }
        for (field, ratio) in [
            ("max_error_ratio", self.max_error_ratio),
            ("max_p95_ratio", self.max_p95_ratio),
            ("max_p99_ratio", self.max_p99_ratio),
        ] {
            if !(ratio.is_finite() && ratio >= 1.0) {
                return Err((field, format!("{ratio} must be a ratio of at least 1")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_merged_and_checked_by_field() {
        let base = RolloutPolicy::default();
        let over = RolloutOverrides {
            steps: Some(vec![10, 100]),
            max_error_rate: Some(0.1),
            ..RolloutOverrides::default()
        };
        let p = base.merged(&over).expect("valid");
        assert_eq!((p.steps.clone(), p.max_error_rate), (vec![10, 100], 0.1));
        assert_eq!(p.bake, base.bake);
        for (steps, why) in [
            (vec![], "at least one"),
            (vec![0, 100], "not a percentage"),
            (vec![50, 25, 100], "rise"),
            (vec![5, 50], "end at 100"),
        ] {
            let over = RolloutOverrides {
                steps: Some(steps),
                ..RolloutOverrides::default()
            };
            let (field, message) = base.merged(&over).expect_err("refused");
            assert_eq!(field, "steps");
            assert!(message.contains(why), "{message}");
        }
        let over = RolloutOverrides {
            max_p95_ratio: Some(0.5),
            ..RolloutOverrides::default()
        };
        assert_eq!(base.merged(&over).expect_err("refused").0, "max_p95_ratio");
        let over = RolloutOverrides {
            max_error_rate: Some(5.0),
            ..RolloutOverrides::default()
        };
        assert_eq!(base.merged(&over).expect_err("refused").0, "max_error_rate");
    }
}
