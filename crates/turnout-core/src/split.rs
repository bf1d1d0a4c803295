//! [`Weights`]: how new clients are shared between pools. A switch is the split `{to: 100}`; a
//! canary is `{blue: 95, green: 5}`.

use std::collections::BTreeMap;
use std::fmt;

use turnout_config::PoolName;

/// The largest weight one pool may have (the split's total stays far from overflowing).
pub const MAX_POOL_WEIGHT: i64 = 1_000_000;

/// Pools with their weights: never empty, no zero weight (a pool at zero is simply absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights(BTreeMap<PoolName, u32>);

impl Weights {
    /// All new clients to `pool`.
    pub fn single(pool: PoolName) -> Weights {
        Weights(BTreeMap::from([(pool, 100)]))
    }

    /// Validates weights as given (by the admin API or the state file); each error names the
    /// pool. Pool names are checked for form here and for existence by the caller.
    pub fn parse<'a>(given: impl IntoIterator<Item = (&'a str, i64)>) -> Result<Weights, String> {
        let mut map = BTreeMap::new();
        for (name, weight) in given {
            let pool = PoolName::parse(name)?;
            if !(0..=MAX_POOL_WEIGHT).contains(&weight) {
                return Err(format!(
                    "weight {weight} for pool {name:?} is out of range: whole numbers from 0 to {MAX_POOL_WEIGHT}"
                ));
            }
            if weight > 0 {
                map.insert(pool, weight as u32);
            }
        }
        if map.is_empty() {
            return Err("every weight is zero: at least one pool must take traffic".into());
        }
        Ok(Weights(map))
    }

    /// The pool with the largest weight (the first by name on a tie): the live version.
    pub fn primary(&self) -> &PoolName {
        let mut best: Option<(&PoolName, u32)> = None;
        for (name, &w) in &self.0 {
            if best.is_none_or(|(_, b)| w > b) {
                best = Some((name, w));
            }
        }
        best.expect("weights are never empty").0
    }

    /// Pools with a weight.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No pool has a weight.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The weight of `pool`; 0 when it takes no new clients.
    pub fn get(&self, pool: &str) -> u32 {
        self.0.get(pool).copied().unwrap_or(0)
    }

    /// Each pool with its weight, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&PoolName, u32)> {
        self.0.iter().map(|(n, w)| (n, *w))
    }

    /// The share of `pool`, in percent.
    pub fn percent(&self, pool: &str) -> f64 {
        let total: u64 = self.0.values().map(|w| u64::from(*w)).sum();
        f64::from(self.get(pool)) * 100.0 / total as f64
    }

    /// As the status, the state file and the admin API show it.
    pub fn to_map(&self) -> BTreeMap<String, u32> {
        self.0.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, w)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_validated_and_zeros_dropped() {
        let w = Weights::parse([("blue", 95), ("green", 5), ("grey", 0)]).expect("ok");
        assert_eq!(w.to_string(), "blue=95 green=5");
        assert_eq!(w.primary().as_str(), "blue");
        assert_eq!((w.get("grey"), w.len()), (0, 2));
        assert_eq!(w.percent("green"), 5.0);
        let tie = Weights::parse([("green", 50), ("blue", 50)]).expect("ok");
        assert_eq!(tie.primary().as_str(), "blue");
        for (given, says) in [
            (vec![("blue", -1)], "weight -1 for pool \"blue\""),
            (vec![("blue", 0), ("green", 0)], "every weight is zero"),
            (vec![], "every weight is zero"),
            (vec![("bl ue", 1)], "invalid pool name"),
            (vec![("blue", MAX_POOL_WEIGHT + 1)], "out of range"),
        ] {
            let e = Weights::parse(given).expect_err(says);
            assert!(e.contains(says), "{e}");
        }
    }
}
