//! `[pools.NAME]`: each pool's servers, balancer, health check and CA, validated (each error
//! names the pool's key and the line).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::file::FilePool;
use crate::health::resolve_check;
use crate::health::HealthCheck;
use crate::names::PoolName;
use crate::routing::{Backend, Balance, Protocol};
use crate::span::{find_key_line, line_of};

/// Every pool, validated: its servers, and what it sets beside the defaults.
pub(crate) struct Pools {
    pub servers: BTreeMap<PoolName, Vec<Backend>>,
    /// Pools with a `health` table of their own (over `[health]`).
    pub health: BTreeMap<PoolName, HealthCheck>,
    /// Pools with a `balance` of their own.
    pub balance: BTreeMap<PoolName, Balance>,
    /// Pools with `tls.ca`: the CA their `https://` servers are checked against.
    pub ca: BTreeMap<PoolName, PathBuf>,
    /// Pools with a `protocol` of their own (the others speak HTTP/1.1).
    pub protocol: BTreeMap<PoolName, Protocol>,
}

/// The `[pools.*]` tables validated; `health` is `[health]`'s check, which each pool's own
/// `health` table starts from.
pub(crate) fn resolve(
    file: BTreeMap<String, FilePool>,
    health: &HealthCheck,
    text: &str,
    path: &Path,
) -> Result<Pools, ConfigError> {
    let invalid = |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(text, span.start),
        key: key.to_owned(),
        message,
    };
    let mut servers_by_pool = BTreeMap::new();
    let mut pool_health = BTreeMap::new();
    let mut pool_balance = BTreeMap::new();
    let mut pool_ca = BTreeMap::new();
    let mut pool_protocol = BTreeMap::new();
    for (name, pool) in file {
        let key = format!("pools.{name}");
        let pool_name = PoolName::parse(&name).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            line: find_key_line(text, &name),
            key: key.clone(),
            message,
        })?;
        let balance = match &pool.balance {
            None => Balance::RoundRobin,
            Some(b) => Balance::parse(b.get_ref())
                .map_err(|m| invalid(b.span(), &format!("{key}.balance"), m))?,
        };
        let mut servers = Vec::with_capacity(pool.servers.len());
        for server in pool.servers {
            let backend = Backend::parse(server.get_ref())
                .map_err(|message| invalid(server.span(), &format!("{key}.servers"), message))?;
            if backend.weight != 1 && !balance.weighs() {
                return Err(invalid(
                        server.span(),
                        &format!("{key}.servers"),
                        format!(
                            "server {} has weight {}, but balance = \"round_robin\" does not use weights; \
                             set balance = \"weighted\" (or least_requests, ip_hash, random_two_choices)",
                            backend.addr, backend.weight
                        ),
                    ));
            }
            servers.push(backend);
        }
        if pool.balance.is_some() {
            pool_balance.insert(pool_name.clone(), balance);
        }
        let mut h2 = false;
        if let Some(p) = &pool.protocol {
            let protocol = Protocol::parse(p.get_ref())
                .map_err(|m| invalid(p.span(), &format!("{key}.protocol"), m))?;
            let mismatch = servers.iter().find(|b| match protocol {
                Protocol::H2c => b.addr.is_tls(),
                Protocol::H2 => !b.addr.is_tls(),
                Protocol::Http1 => false,
            });
            if let Some(server) = mismatch {
                let why = if protocol == Protocol::H2c {
                    format!("\"h2c\" is cleartext, and server {} is https://: drop the https:// or use \"h2\"", server.addr)
                } else {
                    format!("\"h2\" is HTTP/2 over TLS, and server {} is not https://: write https://HOST:PORT or use \"h2c\"", server.addr)
                };
                return Err(invalid(p.span(), &format!("{key}.protocol"), why));
            }
            h2 = protocol != Protocol::Http1;
            pool_protocol.insert(pool_name.clone(), protocol);
        }
        if let Some(ca) = pool.tls.and_then(|t| t.ca) {
            if !ca.get_ref().is_file() {
                return Err(invalid(
                    ca.span(),
                    &format!("{key}.tls.ca"),
                    format!("{} is not a file turnout can read", ca.get_ref().display()),
                ));
            }
            pool_ca.insert(pool_name.clone(), ca.into_inner());
        }
        if let Some(check) = pool.health {
            let kind = check.kind.as_ref().map(|k| k.span());
            let check = resolve_check(check, health, &format!("{key}.health"), text, path)?;
            if let (Some(span), Some(_), false) = (kind, &check.grpc_service, h2) {
                // gRPC is HTTP/2 only: its health service cannot be asked over HTTP/1.1.
                return Err(invalid(
                    span,
                    &format!("{key}.health.type"),
                    "a gRPC check needs a pool that speaks HTTP/2: set protocol = \"h2c\" \
                     (or \"h2\" for https:// servers)"
                        .into(),
                ));
            }
            pool_health.insert(pool_name.clone(), check);
        }
        servers_by_pool.insert(pool_name, servers);
    }
    if servers_by_pool.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            line: 1,
            key: "pools".into(),
            message: "no pool is defined: add at least [pools.blue] with servers = [\"HOST:PORT\"]"
                .into(),
        });
    }

    Ok(Pools {
        servers: servers_by_pool,
        health: pool_health,
        balance: pool_balance,
        ca: pool_ca,
        protocol: pool_protocol,
    })
}
