//! The state file: the live routing state as JSON, written crash-safe on every change (temp file
//! in the same directory, fsync, rename, fsync of the directory) so that a crash at any moment
//! leaves either the old file or the new one, never a torn one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use turnout_config::routing::parse_rules;
use turnout_config::{Backend, PoolName, Rule, RuleSpec, ServerEntry};

use crate::error::StateError;
use crate::split::Weights;

/// The format version written in every file; a file from a newer turnout is refused by name.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    version: u32,
    generation: u64,
    /// The pool with the largest weight; all of the split when `weights` is absent (files
    /// written before splits existed).
    active: String,
    previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weights: Option<BTreeMap<String, i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_weights: Option<BTreeMap<String, i64>>,
    /// Absent in files written before rules existed: the config's rules apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rules: Option<Vec<RuleSpec>>,
    pools: BTreeMap<String, StatePool>,
    /// The config file's pools as the process that wrote this file loaded them: what a start
    /// compares the config with to tell a pool edited in the file (the file's servers win) from
    /// one it left alone (the servers registered through the API win). Absent in files written
    /// before reloads existed: there every saved pool wins, as it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_pools: Option<BTreeMap<String, StatePool>>,
    /// Maintenance mode, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    maintenance: Option<StateMaintenance>,
    /// For people reading the file; ignored when loading.
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateMaintenance {
    message: String,
    /// RFC 3339.
    since: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatePool {
    servers: Vec<ServerEntry>,
}

/// What a state file holds, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    /// The routing generation.
    pub generation: u64,
    /// The split.
    pub weights: Weights,
    /// The split before it (the rollback target).
    pub previous: Option<Weights>,
    /// Every pool's servers.
    pub pools: BTreeMap<PoolName, Vec<Backend>>,
    /// `None` when the file predates rules.
    pub rules: Option<Vec<Rule>>,
    /// Maintenance mode was on.
    pub maintenance: Option<Maintenance>,
    /// The config file's pools when this state was written (`None`: a file from before
    /// reloads).
    pub config_pools: Option<BTreeMap<PoolName, Vec<Backend>>>,
}

/// Maintenance mode, as switched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// The message shown.
    pub message: String,
    /// When it was switched on.
    pub since: std::time::SystemTime,
}

/// The state file: the live routing, written crash-safely (a temporary file, fsync, rename) at every change.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

/// The most turnout reads of a state file (one with thousands of pools and servers is a few
/// hundred KiB); a larger one is refused, naming the file.
pub const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

