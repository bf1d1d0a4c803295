//! The TOML file as written: serde structs that reject unknown keys. Every field is optional
//! here so that defaults live in one place ([`crate::defaults`]); `Config::parse` turns these into
//! the validated [`crate::Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

pub use crate::duration::HumanDuration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: Option<FileServer>,
    pub upstream: Option<FileUpstream>,
    pub state: Option<FileState>,
    pub health: Option<FileHealth>,
    #[serde(default)]
    pub pools: BTreeMap<String, FilePool>,
    pub routing: Option<FileRouting>,
    /// `[[static]]`: directories served from disk.
    #[serde(default, rename = "static")]
    pub statics: Vec<Spanned<FileStatic>>,
    pub cache: Option<FileCache>,
    pub tls: Option<FileTls>,
    /// `[rollout]`: the guarded rollout's default policy.
    pub rollout: Option<crate::rollout::RolloutOverrides>,
    pub maintenance: Option<FileMaintenance>,
    pub pause: Option<FilePause>,
    pub errors: Option<FileErrors>,
    /// `[fleet]`: the fleet's desired state in etcd.
    pub fleet: Option<crate::fleet::FileFleet>,
    /// `[limits]`: per-client request and connection limits.
    pub limits: Option<crate::limits::FileLimits>,
    /// `[compression]`: gzip, br, zstd on the way out.
    pub compression: Option<crate::compression::FileCompression>,
    /// `[[auth]]`: edge authentication rules.
    #[serde(default)]
    pub auth: Vec<crate::auth::FileAuth>,
    /// `[log]`: text or JSON lines.
    pub log: Option<crate::log::FileLog>,
    /// `[grpc]`: the statuses that count as a server's failure.
    pub grpc: Option<crate::grpc::FileGrpc>,
}

/// `[maintenance]`: what passes while maintenance mode is on, and what others are told.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMaintenance {
    pub message: Option<String>,
    pub retry_after: Option<HumanDuration>,
    pub allow_paths: Option<Vec<Spanned<String>>>,
    pub allow_ips: Option<Vec<Spanned<String>>>,
    /// What the health path answers during maintenance: "pass" (default) or "fail".
    pub health: Option<Spanned<String>>,
}

/// `[pause]`: the bounds of holding requests while paused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePause {
    pub max_hold: Option<HumanDuration>,
    pub max_requests: Option<Spanned<usize>>,
    pub max_bytes: Option<Spanned<String>>,
    /// Held requests one client address may have (default: three quarters of `max_requests`).
    pub max_per_client: Option<Spanned<usize>>,
}

/// `[errors]`: pages for turnout's own answers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileErrors {
    pub dir: Option<Spanned<PathBuf>>,
}

/// `[tls]`: the HTTPS listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub listen: Option<Spanned<Addr>>,
    #[serde(default)]
    pub certs: Vec<Spanned<FileCert>>,
    pub watch: Option<bool>,
    pub reject_expired: Option<bool>,
    pub handshake_timeout: Option<HumanDuration>,
    pub max_handshakes: Option<Spanned<usize>>,
}

/// `[[tls.certs]]`: a certificate chain and its key, PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[pools.NAME.tls]`: how to trust the pool's `https://` servers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePoolTls {
    pub ca: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStatic {
    pub prefix: Spanned<String>,
    pub root: Spanned<PathBuf>,
    pub index: Option<String>,
    pub cache_control: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    #[serde(default)]
    pub prefixes: Vec<Spanned<String>>,
    pub max_bytes: Option<Spanned<String>>,
    pub max_object: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    /// This instance's name in `turnout status` (default: the host name).
    pub name: Option<Spanned<String>>,
    pub listen: Option<Addr>,
    pub admin: Option<Addr>,
    pub health_path: Option<Spanned<String>>,
    pub admin_token: Option<String>,
    pub shutdown_delay: Option<HumanDuration>,
    pub shutdown_timeout: Option<HumanDuration>,
    pub max_connections: Option<usize>,
    pub workers: Option<usize>,
    pub health_reflects_pool: Option<bool>,
    pub client_header_timeout: Option<HumanDuration>,
    pub client_idle_timeout: Option<HumanDuration>,
    pub max_header_count: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub redirect_https: Option<bool>,
    pub client_send_timeout: Option<HumanDuration>,
    pub client_body_timeout: Option<HumanDuration>,
    pub upgrade_protocols: Option<Vec<Spanned<String>>>,
    pub admin_hosts: Option<Vec<Spanned<String>>>,
    pub admin_origins: Option<Vec<Spanned<String>>>,
    /// The largest request body taken ("10MiB"); no limit unless set.
    pub max_request_body: Option<Spanned<String>>,
    /// Give every request an `X-Request-Id` (on by default).
    pub request_id: Option<bool>,
    /// The Unix socket a new turnout takes the listening sockets over from (in-place upgrade).
    pub upgrade_socket: Option<Spanned<PathBuf>>,
    /// Binaries (absolute paths) an in-place upgrade may start besides the running one.
    pub upgrade_binaries: Option<Vec<Spanned<PathBuf>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub connect_timeout: Option<HumanDuration>,
    pub response_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub max_idle_per_server: Option<usize>,
    pub body_timeout: Option<HumanDuration>,
    /// Wait this long for a server when a pool has none able to take a request.
    pub hold_when_unavailable: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    pub file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    /// `"HOST:PORT"` or `{ addr = "HOST:PORT", weight = 3 }`.
    pub servers: Vec<Spanned<crate::routing::ServerEntry>>,
    /// How requests are spread over the servers: "round_robin" unless given.
    pub balance: Option<Spanned<String>>,
    /// Overrides of `[health]` for this pool.
    pub health: Option<FileHealthCheck>,
    pub tls: Option<FilePoolTls>,
    /// What turnout speaks to the pool's servers: "http1" unless given, or "h2c".
    pub protocol: Option<Spanned<String>>,
}

