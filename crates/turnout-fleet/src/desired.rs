//! The fleet's records, as they are stored (JSON): the desired routing every member serves, a
//! coordinator's prepared change, and what each member reports; the changes an operator makes
//! ([`Change`]) and how one builds the next desired state; and how a member brings its own
//! routing to a desired state through its `Control`.
//!
//! Records ignore fields they do not know (no `deny_unknown_fields`, unlike the config file):
//! during `turnout fleet upgrade` old and new versions read the same keys.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use turnout_core::{Command, Control, CoreError, MaintenanceSpec, RoutingSnapshot, Rule, RuleSpec};

use crate::error::FleetError;

/// The fleet's desired routing: the one key every member follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Counts every committed change, from 1 (the first member's seed).
    pub generation: u64,
    /// The fleet's pools, by name (the seeding member's).
    pub pools: Vec<String>,
    /// The live split (a switch is one pool at 100); zero weights are left out.
    pub weights: BTreeMap<String, u32>,
    /// The split before the last switch or split: what a rollback goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<BTreeMap<String, u32>>,
    /// Maintenance mode: on with this message (`""`: each member's `[maintenance] message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
    /// New requests held (`turnout fleet pause`) until a resume.
    #[serde(default)]
    pub paused: bool,
    /// The A/B rules, in order (`turnout fleet rules`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// A guarded rollout under way: while it is set, the split lives only as long as the
    /// coordinator's lock. If the lock goes without the rollout ending, the first member to
    /// see it writes the baseline back (every member then applies it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<UnderWay>,
    /// What the last change was, and who made it, for the status.
    pub change: String,
    /// Who made it (the coordinator's `user@host:pid`).
    pub by: String,
    /// When it was committed, in milliseconds since the Unix epoch: members measure their lag
    /// from it.
    pub committed_ms: u64,
}

/// A guarded fleet rollout under way (in [`Desired::rollout`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnderWay {
    /// The pool every member goes back to if the coordinator dies.
    pub baseline: String,
    /// The pool being rolled out.
    pub to: String,
    /// The coordinator.
    pub by: String,
}

/// A coordinator's change, prepared and waiting for every member's acknowledgement. Held under
/// the coordinator's lock lease: if the coordinator dies, it goes, and nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    /// The desired state the commit writes (its generation is the current one plus one).
    pub next: Desired,
    /// How long members hold their prepared switch, in milliseconds.
    pub ttl_ms: u64,
}

/// What a member reports under its lease: who it is, what it serves, and its answer to the
/// pending prepare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MemberRecord {
    /// The instance's name (`[fleet] instance`).
    pub instance: String,
    /// Its admin API, for `turnout fleet upgrade` and operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The turnout version it runs.
    pub version: String,
    /// The fleet generation it serves.
    pub applied: u64,
    /// When it applied it (ms since the Unix epoch).
    pub applied_ms: u64,
    /// The generation of a prepare it acknowledged (probed, held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared: Option<u64>,
    /// Why it refused the pending prepare (with the generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<(u64, String)>,
    /// Why it is behind the fleet (its health path fails meanwhile); `None`: it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind: Option<String>,
}