impl StateFile {
    /// The state file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state; `Ok(None)` when no file exists yet (the first start).
    pub fn load(&self) -> Result<Option<SavedState>, StateError> {
        let bytes = match turnout_config::read_capped(&self.path, MAX_STATE_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |detail: String| StateError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let doc: StateDoc = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if doc.version != VERSION {
            return Err(corrupt(format!(
                "format version {} is not the one this turnout reads ({VERSION})",
                doc.version
            )));
        }
        let parse_pools = |pools: BTreeMap<String, StatePool>, what: &str| {
            let mut parsed = BTreeMap::new();
            for (name, pool) in pools {
                let name = PoolName::parse(&name).map_err(|e| corrupt(format!("{what}: {e}")))?;
                let servers = pool
                    .servers
                    .iter()
                    .map(Backend::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| corrupt(format!("{what}: pool {name}: {e}")))?;
                parsed.insert(name, servers);
            }
            Ok::<_, StateError>(parsed)
        };
        let pools = parse_pools(doc.pools, "pools")?;
        let config_pools = doc
            .config_pools
            .map(|p| parse_pools(p, "config_pools"))
            .transpose()?;
        let known = |name: &str, what: &str| match pools.get_key_value(name) {
            Some((k, _)) => Ok(k.clone()),
            None => Err(corrupt(format!(
                "{what} pool {name:?} is not among its pools"
            ))),
        };
        // The split: `weights` when present, else all to `active` (older files).
        let split = |weights: &Option<BTreeMap<String, i64>>,
                     single: Option<&str>,
                     what: &str|
         -> Result<Option<Weights>, StateError> {
            match (weights, single) {
                (Some(w), _) => {
                    let w = Weights::parse(w.iter().map(|(n, w)| (n.as_str(), *w)))
                        .map_err(|e| corrupt(format!("{what} weights: {e}")))?;
                    for (name, _) in w.iter() {
                        known(name.as_str(), what)?;
                    }
                    Ok(Some(w))
                }
                (None, Some(p)) => Ok(Some(Weights::single(known(p, what)?))),
                (None, None) => Ok(None),
            }
        };
        let weights = split(&doc.weights, Some(&doc.active), "the active")?
            .expect("a single pool always gives weights");
        let previous = split(
            &doc.previous_weights,
            doc.previous.as_deref(),
            "the previous",
        )?;
        let rules = doc
            .rules
            .as_deref()
            .map(parse_rules)
            .transpose()
            .map_err(&corrupt)?;
        for rule in rules.iter().flatten() {
            known(rule.to.as_str(), "a rule's")?;
        }
        let maintenance = doc
            .maintenance
            .map(|m| {
                let since = humantime::parse_rfc3339(&m.since)
                    .map_err(|e| corrupt(format!("maintenance.since {:?}: {e}", m.since)))?;
                Ok::<_, StateError>(Maintenance {
                    message: m.message,
                    since,
                })
            })
            .transpose()?;
        Ok(Some(SavedState {
            generation: doc.generation,
            weights,
            previous,
            pools,
            rules,
            maintenance,
            config_pools,
        }))
    }

    /// The bytes [`StateFile::write`] puts on disk for `saved` (a snapshot's state:
    /// `RoutingSnapshot::saved`), changed at `changed_at`.
    pub fn render(saved: &SavedState, changed_at: std::time::SystemTime) -> Vec<u8> {
        let doc = StateDoc {
            version: VERSION,
            generation: saved.generation,
            active: saved.weights.primary().to_string(),
            previous: saved.previous.as_ref().map(|w| w.primary().to_string()),
            weights: Some(to_i64(&saved.weights)),
            previous_weights: saved.previous.as_ref().map(to_i64),
            rules: saved
                .rules
                .as_ref()
                .map(|rules| rules.iter().map(Rule::spec).collect()),
            pools: state_pools(&saved.pools),
            config_pools: saved.config_pools.as_ref().map(state_pools),
            maintenance: saved.maintenance.as_ref().map(|m| StateMaintenance {
                message: m.message.clone(),
                since: humantime::format_rfc3339_seconds(m.since).to_string(),
            }),
            updated_at: Some(humantime::format_rfc3339_seconds(changed_at).to_string()),
        };
        let mut bytes = serde_json::to_vec_pretty(&doc).expect("a StateDoc always serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Replaces the file with `bytes` atomically and durably. Blocking: call it off the runtime.
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        let fail = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(fail)?;
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state.json".into());
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &self.path)?;
            // Make the rename itself durable.
            fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(fail)
    }
}

fn state_pools(pools: &BTreeMap<PoolName, Vec<Backend>>) -> BTreeMap<String, StatePool> {
    pools
        .iter()
        .map(|(name, servers)| {
            let servers = servers
                .iter()
                .map(|b| ServerEntry {
                    addr: b.addr.to_string(),
                    weight: b.weight,
                })
                .collect();
            (name.to_string(), StatePool { servers })
        })
        .collect()
}

fn to_i64(weights: &Weights) -> BTreeMap<String, i64> {
    weights
        .iter()
        .map(|(n, w)| (n.to_string(), i64::from(w)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::snapshot::RoutingSnapshot;
    use turnout_config::Config;
    use turnout_config::{RuleSpec, ServerEntry};

    fn snapshot() -> RoutingSnapshot {
        let config = Config::parse(
            "[pools.blue]\nservers=[\"127.0.0.1:3000\"]\n[pools.green]\nbalance=\"weighted\"\n\
             servers=[\"127.0.0.1:4000\"]\n[routing]\nactive=\"blue\"\n",
            Path::new("t.toml"),
        )
        .expect("config");
        RoutingSnapshot::bootstrap(&config, None).expect("snapshot")
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path().join("sub/state.json"));
        assert!(file.load().expect("missing is fine").is_none());
        let s = Command::Switch { to: "green".into() }
            .apply(&snapshot())
            .expect("ok")
            .expect("changed");
        file.write(&StateFile::render(&s.saved(), s.changed_at))
            .expect("write");
        let saved = file.load().expect("load").expect("present");
        assert_eq!(saved.weights.to_string(), "green=100");
        assert_eq!(
            saved.previous.as_ref().map(ToString::to_string).as_deref(),
            Some("blue=100")
        );
        assert_eq!(saved.generation, 1);
        assert_eq!(saved.pools.len(), 2);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, ["state.json"], "no temp file is left behind");
    }

    #[test]
    fn splits_rules_and_weights_round_trip_and_older_files_still_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path().join("state.json"));
        let s1 = Command::Split {
            weights: vec![("blue".into(), 90), ("green".into(), 10)],
        }
        .apply(&snapshot())
        .expect("ok")
        .expect("changed");
        let rule: RuleSpec =
            serde_json::from_str(r#"{"cookie":"group","prefix":"beta","to":"green"}"#)
                .expect("rule");
        let s2 = Command::SetRules {
            rules: vec![rule.clone()],
        }
        .apply(&s1)
        .expect("ok")
        .expect("changed");
        let s3 = Command::PutPool {
            name: "green".into(),
            servers: vec![ServerEntry {
                addr: "127.0.0.1:4001".into(),
                weight: 3,
            }],
        }
        .apply(&s2)
        .expect("ok")
        .expect("changed");
        file.write(&StateFile::render(&s3.saved(), s3.changed_at))
            .expect("write");
        let saved = file.load().expect("load").expect("present");
        assert_eq!(saved.weights.to_string(), "blue=90 green=10");
        assert_eq!(
            saved.previous.map(|p| p.to_string()).as_deref(),
            Some("blue=100")
        );
        assert_eq!(saved.rules.map(|r| r[0].spec()), Some(rule));
        assert_eq!(saved.pools["green"][0].weight, 3);
        // A file from before splits and rules: all to `active`, the config's rules.
        fs::write(
            file.path(),
            r#"{"version":1,"generation":4,"active":"green","previous":"blue","pools":{"blue":{"servers":["127.0.0.1:3000"]},"green":{"servers":["127.0.0.1:4000"]}}}"#,
        )
        .expect("write");
        let old = file.load().expect("load").expect("present");
        assert_eq!(old.weights.to_string(), "green=100");
        assert_eq!(
            old.previous.map(|p| p.to_string()).as_deref(),
            Some("blue=100")
        );
        assert!(old.rules.is_none());
    }

