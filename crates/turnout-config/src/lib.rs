#![warn(missing_docs)]
//! turnout's configuration: the TOML file is read into the serde structs of [`file`](mod@file), then
//! validated into [`Config`], the only form the rest of turnout sees.
//!
//! Precedence, from strongest to weakest: the state file (for the active pool and the pools'
//! servers, applied by `turnout-core` at start-up), the environment (`TURNOUT_ADMIN_TOKEN`,
//! applied by the binary), this file, then the defaults named in [`defaults`].

pub mod auth;
mod cache;
pub mod compression;
pub mod defaults;
mod duration;
mod error;
mod errors;
pub mod fleet;
// The raw serde form of the TOML: each field is the key of the same name, documented in
// config/turnout.toml (which tests.rs parses, so the two cannot drift apart unnoticed).
#[allow(missing_docs)]
pub mod file;
mod grpc;
mod health;
pub mod limits;
mod log;
mod maintenance;
mod names;
mod pause;
mod pools;
mod read;
pub mod rollout;
pub mod routing;
mod routing_section;
mod scope;
mod server;
mod span;
mod statics;
mod tls;
mod upstream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cache::resolve_cache;
pub use duration::{parse_duration, HumanDuration, MAX_DURATION};
use errors::resolve_errors;
use health::{resolve_check, resolve_passive};
use maintenance::resolve_maintenance;
use pause::resolve_pause;
use routing_section::resolve_routing;
use span::{invalid_key, line_of};
use statics::resolve_statics;
use tls::resolve_tls;

pub use auth::{AuthCheck, AuthRule};
pub use cache::Cache;
pub use compression::{Compression, Encoding};
pub use error::ConfigError;
pub use errors::ErrorPages;
pub use grpc::{Grpc, GrpcCodes, CODE_NAMES as GRPC_CODE_NAMES};
pub use health::{Gate, HealthCheck, Passive, StatusRange};
pub use limits::{LimitKey, Limits, RateLimit};
pub use log::{Log, LogFormat};
pub use maintenance::MaintenancePolicy;
pub use names::{PoolName, ServerAddr};
pub use pause::PausePolicy;
pub use read::{read_capped, read_text_capped, MAX_CONFIG_BYTES};
pub use routing::{
    Backend, Balance, Preview, Protocol, Rule, RuleMatch, RuleOn, RuleSpec, ServerEntry, Sticky,
    TrustedProxies,
};
pub use routing_section::Routing;
pub use server::Server;
pub use statics::StaticDir;
pub use tls::{CertFiles, Tls};
pub use upstream::Upstream;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[server]`.
    pub server: Server,
    /// `[upstream]`.
    pub upstream: Upstream,
    /// `[state]`.
    pub state: State,
    /// Every pool by name, each with its servers in order.
    pub pools: BTreeMap<PoolName, Vec<Backend>>,
    /// `[pools.NAME] balance`, for the pools that set one (the others round-robin).
    pub pool_balance: BTreeMap<PoolName, Balance>,
    /// `[routing]`: the active pool, weights, stickiness, preview, rules.
    pub routing: Routing,
    /// `[health]`: the active checks of every pool without its own `[pools.NAME.health]`.
    pub health: HealthCheck,
    /// `[pools.NAME.health]` merged over `[health]`, for the pools that have one.
    pub pool_health: BTreeMap<PoolName, HealthCheck>,
    /// `[health.passive]`.
    pub passive: Passive,
    /// `[[static]]`, in file order (the first matching prefix serves).
    pub statics: Vec<StaticDir>,
    /// `[cache]`.
    pub cache: Cache,
    /// `[tls]`: the HTTPS listener, if any.
    pub tls: Option<Tls>,
    /// `[pools.NAME.tls] ca`: the CA file trusted for the pool's `https://` servers (the
    /// system's roots for pools without one).
    pub pool_ca: BTreeMap<PoolName, PathBuf>,
    /// `[pools.NAME] protocol`, for the pools that set one (the others speak HTTP/1.1).
    pub pool_protocol: BTreeMap<PoolName, Protocol>,
    /// `[rollout]` over the defaults: what a guarded rollout does unless its call says otherwise.
    pub rollout: rollout::RolloutPolicy,
    /// `[maintenance]`.
    pub maintenance: MaintenancePolicy,
    /// `[pause]`.
    pub pause: PausePolicy,
    /// `[fleet]`: the fleet whose desired routing this instance follows, from etcd.
    pub fleet: Option<fleet::Fleet>,
    /// `[[auth]]`: edge authentication rules, in file order.
    pub auth: Vec<AuthRule>,
    /// `[compression]`: responses compressed on the way out (none: never).
    pub compression: Option<Compression>,
    /// `[limits]`: per-client rates, requests in flight and connections; the allow-list.
    pub limits: Limits,
    /// `[log]`: how log lines are written.
    pub log: Log,
    /// `[grpc]`: the gRPC statuses counted as the server's failure.
    pub grpc: Grpc,
    /// `[errors] dir`: `502.html`, `503.html`, `504.html` (and `maintenance.html`) found there.
    pub error_pages: ErrorPages,
}

