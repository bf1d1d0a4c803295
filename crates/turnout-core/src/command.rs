//! The changes an operator can make to the routing state, and how each builds the next snapshot
//! from the current one. Pure functions: no I/O, no locking; [`crate::Control`] does the rest.

use std::sync::Arc;
use std::time::SystemTime;

use turnout_config::{PoolName, ServerAddr};

use crate::pool::Pool;
use crate::snapshot::RoutingSnapshot;
use crate::CoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Make `to` the active pool; the old active pool becomes `previous`.
    Switch { to: String },
    /// Swap `active` and `previous`.
    Rollback,
    /// Create the pool `name`, or replace its servers.
    PutPool { name: String, servers: Vec<String> },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Switch { to } => write!(f, "switch to {to}"),
            Command::Rollback => f.write_str("rollback"),
            Command::PutPool { name, servers } => {
                write!(f, "set pool {name} servers [{}]", servers.join(", "))
            }
        }
    }
}

impl Command {
    /// The snapshot after this command, or `None` when it changes nothing (a switch to the pool
    /// that is already active, a pool set to the servers it has).
    pub fn apply(&self, cur: &RoutingSnapshot) -> Result<Option<RoutingSnapshot>, CoreError> {
        let mut next = match self {
            Command::Switch { to } => {
                let target = cur.pool(to)?;
                if Arc::ptr_eq(target, &cur.active) {
                    return Ok(None);
                }
                switched(cur, Arc::clone(target))?
            }
            Command::Rollback => {
                let prev = cur.previous.as_ref().ok_or(CoreError::NoPrevious)?;
                let target = Arc::clone(cur.pool(prev.as_str())?);
                switched(cur, target)?
            }
            Command::PutPool { name, servers } => {
                let name = PoolName::parse(name).map_err(CoreError::Invalid)?;
                let servers = servers
                    .iter()
                    .map(|s| ServerAddr::parse(s).map_err(CoreError::Invalid))
                    .collect::<Result<Vec<_>, _>>()?;
                let old = cur.pools.get(&name);
                if let Some(old) = old {
                    if old.servers().iter().map(|u| &u.addr).eq(servers.iter()) {
                        return Ok(None);
                    }
                }
                let is_active = cur.active.name() == &name;
                if is_active && servers.is_empty() {
                    return Err(CoreError::ActivePoolEmptied {
                        name: name.to_string(),
                    });
                }
                // The new version of the pool keeps the old one's counters and known health.
                let pool = Arc::new(cur.env.build_pool(name.clone(), servers, old.map(|p| &**p)));
                let mut next = cur.clone();
                if is_active {
                    next.active = Arc::clone(&pool);
                }
                next.pools.insert(name, pool);
                next
            }
        };
        next.generation = cur.generation + 1;
        next.changed_at = SystemTime::now();
        // Any change ends a fleet switch's mark; a commit sets its own afterwards.
        next.mark = None;
        Ok(Some(next))
    }
}

fn switched(cur: &RoutingSnapshot, target: Arc<Pool>) -> Result<RoutingSnapshot, CoreError> {
    if target.servers().is_empty() {
        return Err(CoreError::EmptyPool {
            name: target.name().to_string(),
        });
    }
    let mut next = cur.clone();
    next.previous = Some(cur.active.name().clone());
    next.active = target;
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
        assert_eq!(s1.previous.as_ref().map(PoolName::as_str), Some("blue"));
        assert!(switch("green").apply(&s1).expect("ok").is_none());
        let s2 = Command::Rollback.apply(&s1).expect("ok").expect("changed");
        assert_eq!((s2.active.name().as_str(), s2.generation), ("blue", 2));
        assert_eq!(s2.previous.as_ref().map(PoolName::as_str), Some("green"));
        // The pools themselves are shared, not rebuilt, by a switch.
        assert!(Arc::ptr_eq(&s0.pools["green"], &s2.pools["green"]));
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
            Err(CoreError::ActivePoolEmptied { .. })
        ));
        let bad = Command::PutPool {
            name: "green".into(),
            servers: vec!["nope".into()],
        };
        assert!(matches!(bad.apply(&s0), Err(CoreError::Invalid(_))));
    }

    #[test]
    fn put_pool_replaces_servers_and_keeps_counters() {
        let s0 = snapshot();
        let guard = s0.active.begin_request();
        let put = Command::PutPool {
            name: "blue".into(),
            servers: vec!["127.0.0.1:3001".into(), "127.0.0.1:3002".into()],
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
            servers: vec!["127.0.0.1:5000".into()],
        };
        assert!(new
            .apply(&s1)
            .expect("ok")
            .expect("changed")
            .pools
            .contains_key("canary"));
    }
}
