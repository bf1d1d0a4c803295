//! The changes an operator can make to the routing state, and how each builds the next snapshot
//! from the current one. Pure functions: no I/O, no locking; [`crate::control::Control`] does the rest.

use std::sync::Arc;
use std::time::SystemTime;

use turnout_config::{routing::parse_rules, Backend, PoolName, RuleSpec, ServerEntry};

use crate::error::CoreError;
use crate::pool::Pool;
use crate::snapshot::RoutingSnapshot;
use crate::split::Weights;

/// An operator's change to the routing, applied to a snapshot to build the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send every new client to `to` (the split `{to: 100}`); the split before becomes
    /// `previous`.
    Switch {
        /// The pool.
        to: String,
    },
    /// Swap the split and `previous`.
    Rollback,
    /// Share new clients between pools by weight; the split before becomes `previous`.
    Split {
        /// Each pool with its weight (0 or more, as given: checked when applied).
        weights: Vec<(String, i64)>,
    },
    /// Create the pool `name`, or replace its servers.
    PutPool {
        /// The pool.
        name: String,
        /// Its servers, in order, with their weights.
        servers: Vec<ServerEntry>,
    },
    /// Replace the A/B rules.
    SetRules {
        /// The rules, in order.
        rules: Vec<RuleSpec>,
    },
    /// Copy `percent` of the requests with one of `methods` (and a body of at most
    /// `max_body` bytes) to pool `to` as well, its answers thrown away; `None` stops it. Any other command stops it too.
    Mirror {
        /// What to copy, and where; `None` stops it.
        to: Option<MirrorSpec>,
    },
    /// Maintenance mode on (with its message) or off (`None`).
    Maintenance {
        /// On with this message; `None`: off.
        on: Option<MaintenanceSpec>,
    },
    /// Hold new requests until [`Command::Resume`] (each for at most `max_hold`, or
    /// `[pause] max_hold`).
    Pause {
        /// The longest one request is held (`[pause] max_hold` unless given).
        max_hold: Option<std::time::Duration>,
    },
    /// Release the held requests, in order, and hold no more.
    Resume,
}

/// What [`Command::Maintenance`] switches on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MaintenanceSpec {
    /// `None`: `[maintenance] message`.
    pub message: Option<String>,
}

/// What [`Command::Mirror`] copies, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSpec {
    /// The pool the copies go to.
    pub to: String,
    /// The share of requests copied, in percent.
    pub percent: u32,
    /// The methods copied (upper case).
    pub methods: Vec<String>,
    /// Requests with a longer body (or one of unknown length) are not copied.
    pub max_body: u64,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Switch { to } => write!(f, "switch to {to}"),
            Command::Rollback => f.write_str("rollback"),
            Command::Split { weights } => {
                f.write_str("split")?;
                for (pool, w) in weights {
                    write!(f, " {pool}={w}")?;
                }
                Ok(())
            }
            Command::PutPool { name, servers } => {
                write!(f, "set pool {name} servers [")?;
                for (i, s) in servers.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    match s.weight {
                        1 => write!(f, "{sep}{}", s.addr)?,
                        w => write!(f, "{sep}{} weight={w}", s.addr)?,
                    }
                }
                f.write_str("]")
            }
            Command::SetRules { rules } => write!(f, "set {} rule(s)", rules.len()),
            Command::Mirror { to: None } => f.write_str("mirror off"),
            Command::Maintenance { on: None } => f.write_str("maintenance off"),
            Command::Maintenance { on: Some(_) } => f.write_str("maintenance on"),
            Command::Pause { max_hold: None } => f.write_str("pause"),
            Command::Pause { max_hold: Some(d) } => {
                write!(f, "pause (hold at most {})", humantime::format_duration(*d))
            }
            Command::Resume => f.write_str("resume"),
            Command::Mirror { to: Some(m) } => write!(
                f,
                "mirror {}% of {} to {}",
                m.percent,
                m.methods.join(","),
                m.to
            ),
        }
    }
}

