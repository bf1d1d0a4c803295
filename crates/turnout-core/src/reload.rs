//! What wins when a start (a restart, an in-place upgrade, a reload) finds both a config file
//! and a state file: per pool, the side that changed last. A pool whose servers the config file
//! changed since the state file was written takes the file's servers (an operator edited it);
//! a pool the edit left alone keeps the servers the state file has (registered through the API
//! by a deploy). A pool the edit removed goes, unless the routing still sends traffic to it.
//! A pool created through the API, never in the file, stays.

use std::collections::BTreeMap;

use turnout_config::{Backend, PoolName};

/// The pools a start serves with, and what it did that an operator should read.
#[derive(Debug, PartialEq, Eq)]
pub struct Merged {
    /// Every pool's servers.
    pub pools: BTreeMap<PoolName, Vec<Backend>>,
    /// One note per pool where the config file's edit decided (or could not).
    pub notes: Vec<Note>,
}

/// A pool the merge says something about.
#[derive(Debug, PartialEq, Eq)]
pub struct Note {
    /// The pool.
    pub pool: PoolName,
    /// What happened to it, for the log.
    pub what: String,
}

/// Merges the config file's pools (`config`) with the state file's (`saved`), given the config
/// file's pools as they were when the state file was written (`baseline`; `None` for a file
/// written before turnout recorded it: then every saved pool wins, as it always did). `live`
/// says whether the routing (the split, the previous split, a rule) names a pool.
pub fn merge_pools(
    config: &BTreeMap<PoolName, Vec<Backend>>,
    mut saved: BTreeMap<PoolName, Vec<Backend>>,
    baseline: Option<&BTreeMap<PoolName, Vec<Backend>>>,
    live: impl Fn(&PoolName) -> bool,
) -> Merged {
    let mut pools = BTreeMap::new();
    let mut notes = Vec::new();
    let servers = |list: &[Backend]| {
        list.iter()
            .map(|b| b.addr.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, from_file) in config {
        let kept = saved.remove(name);
        let edited = baseline.is_some_and(|b| b.get(name) != Some(from_file));
        let chosen = match kept {
            Some(kept) if !edited => kept,
            Some(kept) => {
                if kept != *from_file {
                    notes.push(Note {
                        pool: name.clone(),
                        what: format!(
                            "the config file's servers for this pool changed since the last start: they replace the state file's ({} -> {})",
                            servers(&kept),
                            servers(from_file)
                        ),
                    });
                }
                from_file.clone()
            }
            None => from_file.clone(),
        };
        pools.insert(name.clone(), chosen);
    }
    for (name, kept) in saved {
        let removed_from_file = baseline.is_some_and(|b| b.contains_key(&name));
        if removed_from_file && !live(&name) {
            notes.push(Note {
                pool: name.clone(),
                what: "removed from the config file since the last start: the pool is gone".into(),
            });
            continue;
        }
        if removed_from_file {
            notes.push(Note {
                pool: name.clone(),
                what: "removed from the config file, but the routing still sends traffic to it: kept until it no longer does (switch away, then reload)".into(),
            });
        }
        pools.insert(name, kept);
    }
    Merged { pools, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(spec: &[(&str, &[&str])]) -> BTreeMap<PoolName, Vec<Backend>> {
        spec.iter()
            .map(|(name, servers)| {
                (
                    PoolName::parse(name).expect("name"),
                    servers
                        .iter()
                        .map(|s| {
                            Backend::parse(&turnout_config::ServerEntry {
                                addr: (*s).to_owned(),
                                weight: 1,
                            })
                            .expect("server")
                        })
                        .collect(),
                )
            })
            .collect()
    }

    fn never(_: &PoolName) -> bool {
        false
    }

    /// An edited pool takes the file's servers; one the edit left alone keeps what the API
    /// registered; a pool only the API made stays.
    #[test]
    fn an_edit_wins_for_the_pools_it_touched_and_the_api_for_the_rest() {
        let baseline = pools(&[
            ("blue", &["127.0.0.1:3000"]),
            ("green", &["127.0.0.1:4000"]),
        ]);
        let config = pools(&[
            ("blue", &["127.0.0.1:3001"]),
            ("green", &["127.0.0.1:4000"]),
        ]);
        let saved = pools(&[
            ("blue", &["127.0.0.1:3000"]),
            ("green", &["127.0.0.1:4444", "127.0.0.1:4445"]),
            ("canary", &["127.0.0.1:5000"]),
        ]);
        let merged = merge_pools(&config, saved, Some(&baseline), never);
        assert_eq!(
            merged.pools,
            pools(&[
                ("blue", &["127.0.0.1:3001"]),
                ("green", &["127.0.0.1:4444", "127.0.0.1:4445"]),
                ("canary", &["127.0.0.1:5000"]),
            ])
        );
        assert_eq!(merged.notes.len(), 1, "{:?}", merged.notes);
        assert_eq!(merged.notes[0].pool.as_str(), "blue");
        assert!(merged.notes[0]
            .what
            .contains("127.0.0.1:3000 -> 127.0.0.1:3001"));
    }

    /// An edit of a pool the API also changed: the file, which changed last, wins. A pool
    /// added to the file appears.
    #[test]
    fn the_file_wins_over_the_api_for_an_edited_pool_and_new_pools_appear() {
        let baseline = pools(&[("blue", &["127.0.0.1:3000"])]);
        let config = pools(&[
            ("blue", &["127.0.0.1:3002"]),
            ("green", &["127.0.0.1:4000"]),
        ]);
        let saved = pools(&[("blue", &["127.0.0.1:3999"])]);
        let merged = merge_pools(&config, saved, Some(&baseline), never);
        assert_eq!(merged.pools, config);
    }

    /// A weight change alone is an edit too.
    #[test]
    fn a_weight_edit_is_an_edit() {
        let baseline = pools(&[("blue", &["127.0.0.1:3000"])]);
        let mut config = baseline.clone();
        config.values_mut().for_each(|s| s[0].weight = 5);
        let saved = pools(&[("blue", &["127.0.0.1:3000", "127.0.0.1:3003"])]);
        let merged = merge_pools(&config, saved, Some(&baseline), never);
        assert_eq!(merged.pools, config);
    }

    /// A pool removed from the file goes, unless the routing still names it.
    #[test]
    fn a_removed_pool_goes_unless_it_is_live() {
        let baseline = pools(&[("blue", &["127.0.0.1:3000"]), ("old", &["127.0.0.1:6000"])]);
        let config = pools(&[("blue", &["127.0.0.1:3000"])]);
        let saved = baseline.clone();
        let merged = merge_pools(&config, saved.clone(), Some(&baseline), never);
        assert_eq!(merged.pools, config);
        assert!(merged.notes[0].what.contains("gone"));
        let merged = merge_pools(&config, saved, Some(&baseline), |p| p.as_str() == "old");
        assert_eq!(merged.pools, baseline);
        assert!(merged.notes[0].what.contains("still sends traffic"));
    }

    /// A state file from before reloads (no baseline): every saved pool wins, as before.
    #[test]
    fn without_a_baseline_the_state_file_wins_as_before() {
        let config = pools(&[("blue", &["127.0.0.1:3001"])]);
        let saved = pools(&[
            ("blue", &["127.0.0.1:3000"]),
            ("green", &["127.0.0.1:4000"]),
        ]);
        let merged = merge_pools(&config, saved.clone(), None, never);
        assert_eq!(merged.pools, saved);
        assert!(merged.notes.is_empty());
    }
}