    #[test]
    fn corrupt_files_are_named_and_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let file = StateFile::new(&path);
        for (text, expect) in [
            ("{\"version\":1,", "EOF"),
            ("{\"version\":9,\"generation\":1,\"active\":\"a\",\"previous\":null,\"pools\":{}}", "format version 9"),
            ("{\"version\":1,\"generation\":1,\"active\":\"a\",\"previous\":null,\"pools\":{}}", "\"a\" is not among"),
            ("{\"version\":1,\"generation\":1,\"active\":\"a\",\"previous\":null,\"pools\":{\"a\":{\"servers\":[\"x\"]}}}", "pool a: invalid server"),
            ("{\"version\":1,\"generation\":1,\"active\":\"a\",\"previous\":null,\"weights\":{\"b\":5},\"pools\":{\"a\":{\"servers\":[]}}}", "pool \"b\" is not among"),
            ("{\"version\":1,\"generation\":1,\"active\":\"a\",\"previous\":null,\"weights\":{\"a\":-1},\"pools\":{\"a\":{\"servers\":[]}}}", "the active weights: weight -1"),
            // The config file's pools as last loaded: checked as strictly as the live ones.
            ("{\"version\":1,\"generation\":1,\"active\":\"a\",\"previous\":null,\"pools\":{\"a\":{\"servers\":[]}},\"config_pools\":{\"a\":{\"servers\":[\"x\"]}}}", "config_pools: pool a: invalid server"),
            ("{\"version\":1,\"generation\":1,\"active\":\"a\",\"previous\":null,\"pools\":{\"a\":{\"servers\":[]}},\"config_pools\":{\"../a\":{\"servers\":[]}}}", "config_pools: "),
            ("{\"version\":1,\"generation\":1,\"active\":\"a\",\"previous\":null,\"pools\":{\"a\":{\"servers\":[]}},\"config_pools\":[1]}", "invalid type: sequence, expected a map"),
        ] {
            fs::write(&path, text).expect("write");
            let e = file.load().expect_err("corrupt").to_string();
            assert!(e.contains(&*path.to_string_lossy()), "{e}");
            assert!(e.contains(expect), "{e}");
            assert!(e.contains("move it aside"), "{e}");
        }
    }
}