/// An operator's change to the fleet's routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Every new client to `to`.
    Switch {
        /// The pool.
        to: String,
    },
    /// Back to the split before the last switch or split.
    Rollback,
    /// Share new clients by weight.
    Split {
        /// Each pool with its weight.
        weights: Vec<(String, u32)>,
    },
    /// Hold new requests.
    Pause,
    /// Release them.
    Resume,
    /// Replace the A/B rules (in order; the first match wins).
    Rules {
        /// The rules, as `PUT /v1/rules` takes them.
        rules: Vec<RuleSpec>,
    },
    /// Maintenance mode on (with a message, or each member's own) or off.
    Maintenance {
        /// On or off.
        on: bool,
        /// The message, when on.
        message: Option<String>,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Switch { to } => write!(f, "switch to {to}"),
            Change::Rollback => f.write_str("rollback"),
            Change::Split { weights } => {
                f.write_str("split")?;
                for (p, w) in weights {
                    write!(f, " {p}={w}")?;
                }
                Ok(())
            }
            Change::Rules { rules } => write!(f, "rules ({} of them)", rules.len()),
            Change::Pause => f.write_str("pause"),
            Change::Resume => f.write_str("resume"),
            Change::Maintenance { on: true, .. } => f.write_str("maintenance on"),
            Change::Maintenance { on: false, .. } => f.write_str("maintenance off"),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The largest record turnout writes or reads (etcd's own limit is 1.5 MiB): a larger value
/// under the fleet's keys is refused as corrupt, not parsed.
pub const MAX_RECORD: usize = 64 * 1024;

/// Parses a stored record, naming the key when it is not one turnout wrote.
pub fn parse<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, FleetError> {
    if bytes.len() > MAX_RECORD {
        return Err(FleetError::Corrupt {
            key: key.to_string(),
            detail: format!("{} bytes, more than {MAX_RECORD}", bytes.len()),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| FleetError::Corrupt {
        key: key.to_string(),
        detail: e.to_string(),
    })
}

fn nonzero(weights: impl IntoIterator<Item = (String, u32)>) -> BTreeMap<String, u32> {
    weights.into_iter().filter(|(_, w)| *w > 0).collect()
}

impl Desired {
    /// The first desired state of a fleet: this member's routing now.
    pub fn seed(snapshot: &RoutingSnapshot, by: &str) -> Desired {
        Desired {
            generation: 1,
            pools: snapshot.pools.keys().map(|p| p.to_string()).collect(),
            weights: nonzero(snapshot.weights.to_map()),
            previous: snapshot
                .previous
                .as_ref()
                .map(|p| nonzero(p.to_map()))
                .filter(|p| !p.is_empty()),
            maintenance: snapshot.maintenance.as_ref().map(|m| m.message.clone()),
            paused: snapshot.pause.is_some(),
            rules: snapshot.rules.iter().map(Rule::spec).collect(),
            rollout: None,
            change: "seeded from the first member's routing".into(),
            by: by.to_string(),
            committed_ms: now_ms(),
        }
    }

    /// The desired state after `change`, one generation on; an error names what is wrong
    /// (an unknown pool, a rollback with nothing to go back to, a change that changes nothing).
    pub fn next(&self, change: &Change, by: &str) -> Result<Desired, FleetError> {
        let mut next = self.clone();
        let known = |pool: &str| -> Result<(), FleetError> {
            if self.pools.iter().any(|p| p == pool) {
                Ok(())
            } else {
                Err(FleetError::Invalid(format!(
                    "no pool named {pool:?} in the fleet (pools: {})",
                    self.pools.join(", ")
                )))
            }
        };
        match change {
            Change::Switch { to } => {
                known(to)?;
                next.weights = BTreeMap::from([(to.clone(), 100)]);
                next.previous = Some(self.weights.clone());
            }
            Change::Split { weights } => {
                let mut map = BTreeMap::new();
                for (pool, w) in weights {
                    known(pool)?;
                    if map.insert(pool.clone(), *w).is_some() {
                        return Err(FleetError::Invalid(format!("pool {pool:?} given twice")));
                    }
                }
                let map = nonzero(map);
                if map.is_empty() {
                    return Err(FleetError::Invalid(
                        "a split needs a pool with a weight above 0".into(),
                    ));
                }
                next.weights = map;
                next.previous = Some(self.weights.clone());
            }
            Change::Rollback => {
                let Some(previous) = self.previous.clone() else {
                    return Err(FleetError::Invalid(
                        "nothing to roll back to: the fleet has had no switch or split".into(),
                    ));
                };
                next.previous = Some(std::mem::replace(&mut next.weights, previous));
            }
            Change::Rules { rules } => {
                for (i, spec) in rules.iter().enumerate() {
                    Rule::parse(spec)
                        .map_err(|e| FleetError::Invalid(format!("rule {}: {e}", i + 1)))?;
                    known(&spec.to)
                        .map_err(|e| FleetError::Invalid(format!("rule {}: {e}", i + 1)))?;
                }
                next.rules = rules.clone();
            }
            Change::Pause => next.paused = true,
            Change::Resume => next.paused = false,
            Change::Maintenance { on, message } => {
                if message.as_ref().is_some_and(|m| m.len() > 4096) {
                    return Err(FleetError::Invalid(
                        "maintenance: the message is longer than 4096 bytes".into(),
                    ));
                }
                next.maintenance = on.then(|| message.clone().unwrap_or_default());
            }
        }
        // Any change but a rollout's own step (which sets it again) ends the rollout.
        next.rollout = None;
        if next.weights == self.weights
            && next.maintenance == self.maintenance
            && next.paused == self.paused
            && next.rules == self.rules
            && self.rollout.is_none()
        {
            return Err(FleetError::Unchanged(format!(
                "{change}: the fleet is already so (generation {})",
                self.generation
            )));
        }
        next.generation = self.generation + 1;
        next.change = change.to_string();
        next.by = by.to_string();
        next.committed_ms = 0;
        Ok(next)
    }

    /// The local command that sets this desired split, if the snapshot's differs: a switch
    /// when one pool takes everything, else a split.
    pub fn split_command(&self, snapshot: &RoutingSnapshot) -> Option<Command> {
        if nonzero(snapshot.weights.to_map()) == self.weights {
            return None;
        }
        Some(match self.weights.iter().collect::<Vec<_>>().as_slice() {
            [(to, _)] => Command::Switch { to: (*to).clone() },
            many => Command::Split {
                weights: many
                    .iter()
                    .map(|(p, w)| ((*p).clone(), i64::from(**w)))
                    .collect(),
            },
        })
    }

    /// Brings this instance's routing to the desired state: the split (probed unless `force`),
    /// then maintenance and the pause. On an error the parts before it stay applied; the
    /// caller retries the whole, and each part is a no-op once it holds.
    pub async fn apply(&self, control: &Control, force: bool) -> Result<(), CoreError> {
        let snapshot = control.router().snapshot();
        if let Some(command) = self.split_command(&snapshot) {
            control.apply(command, force).await?;
        }
        let snapshot = control.router().snapshot();
        if !self.rules_hold_on(&snapshot) {
            control
                .apply(
                    Command::SetRules {
                        rules: self.rules.clone(),
                    },
                    force,
                )
                .await?;
        }
        let snapshot = control.router().snapshot();
        let on = snapshot.maintenance.as_ref().map(|m| m.message.as_str());
        let want = self.maintenance.as_deref();
        let differs = match (on, want) {
            (None, None) => false,
            (Some(_), Some("")) => false,
            (a, b) => a != b,
        };
        if differs {
            let on = want.map(|m| MaintenanceSpec {
                message: (!m.is_empty()).then(|| m.to_string()),
            });
            control.apply(Command::Maintenance { on }, true).await?;
        }
        match (snapshot.pause.is_some(), self.paused) {
            (false, true) => {
                control
                    .apply(Command::Pause { max_hold: None }, true)
                    .await?;
            }
            (true, false) => {
                control.apply(Command::Resume, true).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The desired state that ends a rollout whose coordinator is gone: every new client back
    /// on the baseline, one generation on.
    pub fn abandoned(&self, by: &str) -> Option<Desired> {
        let r = self.rollout.as_ref()?;
        let mut next = self.clone();
        next.previous = Some(std::mem::replace(
            &mut next.weights,
            BTreeMap::from([(r.baseline.clone(), 100)]),
        ));
        next.rollout = None;
        next.generation += 1;
        next.change = format!(
            "rollback to {}: the rollout of {} lost its coordinator ({})",
            r.baseline, r.to, r.by
        );
        next.by = by.to_string();
        next.committed_ms = now_ms();
        Some(next)
    }

    /// Whether `snapshot`'s A/B rules are these.
    fn rules_hold_on(&self, snapshot: &RoutingSnapshot) -> bool {
        snapshot.rules.len() == self.rules.len()
            && snapshot
                .rules
                .iter()
                .zip(&self.rules)
                .all(|(have, want)| have.spec() == *want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> Desired {
        Desired {
            generation: 4,
            pools: vec!["blue".into(), "green".into()],
            weights: BTreeMap::from([("blue".into(), 100)]),
            previous: None,
            maintenance: None,
            paused: false,
            rules: Vec::new(),
            rollout: None,
            change: "seed".into(),
            by: "t".into(),
            committed_ms: 1,
        }
    }

    #[test]
    fn each_change_builds_the_next_generation() {
        let d = desired();
        let s = d
            .next(&Change::Switch { to: "green".into() }, "me")
            .expect("switch");
        assert_eq!(s.generation, 5);
        assert_eq!(s.weights, BTreeMap::from([("green".into(), 100)]));
        assert_eq!(s.previous, Some(d.weights.clone()));
        assert_eq!(s.by, "me");
        let r = s.next(&Change::Rollback, "me").expect("rollback");
        assert_eq!(r.weights, d.weights);
        assert_eq!(r.generation, 6);
        let split = d
            .next(
                &Change::Split {
                    weights: vec![("blue".into(), 90), ("green".into(), 10)],
                },
                "me",
            )
            .expect("split");
        assert_eq!(split.weights.len(), 2);
        let p = d.next(&Change::Pause, "me").expect("pause");
        assert!(p.paused);
        let m = d
            .next(
                &Change::Maintenance {
                    on: true,
                    message: Some("back soon".into()),
                },
                "me",
            )
            .expect("maintenance");
        assert_eq!(m.maintenance.as_deref(), Some("back soon"));
        let rule = RuleSpec {
            header: Some("X-Beta".into()),
            cookie: None,
            query: None,
            equals: Some("1".into()),
            prefix: None,
            to: "green".into(),
        };
        let r = d
            .next(
                &Change::Rules {
                    rules: vec![rule.clone()],
                },
                "me",
            )
            .expect("rules");
        assert_eq!(r.rules, vec![rule.clone()]);
        let e = d
            .next(
                &Change::Rules {
                    rules: vec![RuleSpec {
                        to: "purple".into(),
                        ..rule.clone()
                    }],
                },
                "me",
            )
            .expect_err("unknown pool")
            .to_string();
        assert!(e.contains("rule 1") && e.contains("purple"), "{e}");
        let e = d
            .next(
                &Change::Rules {
                    rules: vec![RuleSpec {
                        equals: None,
                        ..rule
                    }],
                },
                "me",
            )
            .expect_err("no comparison")
            .to_string();
        assert!(e.contains("rule 1"), "{e}");
    }

    #[test]
    fn a_bad_change_says_what_is_wrong() {
        let d = desired();
        let e = d
            .next(
                &Change::Switch {
                    to: "purple".into(),
                },
                "me",
            )
            .expect_err("unknown pool")
            .to_string();
        assert!(e.contains("purple") && e.contains("blue, green"), "{e}");
        let e = d
            .next(&Change::Rollback, "me")
            .expect_err("nothing back")
            .to_string();
        assert!(e.contains("nothing to roll back"), "{e}");
        let e = d
            .next(&Change::Switch { to: "blue".into() }, "me")
            .expect_err("no change")
            .to_string();
        assert!(e.contains("already"), "{e}");
        let e = d
            .next(
                &Change::Split {
                    weights: vec![("blue".into(), 0), ("green".into(), 0)],
                },
                "me",
            )
            .expect_err("all zero")
            .to_string();
        assert!(e.contains("above 0"), "{e}");
        let e = d
            .next(
                &Change::Split {
                    weights: vec![("blue".into(), 1), ("blue".into(), 2)],
                },
                "me",
            )
            .expect_err("twice")
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = d
            .next(
                &Change::Maintenance {
                    on: true,
                    message: Some("x".repeat(5000)),
                },
                "me",
            )
            .expect_err("long")
            .to_string();
        assert!(e.contains("4096"), "{e}");
    }

    #[test]
    fn records_from_the_store_are_checked() {
        let d = desired();
        let bytes = serde_json::to_vec(&d).expect("json");
        assert_eq!(parse::<Desired>("k", &bytes).expect("round trip"), d);
        let e = parse::<Desired>("/turnout/fleets/x/desired", b"{\"generation\": \"x\"}")
            .expect_err("malformed")
            .to_string();
        assert!(e.contains("/turnout/fleets/x/desired"), "{e}");
        let e = parse::<Desired>("k", &vec![b' '; MAX_RECORD + 1])
            .expect_err("huge")
            .to_string();
        assert!(e.contains("more than"), "{e}");
        let mut v: serde_json::Value = serde_json::to_value(&d).expect("value");
        v["surprise"] = serde_json::json!(1);
        assert_eq!(
            parse::<Desired>("k", v.to_string().as_bytes()).expect("a newer member's field"),
            d
        );
    }
}
