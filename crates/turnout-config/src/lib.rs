//! turnout's configuration: the TOML file is read into the serde structs of [`file`], then
//! validated into [`Config`], the only form the rest of turnout sees.
//!
//! Precedence, from strongest to weakest: the state file (for the active pool and the pools'
//! servers, applied by `turnout-core` at start-up), the environment (`TURNOUT_ADMIN_TOKEN`,
//! applied by the binary), this file, then the defaults named in [`defaults`].

pub mod defaults;
mod error;
pub mod file;
mod names;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub use names::{PoolName, ServerAddr};

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: Server,
    pub upstream: Upstream,
    pub state: State,
    /// Every pool by name, each with its servers in order.
    pub pools: BTreeMap<PoolName, Vec<ServerAddr>>,
    pub routing: Routing,
}

/// `[server]`: the listeners and the process lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub health_path: String,
    pub admin_token: Option<String>,
    pub shutdown_delay: Duration,
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
}

/// `[upstream]`: how turnout talks to the app servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_server: usize,
}

/// `[state]`: where the live routing state is kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub file: Option<PathBuf>,
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub active: PoolName,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: file::FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        raw.validate(text, path)
    }
}

impl file::FileConfig {
    fn validate(self, text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid =
            |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of(text, span.start),
                key: key.to_owned(),
                message,
            };

        let server = self.server.unwrap_or_default();
        let health_path = server
            .health_path
            .unwrap_or_else(|| toml::Spanned::new(0..0, defaults::HEALTH_PATH.to_owned()));
        if !health_path.get_ref().starts_with('/') || health_path.get_ref().contains(['?', '#']) {
            return Err(invalid(
                health_path.span(),
                "server.health_path",
                format!(
                    "{:?} is not a path: it must start with '/' and hold no query",
                    health_path.get_ref()
                ),
            ));
        }
        let max_connections = server.max_connections.unwrap_or(defaults::MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: find_key_line(text, "max_connections"),
                key: "server.max_connections".into(),
                message: "must be at least 1".into(),
            });
        }
        let admin_token = server.admin_token.filter(|t| !t.is_empty());

        let upstream = self.upstream.unwrap_or_default();

        let mut pools = BTreeMap::new();
        for (name, pool) in self.pools {
            let key = format!("pools.{name}");
            let pool_name = PoolName::parse(&name).map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                line: find_key_line(text, &name),
                key: key.clone(),
                message,
            })?;
            let mut servers = Vec::with_capacity(pool.servers.len());
            for server in pool.servers {
                let addr = ServerAddr::parse(server.get_ref()).map_err(|message| {
                    invalid(server.span(), &format!("{key}.servers"), message)
                })?;
                servers.push(addr);
            }
            pools.insert(pool_name, servers);
        }
        if pools.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: 1,
                key: "pools".into(),
                message:
                    "no pool is defined: add at least [pools.blue] with servers = [\"HOST:PORT\"]"
                        .into(),
            });
        }

        let Some(routing) = self.routing else {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: 1,
                key: "routing.active".into(),
                message: "missing: name the pool that serves at first start, e.g. [routing] active = \"blue\"".into(),
            });
        };
        let active_name = routing.active;
        let known = || {
            pools
                .keys()
                .map(|p: &PoolName| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some((active, servers)) = pools.get_key_value(active_name.get_ref().as_str()) else {
            return Err(invalid(
                active_name.span(),
                "routing.active",
                format!(
                    "no pool named {:?} (pools: {})",
                    active_name.get_ref(),
                    known()
                ),
            ));
        };
        if servers.is_empty() {
            return Err(invalid(
                active_name.span(),
                "routing.active",
                format!("pool {:?} has no servers to serve with", active.as_str()),
            ));
        }
        let active = active.clone();

        Ok(Config {
            server: Server {
                listen: server.listen.map_or_else(defaults::listen, |a| a.0),
                admin: server.admin.map_or_else(defaults::admin, |a| a.0),
                health_path: health_path.into_inner(),
                admin_token,
                shutdown_delay: server
                    .shutdown_delay
                    .map_or(defaults::SHUTDOWN_DELAY, |d| d.0),
                shutdown_timeout: server
                    .shutdown_timeout
                    .map_or(defaults::SHUTDOWN_TIMEOUT, |d| d.0),
                max_connections,
            },
            upstream: Upstream {
                connect_timeout: upstream
                    .connect_timeout
                    .map_or(defaults::CONNECT_TIMEOUT, |d| d.0),
                response_timeout: upstream
                    .response_timeout
                    .map_or(defaults::RESPONSE_TIMEOUT, |d| d.0),
                idle_timeout: upstream
                    .idle_timeout
                    .map_or(defaults::IDLE_TIMEOUT, |d| d.0),
                max_idle_per_server: upstream
                    .max_idle_per_server
                    .unwrap_or(defaults::MAX_IDLE_PER_SERVER),
            },
            state: State {
                file: self.state.and_then(|s| s.file),
            },
            pools,
            routing: Routing { active },
        })
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line where `key` first appears, for errors about table keys (serde gives no span for
/// a map key); 1 when it cannot be found.
fn find_key_line(text: &str, key: &str) -> usize {
    text.find(key).map_or(1, |at| line_of(text, at))
}

#[cfg(test)]
mod tests;