impl Command {
    /// The snapshot after this command, or `None` when it changes nothing (a switch to the pool
    /// that already takes everything, a pool set to the servers it has, the same rules).
    pub fn apply(&self, cur: &RoutingSnapshot) -> Result<Option<RoutingSnapshot>, CoreError> {
        let mut next = match self {
            Command::Switch { to } => {
                let target = cur.pool(to)?;
                let weights = Weights::single(target.name().clone());
                if weights == cur.weights {
                    return Ok(None);
                }
                resplit(cur, weights)?
            }
            Command::Rollback => {
                let previous = cur.previous.clone().ok_or(CoreError::NoPrevious)?;
                resplit(cur, previous)?
            }
            Command::Split { weights } => {
                let weights = Weights::parse(weights.iter().map(|(n, w)| (n.as_str(), *w)))
                    .map_err(CoreError::Invalid)?;
                for (name, _) in weights.iter() {
                    // A bad body (400), not a missing resource.
                    cur.pool(name.as_str())
                        .map_err(|e| CoreError::Invalid(e.to_string()))?;
                }
                if weights == cur.weights {
                    return Ok(None);
                }
                resplit(cur, weights)?
            }
            Command::PutPool { name, servers } => {
                let name = PoolName::parse(name).map_err(CoreError::Invalid)?;
                let servers = servers
                    .iter()
                    .map(|s| Backend::parse(s).map_err(CoreError::Invalid))
                    .collect::<Result<Vec<_>, _>>()?;
                let old = cur.pools.get(&name);
                if let Some(old) = old {
                    let same = old
                        .servers()
                        .iter()
                        .map(|u| (&u.addr, u.weight))
                        .eq(servers.iter().map(|b| (&b.addr, b.weight)));
                    if same {
                        return Ok(None);
                    }
                }
                let balance = old.map_or_else(
                    || cur.env.pool_balance.get(&name).copied().unwrap_or_default(),
                    |p| p.settings().balance,
                );
                if !balance.weighs() {
                    if let Some(b) = servers.iter().find(|b| b.weight != 1) {
                        return Err(CoreError::Invalid(format!(
                            "server {} has weight {}, but pool {name} balances round_robin, which does not use weights; set its balance in the config",
                            b.addr, b.weight
                        )));
                    }
                }
                if servers.is_empty() {
                    if let Some(why) = in_use(cur, &name) {
                        return Err(CoreError::PoolInUse {
                            name: name.to_string(),
                            why,
                        });
                    }
                }
                // The new version of the pool keeps the old one's counters and known health.
                let pool = Arc::new(cur.env.build_pool(name.clone(), servers, old.map(|p| &**p)));
                let mut next = cur.clone();
                next.pools.insert(name, pool);
                next
            }
            Command::SetRules { rules } => {
                let rules = parse_rules(rules).map_err(CoreError::Invalid)?;
                for (i, rule) in rules.iter().enumerate() {
                    let pool = cur
                        .pool(rule.to.as_str())
                        .map_err(|e| CoreError::Invalid(format!("rule {}: {e}", i + 1)))?;
                    if pool.servers().is_empty() {
                        return Err(CoreError::EmptyPool {
                            name: pool.name().to_string(),
                        });
                    }
                }
                if *rules == *cur.rules {
                    return Ok(None);
                }
                let mut next = cur.clone();
                next.rules = rules.into();
                next
            }
            Command::Maintenance { on } => {
                let maintenance = match on {
                    None if cur.maintenance.is_none() => return Ok(None),
                    None => None,
                    Some(spec) => {
                        let message = spec
                            .message
                            .clone()
                            .unwrap_or_else(|| cur.env.maintenance.message.clone());
                        if message.len() > 4096 {
                            return Err(CoreError::Invalid(
                                "maintenance: the message is longer than 4096 bytes".into(),
                            ));
                        }
                        if cur
                            .maintenance
                            .as_ref()
                            .is_some_and(|m| m.message == message)
                        {
                            return Ok(None);
                        }
                        Some(Arc::new(crate::snapshot::Maintenance {
                            message,
                            since: SystemTime::now(),
                        }))
                    }
                };
                let mut next = cur.clone();
                next.generation = cur.generation + 1;
                next.changed_at = SystemTime::now();
                next.maintenance = maintenance;
                return Ok(Some(next));
            }
            Command::Pause { max_hold } => {
                if cur.pause.is_some() {
                    return Ok(None);
                }
                if let Some(d) = max_hold {
                    if d.is_zero() || *d > turnout_config::MAX_DURATION {
                        return Err(CoreError::Invalid(format!(
                            "pause: max_hold {} is not between 1ms and 7 days",
                            humantime::format_duration(*d)
                        )));
                    }
                }
                let mut next = cur.clone();
                next.generation = cur.generation + 1;
                next.changed_at = SystemTime::now();
                next.pause = Some(Arc::new(crate::pause::Pause::new(
                    &cur.env.pause,
                    *max_hold,
                )));
                return Ok(Some(next));
            }
            Command::Resume => {
                if cur.pause.is_none() {
                    return Ok(None);
                }
                let mut next = cur.clone();
                next.generation = cur.generation + 1;
                next.changed_at = SystemTime::now();
                next.pause = None;
                return Ok(Some(next));
            }
            Command::Mirror { to } => {
                let mirror = match to {
                    None if cur.mirror.is_none() => return Ok(None),
                    None => None,
                    Some(spec) => {
                        let pool = cur.pool(&spec.to)?;
                        if pool.servers().is_empty() {
                            return Err(CoreError::EmptyPool {
                                name: spec.to.clone(),
                            });
                        }
                        if !(1..=100).contains(&spec.percent) {
                            return Err(CoreError::Invalid(format!(
                                "mirror: {}% is not a percentage from 1 to 100",
                                spec.percent
                            )));
                        }
                        let methods = spec
                            .methods
                            .iter()
                            .map(|m| {
                                http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(
                                    |_| {
                                        CoreError::Invalid(format!("mirror: {m:?} is not a method"))
                                    },
                                )
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        Some(Arc::new(crate::snapshot::Mirror::new(
                            Arc::clone(pool),
                            spec.percent,
                            methods,
                            spec.max_body,
                        )))
                    }
                };
                let mut next = cur.clone();
                next.derive()?;
                next.generation = cur.generation + 1;
                next.changed_at = SystemTime::now();
                next.mark = None;
                next.mirror = mirror;
                return Ok(Some(next));
            }
        };
        next.derive()?;
        next.generation = cur.generation + 1;
        next.changed_at = SystemTime::now();
        // Any change ends a fleet switch's mark (a commit sets its own afterwards) and a mirror.
        next.mark = None;
        next.mirror = None;
        Ok(Some(next))
    }

    /// The pools that `next` (this command's result) sends a larger share of new clients to
    /// than `cur` does, or that a new rule sends to: the ones the health gate probes.
    pub fn gaining(cur: &RoutingSnapshot, next: &RoutingSnapshot) -> Vec<Arc<Pool>> {
        let mut gaining: Vec<Arc<Pool>> = next
            .weights
            .iter()
            .filter(|(name, _)| {
                next.weights.percent(name.as_str()) > cur.weights.percent(name.as_str())
            })
            .filter_map(|(name, _)| next.pools.get(name).cloned())
            .collect();
        for rule in next.rules.iter() {
            let served = cur.weights.get(rule.to.as_str()) > 0
                || cur.rules.iter().any(|r| r.to == rule.to)
                || gaining.iter().any(|p| p.name() == &rule.to);
            if !served {
                gaining.extend(next.pools.get(&rule.to).cloned());
            }
        }
        gaining
    }
}

/// Why pool `name` still serves (the split gives it new clients, or an A/B rule sends to it),
/// if it does: it cannot be left without servers, and keeps its tunnels.
pub(crate) fn in_use(cur: &RoutingSnapshot, name: &PoolName) -> Option<String> {
    let weight = cur.weights.get(name.as_str());
    if weight > 0 {
        return Some(format!(
            "it takes new clients (weight {weight} in the split)"
        ));
    }
    cur.rules
        .iter()
        .position(|r| &r.to == name)
        .map(|i| format!("A/B rule {} sends to it", i + 1))
}

/// `cur` with the split `weights`; every pool in it must have servers.
fn resplit(cur: &RoutingSnapshot, weights: Weights) -> Result<RoutingSnapshot, CoreError> {
    for (name, _) in weights.iter() {
        if cur.pool(name.as_str())?.servers().is_empty() {
            return Err(CoreError::EmptyPool {
                name: name.to_string(),
            });
        }
    }
    let mut next = cur.clone();
    next.previous = Some(std::mem::replace(&mut next.weights, weights));
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use turnout_config::Config;

    fn snapshot() -> RoutingSnapshot {
        let config = Config::parse(
            "[pools.blue]\nservers=[\"127.0.0.1:3000\"]\n[pools.green]\nservers=[\"127.0.0.1:4000\"]\n\
             [pools.empty]\nservers=[]\n[routing]\nactive=\"blue\"\n",
            Path::new("t.toml"),
        )
        .expect("config");
        RoutingSnapshot::bootstrap(&config, None).expect("snapshot")
    }

    fn entry(addr: &str) -> ServerEntry {
        ServerEntry {
            addr: addr.into(),
            weight: 1,
        }
    }

    fn switch(to: &str) -> Command {
        Command::Switch { to: to.into() }
    }

    #[test]
    fn switch_and_rollback() {
        let s0 = snapshot();
        assert_eq!(
            Command::Rollback.apply(&s0).err().map(|e| e.to_string()),
            Some("no previous pool to roll back to".into())
        );
        let s1 = switch("green").apply(&s0).expect("ok").expect("changed");
        assert_eq!((s1.active.name().as_str(), s1.generation), ("green", 1));
        assert_eq!(s1.previous_primary().map(PoolName::as_str), Some("blue"));
        assert!(switch("green").apply(&s1).expect("ok").is_none());
        let s2 = Command::Rollback.apply(&s1).expect("ok").expect("changed");
        assert_eq!((s2.active.name().as_str(), s2.generation), ("blue", 2));
        assert_eq!(s2.previous_primary().map(PoolName::as_str), Some("green"));
        // The pools themselves are shared, not rebuilt, by a switch.
        assert!(Arc::ptr_eq(&s0.pools["green"], &s2.pools["green"]));
    }

    #[test]
    fn a_mirror_is_set_checked_and_ended_by_any_other_change() {
        let s0 = snapshot();
        let mirror = |to: &str, percent, methods: &[&str]| Command::Mirror {
            to: Some(MirrorSpec {
                to: to.into(),
                percent,
                methods: methods.iter().map(|m| m.to_string()).collect(),
                max_body: 1024,
            }),
        };
        let s1 = mirror("green", 10, &["get"])
            .apply(&s0)
            .expect("ok")
            .expect("changed");
        let m = s1.mirror.as_ref().expect("a mirror");
        assert_eq!((m.pool.name().as_str(), m.percent), ("green", 10));
        assert!(m.takes(&http::Method::GET, 209) && !m.takes(&http::Method::GET, 210));
        assert!(!m.takes(&http::Method::POST, 0));
        assert_eq!(s1.weights, s0.weights, "no client moves");
        assert!(switch("green")
            .apply(&s1)
            .expect("ok")
            .expect("changed")
            .mirror
            .is_none());
        let off = Command::Mirror { to: None };
        assert!(off
            .apply(&s1)
            .expect("ok")
            .expect("changed")
            .mirror
            .is_none());
        assert!(off.apply(&s0).expect("ok").is_none(), "nothing to stop");
        for (bad, why) in [
            (mirror("green", 0, &["GET"]), "percentage"),
            (mirror("green", 10, &["G E T"]), "not a method"),
            (mirror("empty", 10, &["GET"]), "no servers"),
            (mirror("purple", 10, &["GET"]), "unknown pool"),
        ] {
            let e = bad.apply(&s0).expect_err("refused").to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn refusals_name_the_pool() {
        let s0 = snapshot();
        let e = switch("purple")
            .apply(&s0)
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("\"purple\"") && e.contains("blue, empty, green"),
            "{e}"
        );
        assert!(matches!(
            switch("empty").apply(&s0),
            Err(CoreError::EmptyPool { .. })
        ));
        let empty_blue = Command::PutPool {
            name: "blue".into(),
            servers: vec![],
        };
        assert!(matches!(
            empty_blue.apply(&s0),
            Err(CoreError::PoolInUse { .. })
        ));
        let bad = Command::PutPool {
            name: "green".into(),
            servers: vec![entry("nope")],
        };
        assert!(matches!(bad.apply(&s0), Err(CoreError::Invalid(_))));
    }

    #[test]
    fn put_pool_replaces_servers_and_keeps_counters() {
        let s0 = snapshot();
        let guard = s0.active.begin_request();
        let put = Command::PutPool {
            name: "blue".into(),
            servers: vec![entry("127.0.0.1:3001"), entry("127.0.0.1:3002")],
        };
        let s1 = put.apply(&s0).expect("ok").expect("changed");
        assert_eq!(s1.active.servers().len(), 2);
        assert!(Arc::ptr_eq(&s1.active, &s1.pools["blue"]));
        assert_eq!(
            s1.active.stats().in_flight(),
            1,
            "the old version's request still counts"
        );
        drop(guard);
        assert_eq!(s1.active.stats().in_flight(), 0);
        assert!(
            put.apply(&s1).expect("ok").is_none(),
            "same servers change nothing"
        );
        let new = Command::PutPool {
            name: "canary".into(),
            servers: vec![entry("127.0.0.1:5000")],
        };
        assert!(new
            .apply(&s1)
            .expect("ok")
            .expect("changed")
            .pools
            .contains_key("canary"));
    }
}
