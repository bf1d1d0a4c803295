//! The status view: what `GET /v1/status` answers, built from one snapshot.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::snapshot::RoutingSnapshot;

#[derive(Debug, Serialize)]
pub struct Status {
    pub active: String,
    pub previous: Option<String>,
    pub generation: u64,
    /// When the routing state last changed, RFC 3339.
    pub changed_at: String,
    pub pools: BTreeMap<String, PoolStatus>,
}

#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub servers: Vec<ServerStatus>,
    /// Requests on this pool whose response has not finished.
    pub in_flight: usize,
    /// Upgraded connections (WebSockets) open on this pool.
    pub tunnels: usize,
    /// Requests sent to this pool since start-up.
    pub requests: u64,
}

#[derive(Debug, Serialize)]
pub struct ServerStatus {
    pub addr: String,
}

impl From<&RoutingSnapshot> for Status {
    fn from(s: &RoutingSnapshot) -> Status {
        Status {
            active: s.active.name().to_string(),
            previous: s.previous.as_ref().map(ToString::to_string),
            generation: s.generation,
            changed_at: humantime::format_rfc3339_seconds(s.changed_at).to_string(),
            pools: s
                .pools
                .iter()
                .map(|(name, pool)| {
                    let stats = pool.stats();
                    let status = PoolStatus {
                        servers: pool
                            .servers()
                            .iter()
                            .map(|u| ServerStatus {
                                addr: u.addr.to_string(),
                            })
                            .collect(),
                        in_flight: stats.in_flight(),
                        tunnels: stats.tunnels(),
                        requests: stats.requests(),
                    };
                    (name.to_string(), status)
                })
                .collect(),
        }
    }
}