/// `[state]`: where the live routing state is kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The state file: the live routing, kept across restarts (none: the routing lives in memory only).
    pub file: Option<PathBuf>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            read_text_capped(path, MAX_CONFIG_BYTES).map_err(|source| ConfigError::Read {
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

        let state_file = self.state.and_then(|s| s.file);
        let server = self
            .server
            .unwrap_or_default()
            .resolve(state_file.as_deref(), text, path)?;
        let (global_check, passive) = self.health.unwrap_or_default().split();
        let health = resolve_check(global_check, &HealthCheck::default(), "health", text, path)?;
        let passive = resolve_passive(passive.unwrap_or_default(), text, path)?;

        let upstream = self.upstream.unwrap_or_default();

        let pools::Pools {
            servers: pools,
            health: pool_health,
            balance: pool_balance,
            ca: pool_ca,
            protocol: pool_protocol,
        } = pools::resolve(self.pools, &health, text, path)?;

        let Some(routing) = self.routing else {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: 1,
                key: "routing.active".into(),
                message: "missing: name the pool that serves at first start, e.g. [routing] active = \"blue\"".into(),
            });
        };
        let active_name = routing.active.clone();
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
        let routing = resolve_routing(routing, active, &pools, text, path)?;
        let statics = resolve_statics(self.statics, text, path)?;
        let cache = resolve_cache(self.cache.unwrap_or_default(), text, path)?;
        let tls = match self.tls {
            None => None,
            Some(tls) => Some(resolve_tls(tls, [server.listen, server.admin], text, path)?),
        };
        if server.redirect_https && tls.is_none() {
            return Err(invalid_key(
                text,
                path,
                "server.redirect_https",
                "needs a [tls] listener to redirect to",
            ));
        }

        let rollout = rollout::RolloutPolicy::default()
            .merged(&self.rollout.unwrap_or_default())
            .map_err(|(field, message)| ConfigError::Invalid {
                path: path.to_owned(),
                // The key under `[rollout]` (another table may use the same name).
                line: text
                    .find("[rollout]")
                    .and_then(|at| text[at..].find(field).map(|k| at + k))
                    .map_or(1, |at| line_of(text, at)),
                key: format!("rollout.{field}"),
                message,
            })?;

        if routing.skew_protection.is_some()
            && routing.skew_prefixes.is_empty()
            && cache.prefixes.is_empty()
        {
            return Err(invalid_key(text, path, "routing.skew_protection", "covers asset paths, and none is named: set [routing] skew_prefixes (or [cache] prefixes), e.g. [\"/_next/static/\"]"));
        }
        let maintenance = resolve_maintenance(self.maintenance.unwrap_or_default(), text, path)?;
        let pause = resolve_pause(self.pause.unwrap_or_default(), text, path)?;
        let error_pages = resolve_errors(self.errors.unwrap_or_default(), text, path)?;
        let fleet = self
            .fleet
            .map(|f| fleet::resolve_fleet(f, text, path))
            .transpose()?;
        let limits = limits::resolve_limits(
            self.limits.unwrap_or_default(),
            &pools,
            fleet.is_some(),
            text,
            path,
        )?;

        let compression = self
            .compression
            .map(|c| compression::resolve_compression(c, text, path))
            .transpose()?;

        let auth = auth::resolve_auth(self.auth, &pools, text, path)?;
        let log = log::resolve_log(self.log.unwrap_or_default(), text, path)?;
        let grpc = grpc::resolve_grpc(self.grpc.unwrap_or_default(), text, path)?;

        Ok(Config {
            log,
            grpc,
            auth,
            compression,
            limits,
            fleet,
            maintenance,
            pause,
            error_pages,
            server,
            upstream: upstream.resolve(),
            state: State { file: state_file },
            pools,
            pool_balance,
            routing,
            health,
            pool_health,
            passive,
            statics,
            cache,
            tls,
            pool_ca,
            pool_protocol,
            rollout,
        })
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