/// `[health]`: the active checks (the defaults of every pool), and `[health.passive]`.
/// (The check keys are spelled out again rather than `#[serde(flatten)]`ed, because serde
/// cannot deny unknown keys through a flatten.)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub enabled: Option<bool>,
    pub path: Option<Spanned<String>>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub healthy_threshold: Option<Spanned<u32>>,
    pub unhealthy_threshold: Option<Spanned<u32>>,
    pub expect_status: Option<Spanned<String>>,
    /// The `Host` header of each check (the server's address unless given).
    pub host: Option<Spanned<String>>,
    /// Further headers sent with each check.
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    /// Check this port of each server instead of the one it serves on.
    pub port: Option<Spanned<u16>>,
    /// How many servers must pass before a switch: "one" (default), "all" or "N%".
    pub gate: Option<Spanned<String>>,
    /// "http" (a `GET` of `path`, the default) or "grpc" (only under `[pools.NAME.health]`).
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// The service a gRPC check asks about ("" for the server as a whole).
    pub grpc_service: Option<Spanned<String>>,
    pub passive: Option<FilePassive>,
}

impl FileHealth {
    /// The check keys alone, as a pool's override would hold them.
    pub fn split(self) -> (FileHealthCheck, Option<FilePassive>) {
        let check = FileHealthCheck {
            enabled: self.enabled,
            path: self.path,
            interval: self.interval,
            timeout: self.timeout,
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
            expect_status: self.expect_status,
            host: self.host,
            headers: self.headers,
            port: self.port,
            gate: self.gate,
            kind: self.kind,
            grpc_service: self.grpc_service,
        };
        (check, self.passive)
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    pub enabled: Option<bool>,
    pub path: Option<Spanned<String>>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub healthy_threshold: Option<Spanned<u32>>,
    pub unhealthy_threshold: Option<Spanned<u32>>,
    pub expect_status: Option<Spanned<String>>,
    /// The `Host` header of each check (the server's address unless given).
    pub host: Option<Spanned<String>>,
    /// Further headers sent with each check.
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    /// Check this port of each server instead of the one it serves on.
    pub port: Option<Spanned<u16>>,
    /// How many servers must pass before a switch: "one" (default), "all" or "N%".
    pub gate: Option<Spanned<String>>,
    /// "http" (a `GET` of `path`, the default) or "grpc" (`grpc.health.v1.Health/Check`).
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// The service a gRPC check asks about ("" for the server as a whole).
    pub grpc_service: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePassive {
    pub enabled: Option<bool>,
    pub failures: Option<Spanned<u32>>,
    pub ejection: Option<HumanDuration>,
    pub max_ejection: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouting {
    pub active: Spanned<String>,
    /// "cookie" (default), "header", "ip" or "none".
    pub sticky: Option<Spanned<String>>,
    pub sticky_cookie: Option<Spanned<String>>,
    pub sticky_header: Option<Spanned<String>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub preview_header: Option<Spanned<String>>,
    pub preview_token: Option<String>,
    pub preview_cookie: Option<Spanned<String>>,
    #[serde(default)]
    pub rules: Vec<Spanned<crate::routing::RuleSpec>>,
    /// Version-skew protection: how long a page's assets keep coming from its version.
    pub skew_protection: Option<HumanDuration>,
    /// The asset prefixes it covers (`[cache] prefixes` unless given).
    pub skew_prefixes: Option<Vec<Spanned<String>>>,
}

/// A listen address, `IP:PORT`; a bad one is reported by toml with its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Addr).map_err(|_| {
            de::Error::custom(format!(
                "invalid address {s:?}: expected IP:PORT, such as \"0.0.0.0:8080\" or \"[::1]:9901\""
            ))
        })
    }
}
