//! The state file: the live routing state as JSON, written crash-safe on every change (temp file
//! in the same directory, fsync, rename, fsync of the directory) so that a crash at any moment
//! leaves either the old file or the new one, never a torn one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use turnout_config::{PoolName, ServerAddr};

use crate::snapshot::RoutingSnapshot;
use crate::StateError;

/// The format version written in every file; a file from a newer turnout is refused by name.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    version: u32,
    generation: u64,
    active: String,
    previous: Option<String>,
    pools: BTreeMap<String, StatePool>,
    /// For people reading the file; ignored when loading.
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatePool {
    servers: Vec<String>,
}

/// What a state file holds, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    pub generation: u64,
    pub active: PoolName,
    pub previous: Option<PoolName>,
    pub pools: BTreeMap<PoolName, Vec<ServerAddr>>,
}

#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state; `Ok(None)` when no file exists yet (the first start).
    pub fn load(&self) -> Result<Option<SavedState>, StateError> {
        let bytes = match fs::read(&self.path) {
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
        let mut pools = BTreeMap::new();
        for (name, pool) in doc.pools {
            let name = PoolName::parse(&name).map_err(&corrupt)?;
            let servers = pool
                .servers
                .iter()
                .map(|s| ServerAddr::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| corrupt(format!("pool {name}: {e}")))?;
            pools.insert(name, servers);
        }
        let known = |name: &str, what: &str| match pools.get_key_value(name) {
            Some((k, _)) => Ok(k.clone()),
            None => Err(corrupt(format!(
                "{what} pool {name:?} is not among its pools"
            ))),
        };
        let active = known(&doc.active, "the active")?;
        let previous = doc
            .previous
            .as_deref()
            .map(|p| known(p, "the previous"))
            .transpose()?;
        Ok(Some(SavedState {
            generation: doc.generation,
            active,
            previous,
            pools,
        }))
    }

    /// The bytes [`StateFile::write`] puts on disk for `snapshot`.
    pub fn render(snapshot: &RoutingSnapshot) -> Vec<u8> {
        let doc = StateDoc {
            version: VERSION,
            generation: snapshot.generation,
            active: snapshot.active.name().to_string(),
            previous: snapshot.previous.as_ref().map(ToString::to_string),
            pools: snapshot
                .pools
                .iter()
                .map(|(name, pool)| {
                    let servers = pool.servers().iter().map(|u| u.addr.to_string()).collect();
                    (name.to_string(), StatePool { servers })
                })
                .collect(),
            updated_at: Some(humantime::format_rfc3339_seconds(snapshot.changed_at).to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use turnout_config::Config;

    fn snapshot() -> RoutingSnapshot {
        let config = Config::parse(
            "[pools.blue]\nservers=[\"127.0.0.1:3000\"]\n[pools.green]\nservers=[\"127.0.0.1:4000\"]\n\
             [routing]\nactive=\"blue\"\n",
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
        file.write(&StateFile::render(&s)).expect("write");
        let saved = file.load().expect("load").expect("present");
        assert_eq!(saved.active.as_str(), "green");
        assert_eq!(saved.previous.as_ref().map(PoolName::as_str), Some("blue"));
        assert_eq!(saved.generation, 1);
        assert_eq!(saved.pools.len(), 2);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, ["state.json"], "no temp file is left behind");
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
        ] {
            fs::write(&path, text).expect("write");
            let e = file.load().expect_err("corrupt").to_string();
            assert!(e.contains(&*path.to_string_lossy()), "{e}");
            assert!(e.contains(expect), "{e}");
            assert!(e.contains("move it aside"), "{e}");
        }
    }
}
