//! The status view: what `GET /v1/status` answers, built from one snapshot.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::snapshot::RoutingSnapshot;

/// What `GET /v1/status` answers.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The pool with the largest weight: the live version.
    pub active: String,
    /// The pool the previous split gave most weight (what a rollback makes active).
    pub previous: Option<String>,
    /// The split: pool -> weight (only pools that take new clients).
    pub weights: BTreeMap<String, u32>,
    /// The split before the last change of it: what a rollback restores.
    pub previous_weights: Option<BTreeMap<String, u32>>,
    /// The A/B rules, in order.
    pub rules: Vec<turnout_config::RuleSpec>,
    /// The routing generation.
    pub generation: u64,
    /// When the routing state last changed, RFC 3339.
    pub changed_at: String,
    /// Every pool, by name.
    pub pools: BTreeMap<String, PoolStatus>,
    /// The cache of upstream assets and static files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::handles::CacheStats>,
    /// The HTTPS listener's certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Vec<crate::handles::CertInfo>>,
    /// A switch prepared here and waiting for its commit (a fleet switch under way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared: Option<crate::control::PreparedStatus>,
    /// Shadow traffic under way (a rollout's mirror phase): "10% of GET,HEAD,OPTIONS to green".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// The guarded rollout under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollouts::RolloutReport>,
    /// Maintenance mode, when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceStatus>,
    /// A pause, when on: how many requests it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseStatus>,
    /// The process serving: its version, pid and start.
    pub process: ProcessStatus,
    /// The fleet this instance follows (`[fleet]`), as it sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::fleet::FleetStatus>,
}

/// The process serving.
#[derive(Debug, Serialize)]
pub struct ProcessStatus {
    /// turnout's version.
    pub version: &'static str,
    /// Its pid.
    pub pid: u32,
    /// RFC 3339.
    pub started_at: String,
    /// 1, plus one per in-place upgrade since turnout was started.
    pub generation: u64,
    /// Which instance: its name and addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<&'static crate::process::Instance>,
}

/// Maintenance mode, when on.
#[derive(Debug, Serialize)]
pub struct MaintenanceStatus {
    /// The message shown.
    pub message: String,
    /// RFC 3339.
    pub since: String,
}

/// A pause, when on.
#[derive(Debug, Serialize)]
pub struct PauseStatus {
    /// RFC 3339.
    pub since: String,
    /// The longest a request is held.
    pub max_hold_ms: u64,
    /// Its counters.
    #[serde(flatten)]
    pub stats: crate::pause::PauseStats,
}

/// One pool.
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    /// Its servers.
    pub servers: Vec<ServerStatus>,
    /// "round_robin", "weighted", "least_requests", "ip_hash" or "random_two_choices".
    pub balance: &'static str,
    /// Requests on this pool whose response has not finished.
    pub in_flight: usize,
    /// Upgraded connections (WebSockets) open on this pool.
    pub tunnels: usize,
    /// Requests sent to this pool since start-up.
    pub requests: u64,
    /// Servers that may take requests now.
    pub healthy_servers: usize,
    /// The pool's active check, e.g. "GET / every 2s, expect 200-299", or "off".
    pub check: String,
}

/// One server.
#[derive(Debug, Serialize)]
pub struct ServerStatus {
    /// `host:port`.
    pub addr: String,
    /// Its weight.
    pub weight: u32,
    /// Requests in flight on this server (counted only by the balancers that read loads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<usize>,
    /// Passes its checks and is not ejected: it takes requests.
    pub healthy: bool,
    /// Taken out for failing requests in a row, until its backoff ends or a check passes.
    pub ejected: bool,
    /// When it was last checked, RFC 3339 (none before the first check).
    pub last_check: Option<String>,
    /// Why the last check failed; none when it passed.
    pub last_error: Option<String>,
}

impl From<&RoutingSnapshot> for Status {
    fn from(s: &RoutingSnapshot) -> Status {
        Status {
            active: s.active.name().to_string(),
            previous: s.previous_primary().map(ToString::to_string),
            weights: s.weights.to_map(),
            previous_weights: s.previous.as_ref().map(crate::split::Weights::to_map),
            rules: s.rules.iter().map(turnout_config::Rule::spec).collect(),
            generation: s.generation,
            changed_at: humantime::format_rfc3339_seconds(s.changed_at).to_string(),
            pools: s
                .pools
                .iter()
                .map(|(name, pool)| {
                    let stats = pool.stats();
                    let check = &pool.settings().check;
                    let status = PoolStatus {
                        balance: pool.settings().balance.as_str(),
                        servers: pool
                            .servers()
                            .iter()
                            .map(|u| {
                                let detail = u.health.detail();
                                ServerStatus {
                                    addr: u.addr.to_string(),
                                    weight: u.weight,
                                    in_flight: pool
                                        .counts_load()
                                        .then(|| u.load.load(std::sync::atomic::Ordering::Relaxed)),
                                    healthy: u.health.available(),
                                    ejected: u.health.is_ejected(),
                                    last_check: detail
                                        .last_check
                                        .map(|t| humantime::format_rfc3339_millis(t).to_string()),
                                    last_error: detail.last_error,
                                }
                            })
                            .collect(),
                        in_flight: stats.in_flight(),
                        tunnels: stats.tunnels(),
                        requests: stats.requests(),
                        healthy_servers: pool.available(),
                        check: if check.enabled {
                            let mut text = match &check.grpc_service {
                                Some(service) => format!(
                                    "gRPC Health/Check {service:?} every {}, expect SERVING",
                                    humantime::format_duration(check.interval),
                                ),
                                None => format!(
                                    "GET {} every {}, expect {}",
                                    check.path,
                                    humantime::format_duration(check.interval),
                                    check.expect_status
                                ),
                            };
                            if let Some(host) = &check.host {
                                text.push_str(&format!(", Host {host}"));
                            }
                            if let Some(port) = check.port {
                                text.push_str(&format!(", port {port}"));
                            }
                            if check.gate != turnout_config::Gate::One {
                                text.push_str(&format!(", switch gate {}", check.gate));
                            }
                            text
                        } else {
                            "off".into()
                        },
                    };
                    (name.to_string(), status)
                })
                .collect(),
            prepared: None,
            rollout: None,
            mirror: s.mirror.as_ref().map(|m| {
                let methods: Vec<&str> = m.methods.iter().map(http::Method::as_str).collect();
                format!(
                    "{}% of {} to {}",
                    m.percent,
                    methods.join(","),
                    m.pool.name()
                )
            }),
            cache: None,
            tls: None,
            maintenance: s.maintenance.as_ref().map(|m| MaintenanceStatus {
                message: m.message.clone(),
                since: humantime::format_rfc3339_seconds(m.since).to_string(),
            }),
            process: ProcessStatus {
                version: env!("CARGO_PKG_VERSION"),
                pid: std::process::id(),
                started_at: humantime::format_rfc3339_seconds(s.env.started_at.0).to_string(),
                generation: crate::process::generation(),
                instance: crate::process::instance(),
            },
            fleet: None,
            paused: s.pause.as_ref().map(|p| PauseStatus {
                since: humantime::format_rfc3339_seconds(p.since).to_string(),
                max_hold_ms: u64::try_from(p.max_hold.as_millis()).unwrap_or(u64::MAX),
                stats: p.stats(),
            }),
        }
    }
}
