//! turnout's configuration: the TOML file is read into the serde structs of [`file`], then
//! validated into [`Config`], the only form the rest of turnout sees.
//!
//! Precedence, from strongest to weakest: the state file (for the active pool and the pools'
//! servers, applied by `turnout-core` at start-up), the environment (`TURNOUT_ADMIN_TOKEN`,
//! applied by the binary), this file, then the defaults named in [`defaults`].

pub mod defaults;
mod duration;
mod error;
pub mod file;
mod names;
mod pools;
pub mod rollout;
pub mod routing;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::{parse_duration, HumanDuration, MAX_DURATION};
pub use error::ConfigError;
pub use names::{PoolName, ServerAddr};
pub use routing::{
    Backend, Balance, Preview, Rule, RuleMatch, RuleOn, RuleSpec, ServerEntry, Sticky,
    TrustedProxies,
};

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: Server,
    pub upstream: Upstream,
    pub state: State,
    /// Every pool by name, each with its servers in order.
    pub pools: BTreeMap<PoolName, Vec<Backend>>,
    /// `[pools.NAME] balance`, for the pools that set one (the others round-robin).
    pub pool_balance: BTreeMap<PoolName, Balance>,
    pub routing: Routing,
    /// `[health]`: the active checks of every pool without its own `[pools.NAME.health]`.
    pub health: HealthCheck,
    /// `[pools.NAME.health]` merged over `[health]`, for the pools that have one.
    pub pool_health: BTreeMap<PoolName, HealthCheck>,
    /// `[health.passive]`.
    pub passive: Passive,
    /// `[[static]]`, in file order (the first matching prefix serves).
    pub statics: Vec<StaticDir>,
    pub cache: Cache,
    /// `[tls]`: the HTTPS listener, if any.
    pub tls: Option<Tls>,
    /// `[pools.NAME.tls] ca`: the CA file trusted for the pool's `https://` servers (the
    /// system's roots for pools without one).
    pub pool_ca: BTreeMap<PoolName, PathBuf>,
    /// `[rollout]` over the defaults: what a guarded rollout does unless its call says otherwise.
    pub rollout: rollout::RolloutPolicy,
    pub maintenance: MaintenancePolicy,
    pub pause: PausePolicy,
    /// `[errors] dir`: `502.html`, `503.html`, `504.html` (and `maintenance.html`) found there.
    pub error_pages: ErrorPages,
}

/// `[maintenance]`: who still gets through while maintenance mode is on, and what the others
/// are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenancePolicy {
    /// The message when `turnout maintenance on` gives none.
    pub message: String,
    pub retry_after: Duration,
    /// Path prefixes that still reach the app.
    pub allow_paths: Vec<String>,
    /// Clients (the address `trusted_proxies` resolves to) that still reach the app.
    pub allow_ips: TrustedProxies,
    /// The health path fails during maintenance (the load balancer takes the instance out);
    /// by default it passes, so the load balancer keeps sending clients to the page.
    pub health_fails: bool,
}

impl Default for MaintenancePolicy {
    fn default() -> Self {
        MaintenancePolicy {
            message: defaults::MAINTENANCE_MESSAGE.to_owned(),
            retry_after: defaults::MAINTENANCE_RETRY_AFTER,
            allow_paths: Vec::new(),
            allow_ips: TrustedProxies::default(),
            health_fails: false,
        }
    }
}

/// `[pause]`: how long and how many requests a pause holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PausePolicy {
    pub max_hold: Duration,
    pub max_requests: usize,
    /// The bound on held requests' heads, in bytes.
    pub max_bytes: u64,
    /// Held requests one client address may have; past it that client's own oldest is shed.
    pub max_per_client: usize,
}

impl Default for PausePolicy {
    fn default() -> Self {
        PausePolicy {
            max_hold: defaults::PAUSE_MAX_HOLD,
            max_requests: defaults::PAUSE_MAX_REQUESTS,
            max_bytes: defaults::PAUSE_MAX_BYTES,
            max_per_client: (defaults::PAUSE_MAX_REQUESTS * 3).div_ceil(4),
        }
    }
}

/// Pages read from `[errors] dir` at start-up (a missing file keeps the built-in answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages {
    pub dir: Option<PathBuf>,
    /// By status (502, 503, 504), and the maintenance page under 0.
    pub pages: Vec<(u16, String)>,
}

/// `[tls]`: the HTTPS listener and its certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub listen: SocketAddr,
    /// In file order; the first is served to clients that send no SNI name.
    pub certs: Vec<CertFiles>,
    /// Reload when a certificate or key file changes on disk.
    pub watch: bool,
    /// Refuse a certificate whose not-after date has passed.
    pub reject_expired: bool,
    pub handshake_timeout: Duration,
    pub max_handshakes: usize,
}

/// `[[tls.certs]]`: a PEM chain (leaf first) and its PEM key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[[static]]`: a URL prefix served from a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDir {
    /// Starts and ends with '/'.
    pub prefix: String,
    /// The directory, canonical (symlinks resolved) and known to exist at load time.
    pub root: PathBuf,
    /// Served for a request naming a directory.
    pub index: Option<String>,
    pub cache_control: Option<String>,
}

/// `[cache]`: the in-memory cache of upstream assets and static files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// URL prefixes whose upstream GET/HEAD responses may be cached; empty: none.
    pub prefixes: Vec<String>,
    /// The bound on the bytes held (static files and upstream assets together).
    pub max_bytes: u64,
    /// Larger responses and files are never held; they stream.
    pub max_object: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            prefixes: Vec::new(),
            max_bytes: defaults::CACHE_MAX_BYTES,
            max_object: defaults::CACHE_MAX_OBJECT,
        }
    }
}

/// `[server]`: the listeners and the process lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// This instance's name, as `turnout status` shows it; `None`: the host name.
    pub name: Option<String>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub health_path: String,
    pub admin_token: Option<String>,
    pub shutdown_delay: Duration,
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
    /// Runtime threads serving traffic; 1 runs everything on one thread (a current-thread
    /// runtime), as a one-worker nginx does.
    pub workers: usize,
    /// The health path answers 503 while the active pool has no healthy server.
    pub health_reflects_pool: bool,
    /// A client must send a request's head within this (from its first byte, or from accept).
    pub client_header_timeout: Duration,
    /// An idle keep-alive client connection is closed after this.
    pub client_idle_timeout: Duration,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    /// The plain listener answers 308 to the https URL (but for the health path).
    pub redirect_https: bool,
    /// A client that takes no bytes of its response for this long is cut off.
    pub client_send_timeout: Duration,
    /// An HTTP/1 request body with no byte for this long is given up on.
    pub client_body_timeout: Duration,
    /// Lower-case protocol names a client may upgrade to (`websocket` by default).
    pub upgrade_protocols: Vec<String>,
    /// Without an admin token: host names (beyond IP addresses and `localhost`) that the admin
    /// API answers to, against DNS rebinding.
    pub admin_hosts: Vec<String>,
    /// Browser origins allowed to call the admin API; a request from any other is refused.
    pub admin_origins: Vec<String>,
    /// Request bodies longer than this get 413; `None`: no limit.
    pub max_request_body: Option<u64>,
    /// `X-Request-Id` on every request (kept from a trusted proxy, made otherwise), returned
    /// to the client and logged.
    pub request_id: bool,
    /// The Unix socket a new turnout process takes the listening sockets over from (an
    /// in-place upgrade): `upgrade_socket`, else the state file's path plus `.upgrade.sock`;
    /// `None` without a state file (the new process reads the routing from it).
    pub upgrade_socket: Option<PathBuf>,
    /// Binaries an in-place upgrade may start besides the running one (`binary` in
    /// `POST /v1/upgrade`, `turnout upgrade --binary`): absolute paths, as written.
    pub upgrade_binaries: Vec<PathBuf>,
}

/// `[upstream]`: how turnout talks to the app servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_server: usize,
    /// An upstream body with no byte for this long after its head is given up on.
    pub body_timeout: Duration,
    /// A request whose pool has no server able to take it (an app restarting) waits up to this
    /// long for one instead of an immediate 503/502; `None`: no wait.
    pub hold_when_unavailable: Option<Duration>,
}

/// `[state]`: where the live routing state is kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub file: Option<PathBuf>,
}

/// Active health checks of one pool's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub enabled: bool,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub expect_status: StatusRange,
    /// The `Host` header of each check; the server's address when `None`.
    pub host: Option<String>,
    /// Further headers sent with each check (validated names and values).
    pub headers: Vec<(String, String)>,
    /// The port checks go to, when it is not the one the server serves on.
    pub port: Option<u16>,
    /// How many of a pool's servers must pass a fresh probe before a switch to it.
    pub gate: Gate,
}

/// The health gate of a switch: which share of the target pool's servers must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gate {
    /// At least one server (the default).
    #[default]
    One,
    /// Every server.
    All,
    /// At least this percentage of the servers (1-100), rounded up.
    Percent(u8),
}

impl Gate {
    pub fn parse(s: &str) -> Result<Gate, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "one" | "any" | "at_least_one" => Ok(Gate::One),
            "all" => Ok(Gate::All),
            _ => match t.strip_suffix('%').map(|n| n.trim().parse::<u8>()) {
                Some(Ok(n)) if (1..=100).contains(&n) => Ok(Gate::Percent(n)),
                _ => Err(format!(
                    "{s:?} is not a gate: \"one\", \"all\" or a percentage such as \"50%\""
                )),
            },
        }
    }

    /// How many of `servers` must pass (at least one whenever there are servers).
    pub fn needed(&self, servers: usize) -> usize {
        match self {
            Gate::One => servers.min(1),
            Gate::All => servers,
            Gate::Percent(p) => (servers * usize::from(*p))
                .div_ceil(100)
                .max(servers.min(1)),
        }
    }
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gate::One => f.write_str("one"),
            Gate::All => f.write_str("all"),
            Gate::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            path: defaults::CHECK_PATH.to_owned(),
            interval: defaults::CHECK_INTERVAL,
            timeout: defaults::CHECK_TIMEOUT,
            healthy_threshold: defaults::HEALTHY_THRESHOLD,
            unhealthy_threshold: defaults::UNHEALTHY_THRESHOLD,
            expect_status: StatusRange { min: 200, max: 299 },
            host: None,
            headers: Vec::new(),
            port: None,
            gate: Gate::One,
        }
    }
}

/// An inclusive range of HTTP status codes, written "2xx", "200" or "200-399".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

impl StatusRange {
    pub fn parse(s: &str) -> Result<StatusRange, String> {
        let bad = || format!("invalid status range {s:?}: write \"2xx\", \"200\" or \"200-399\"");
        let code = |c: &str| {
            c.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(bad)
        };
        let range = if let Some(class) = s.strip_suffix("xx") {
            let c = code(&format!("{class}00"))?;
            StatusRange {
                min: c,
                max: c + 99,
            }
        } else if let Some((lo, hi)) = s.split_once('-') {
            StatusRange {
                min: code(lo)?,
                max: code(hi)?,
            }
        } else {
            let c = code(s)?;
            StatusRange { min: c, max: c }
        };
        if range.min > range.max {
            return Err(bad());
        }
        Ok(range)
    }

    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// `[health.passive]`: ejecting servers that fail real requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passive {
    pub enabled: bool,
    /// Consecutive failures that eject a server.
    pub failures: u32,
    /// The first ejection's length; each further one in a row doubles it, up to `max_ejection`.
    pub ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            enabled: true,
            failures: defaults::PASSIVE_FAILURES,
            ejection: defaults::EJECTION,
            max_ejection: defaults::MAX_EJECTION,
        }
    }
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub active: PoolName,
    /// How a client keeps its pool while a split is in force.
    pub sticky: Sticky,
    /// The cookie that names a client's pool (`Sticky::Cookie`).
    pub sticky_cookie: String,
    /// Peers whose `X-Forwarded-For` is believed (the load balancer's subnet).
    pub trusted_proxies: TrustedProxies,
    /// Off unless `preview_header` is set.
    pub preview: Option<Preview>,
    /// A/B rules, in order; the first match wins.
    pub rules: Vec<Rule>,
    /// Version-skew protection, on for this long after a page load (`None`: off).
    pub skew_protection: Option<Duration>,
    /// The asset prefixes skew protection covers; empty: `[cache] prefixes`.
    pub skew_prefixes: Vec<String>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            active: PoolName::parse("blue").expect("a valid name"),
            sticky: Sticky::Cookie,
            sticky_cookie: defaults::STICKY_COOKIE.to_owned(),
            trusted_proxies: TrustedProxies::default(),
            preview: None,
            rules: Vec::new(),
            skew_protection: None,
            skew_prefixes: Vec::new(),
        }
    }
}

/// The most turnout reads of a config file.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads at most `limit` bytes of `path`; a longer file (or an endless one, such as a device)
/// is refused with an `InvalidData` error that says so, before more than `limit + 1` bytes are
/// held. Config, state, certificate, key and CA files are all read through this.
pub fn read_capped(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes, the most turnout reads of such a file"),
        ));
    }
    Ok(bytes)
}

/// [`read_capped`] for a text file: bytes that are not UTF-8 are an `InvalidData` error that
/// says so.
pub fn read_text_capped(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_capped(path, limit)?).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text ({e})"),
        )
    })
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

        Ok(Config {
            maintenance,
            pause,
            error_pages,
            server,
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
                body_timeout: upstream
                    .body_timeout
                    .map_or(defaults::UPSTREAM_BODY_TIMEOUT, |d| d.0),
                hold_when_unavailable: upstream
                    .hold_when_unavailable
                    .map(|d| d.0)
                    .filter(|d| !d.is_zero()),
            },
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
            rollout,
        })
    }
}

fn resolve_maintenance(
    file: file::FileMaintenance,
    text: &str,
    path: &Path,
) -> Result<MaintenancePolicy, ConfigError> {
    let invalid = spanned_error(text, path, "maintenance");
    let mut policy = MaintenancePolicy::default();
    if let Some(m) = file.message {
        policy.message = m;
    }
    if let Some(d) = file.retry_after {
        policy.retry_after = d.0;
    }
    for p in file.allow_paths.unwrap_or_default() {
        if !p.get_ref().starts_with('/') {
            return Err(invalid(
                p.span(),
                "allow_paths",
                format!("{:?} must start with '/'", p.get_ref()),
            ));
        }
        policy.allow_paths.push(p.into_inner());
    }
    if let Some(ips) = file.allow_ips {
        let span = ips.first().map_or(0..0, toml::Spanned::span);
        policy.allow_ips = TrustedProxies::parse(ips.iter().map(|s| s.get_ref().as_str()))
            .map_err(|m| invalid(span, "allow_ips", m))?;
    }
    if let Some(h) = file.health {
        policy.health_fails = match h.get_ref().as_str() {
            "pass" => false,
            "fail" => true,
            other => {
                return Err(invalid(
                    h.span(),
                    "health",
                    format!(
                    "{other:?}: write \"pass\" (the load balancer keeps the instance) or \"fail\""
                ),
                ))
            }
        };
    }
    Ok(policy)
}

fn resolve_pause(
    file: file::FilePause,
    text: &str,
    path: &Path,
) -> Result<PausePolicy, ConfigError> {
    let invalid = spanned_error(text, path, "pause");
    let mut policy = PausePolicy::default();
    if let Some(d) = file.max_hold {
        if d.0.is_zero() {
            return Err(invalid_key(
                text,
                path,
                "pause.max_hold",
                "must be more than zero",
            ));
        }
        policy.max_hold = d.0;
    }
    if let Some(n) = file.max_requests {
        if *n.get_ref() == 0 {
            return Err(invalid(
                n.span(),
                "max_requests",
                "must be at least 1".into(),
            ));
        }
        policy.max_requests = n.into_inner();
        policy.max_per_client = (policy.max_requests * 3).div_ceil(4);
    }
    if let Some(n) = file.max_per_client {
        if *n.get_ref() == 0 {
            return Err(invalid(
                n.span(),
                "max_per_client",
                "must be at least 1".into(),
            ));
        }
        policy.max_per_client = n.into_inner().min(policy.max_requests);
    }
    if let Some(b) = file.max_bytes {
        policy.max_bytes = b
            .get_ref()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                invalid(
                    b.span(),
                    "max_bytes",
                    format!("invalid size {:?}: write it like \"64MiB\"", b.get_ref()),
                )
            })?;
    }
    Ok(policy)
}

fn resolve_errors(
    file: file::FileErrors,
    text: &str,
    path: &Path,
) -> Result<ErrorPages, ConfigError> {
    let Some(dir) = file.dir else {
        return Ok(ErrorPages::default());
    };
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(text, dir.span().start),
        key: "errors.dir".into(),
        message,
    };
    if !dir.get_ref().is_dir() {
        return Err(invalid(format!(
            "{} is not a directory turnout can read",
            dir.get_ref().display()
        )));
    }
    let mut pages = Vec::new();
    for (status, name) in [
        (502, "502.html"),
        (503, "503.html"),
        (504, "504.html"),
        (0, "maintenance.html"),
    ] {
        let file = dir.get_ref().join(name);
        match read_capped(&file, 1024 * 1024) {
            Ok(bytes) => {
                let page = String::from_utf8(bytes)
                    .map_err(|_| invalid(format!("{} is not UTF-8 text", file.display())))?;
                pages.push((status, page));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(invalid(format!("{}: {e}", file.display()))),
        }
    }
    Ok(ErrorPages {
        dir: Some(dir.into_inner()),
        pages,
    })
}

fn resolve_tls(
    file: file::FileTls,
    taken: [SocketAddr; 2],
    text: &str,
    path: &Path,
) -> Result<Tls, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        line: find_key_line(text, key),
        key: format!("tls.{key}"),
        message,
    };
    let listen = file
        .listen
        .as_ref()
        .map_or_else(defaults::tls_listen, |a| a.get_ref().0);
    // Port 0 (any free port, as tests use) cannot clash.
    if listen.port() != 0 && taken.contains(&listen) {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            line: file
                .listen
                .as_ref()
                .map_or(1, |a| line_of(text, a.span().start)),
            key: "tls.listen".into(),
            message: format!("{listen} is already the plain or the admin listener"),
        });
    }
    if file.certs.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            line: find_key_line(text, "[tls]"),
            key: "tls.certs".into(),
            message: "no certificate: add [[tls.certs]] with cert = \"fullchain.pem\" and key = \"privkey.pem\"".into(),
        });
    }
    let max_handshakes = match file.max_handshakes {
        None => defaults::TLS_MAX_HANDSHAKES,
        Some(m) if *m.get_ref() == 0 => {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of(text, m.span().start),
                key: "tls.max_handshakes".into(),
                message: "must be at least 1".into(),
            })
        }
        Some(m) => m.into_inner(),
    };
    let handshake_timeout = file
        .handshake_timeout
        .map_or(defaults::TLS_HANDSHAKE_TIMEOUT, |d| d.0);
    if handshake_timeout.is_zero() {
        return Err(invalid("handshake_timeout", "must be more than 0".into()));
    }
    Ok(Tls {
        listen,
        certs: file
            .certs
            .into_iter()
            .map(|c| {
                let c = c.into_inner();
                CertFiles {
                    cert: c.cert,
                    key: c.key,
                }
            })
            .collect(),
        watch: file.watch.unwrap_or(false),
        reject_expired: file.reject_expired.unwrap_or(false),
        handshake_timeout,
        max_handshakes,
    })
}

/// A URL prefix: starts and ends with '/', no query.
fn check_prefix(p: &str) -> Result<(), String> {
    if p.starts_with('/') && p.ends_with('/') && !p.contains(['?', '#']) {
        Ok(())
    } else {
        Err(format!(
            "{p:?} is not a path prefix: it must start and end with '/', like \"/static/\""
        ))
    }
}

fn resolve_statics(
    file: Vec<toml::Spanned<file::FileStatic>>,
    text: &str,
    path: &Path,
) -> Result<Vec<StaticDir>, ConfigError> {
    let invalid =
        |span: std::ops::Range<usize>, key: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            key,
            message,
        };
    let mut dirs = Vec::with_capacity(file.len());
    for (i, entry) in file.into_iter().enumerate() {
        let entry = entry.into_inner();
        let key = |field: &str| format!("static[{i}].{field}");
        check_prefix(entry.prefix.get_ref())
            .map_err(|m| invalid(entry.prefix.span(), key("prefix"), m))?;
        let root = entry.root.get_ref();
        let canonical = std::fs::canonicalize(root)
            .ok()
            .filter(|r| r.is_dir())
            .ok_or_else(|| {
                invalid(
                    entry.root.span(),
                    key("root"),
                    format!("{} is not a directory turnout can read", root.display()),
                )
            })?;
        if let Some(index) = &entry.index {
            if index.is_empty() || index.contains(['/', '\\']) || index == ".." {
                return Err(invalid(
                    entry.prefix.span(),
                    key("index"),
                    format!("{index:?} must be a file name, like \"index.html\""),
                ));
            }
        }
        if let Some(cc) = &entry.cache_control {
            if cc.get_ref().bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err(invalid(
                    cc.span(),
                    key("cache_control"),
                    "must be a valid header value".into(),
                ));
            }
        }
        dirs.push(StaticDir {
            prefix: entry.prefix.into_inner(),
            root: canonical,
            index: entry.index,
            cache_control: entry.cache_control.map(toml::Spanned::into_inner),
        });
    }
    Ok(dirs)
}

/// The error for key `TABLE.key` of `path`, at the line of a value's span.
fn spanned_error<'a>(
    text: &'a str,
    path: &'a Path,
    table: &'a str,
) -> impl Fn(std::ops::Range<usize>, &str, String) -> ConfigError + 'a {
    move |span, key, message| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(text, span.start),
        key: format!("{table}.{key}"),
        message,
    }
}

fn resolve_cache(file: file::FileCache, text: &str, path: &Path) -> Result<Cache, ConfigError> {
    let invalid = spanned_error(text, path, "cache");
    let size = |value: &Option<toml::Spanned<String>>, key: &str, default: u64| match value {
        None => Ok(default),
        Some(v) => v
            .get_ref()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| {
                invalid(
                    v.span(),
                    key,
                    format!(
                        "invalid size {:?}: write it like \"256MiB\" or \"8MB\"",
                        v.get_ref()
                    ),
                )
            }),
    };
    let max_bytes = size(&file.max_bytes, "max_bytes", defaults::CACHE_MAX_BYTES)?;
    let max_object = size(&file.max_object, "max_object", defaults::CACHE_MAX_OBJECT)?;
    if max_object > max_bytes {
        let span = file.max_object.as_ref().map_or(0..0, toml::Spanned::span);
        return Err(invalid(
            span,
            "max_object",
            "must not be more than max_bytes".into(),
        ));
    }
    let mut prefixes = Vec::with_capacity(file.prefixes.len());
    for p in file.prefixes {
        check_prefix(p.get_ref()).map_err(|m| invalid(p.span(), "prefixes", m))?;
        prefixes.push(p.into_inner());
    }
    Ok(Cache {
        prefixes,
        max_bytes,
        max_object,
    })
}

/// The rest of `[routing]`: stickiness, preview and rules.
fn resolve_routing(
    file: file::FileRouting,
    active: PoolName,
    pools: &BTreeMap<PoolName, Vec<Backend>>,
    text: &str,
    path: &Path,
) -> Result<Routing, ConfigError> {
    let invalid = |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(text, span.start),
        key: format!("routing.{key}"),
        message,
    };
    let token =
        |value: &Option<toml::Spanned<String>>, key: &str, default: &str, what: &str| match value {
            None => Ok(default.to_owned()),
            Some(v) if routing::is_token(v.get_ref()) => Ok(v.get_ref().clone()),
            Some(v) => Err(invalid(
                v.span(),
                key,
                format!("{:?} is not a valid {what} name", v.get_ref()),
            )),
        };
    let sticky = match &file.sticky {
        None => Sticky::Cookie,
        Some(s) => match s.get_ref().as_str() {
            "cookie" => Sticky::Cookie,
            "ip" => Sticky::Ip,
            "none" => Sticky::None,
            "header" => match &file.sticky_header {
                Some(_) => Sticky::Header(
                    token(&file.sticky_header, "sticky_header", "", "header")?.to_ascii_lowercase(),
                ),
                None => {
                    return Err(invalid(
                        s.span(),
                        "sticky",
                        "sticky = \"header\" needs sticky_header = \"NAME\" (e.g. \"X-User-Id\")"
                            .into(),
                    ))
                }
            },
            other => {
                return Err(invalid(
                    s.span(),
                    "sticky",
                    format!(
                        "unknown mode {other:?}: use \"cookie\", \"header\", \"ip\" or \"none\""
                    ),
                ))
            }
        },
    };
    let sticky_cookie = token(
        &file.sticky_cookie,
        "sticky_cookie",
        defaults::STICKY_COOKIE,
        "cookie",
    )?;
    let mut trusted = Vec::new();
    for net in file.trusted_proxies.iter().flatten() {
        TrustedProxies::parse([net.get_ref().as_str()])
            .map_err(|m| invalid(net.span(), "trusted_proxies", m))?;
        trusted.push(net.get_ref().as_str());
    }
    let trusted_proxies = TrustedProxies::parse(trusted).expect("each network was checked above");
    let preview = match &file.preview_header {
        None => None,
        Some(_) => Some(Preview {
            header: token(&file.preview_header, "preview_header", "", "header")?
                .to_ascii_lowercase(),
            token: file.preview_token.clone().filter(|t| !t.is_empty()),
            cookie: token(
                &file.preview_cookie,
                "preview_cookie",
                defaults::PREVIEW_COOKIE,
                "cookie",
            )?,
        }),
    };
    if preview.is_none() && (file.preview_token.is_some() || file.preview_cookie.is_some()) {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            line: find_key_line(text, "preview_"),
            key: "routing.preview_header".into(),
            message: "preview_token and preview_cookie need preview_header (e.g. \"X-Turnout-Pool\") to turn preview routing on".into(),
        });
    }
    let mut rules = Vec::with_capacity(file.rules.len());
    for (i, spec) in file.rules.iter().enumerate() {
        let key = format!("rules[{i}]");
        let rule = Rule::parse(spec.get_ref()).map_err(|m| invalid(spec.span(), &key, m))?;
        match pools.get(&rule.to) {
            None => {
                return Err(invalid(
                    spec.span(),
                    &key,
                    format!("no pool named {:?}", rule.to.as_str()),
                ))
            }
            Some(servers) if servers.is_empty() => {
                return Err(invalid(
                    spec.span(),
                    &key,
                    format!(
                        "pool {:?} has no servers to send the rule's requests to",
                        rule.to.as_str()
                    ),
                ))
            }
            Some(_) => rules.push(rule),
        }
    }
    let mut skew_prefixes = Vec::new();
    for p in file.skew_prefixes.unwrap_or_default() {
        check_prefix(p.get_ref()).map_err(|m| invalid(p.span(), "skew_prefixes", m))?;
        skew_prefixes.push(p.into_inner());
    }
    let skew_protection = file.skew_protection.map(|d| d.0).filter(|d| !d.is_zero());
    Ok(Routing {
        active,
        sticky,
        sticky_cookie,
        trusted_proxies,
        preview,
        rules,
        skew_protection,
        skew_prefixes,
    })
}

/// `[health]` (over the defaults) or `[pools.NAME.health]` (over `[health]`), validated.
fn resolve_check(
    file: file::FileHealthCheck,
    base: &HealthCheck,
    key: &str,
    text: &str,
    path: &Path,
) -> Result<HealthCheck, ConfigError> {
    let invalid =
        |span: std::ops::Range<usize>, field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            key: format!("{key}.{field}"),
            message,
        };
    let mut check = base.clone();
    if let Some(enabled) = file.enabled {
        check.enabled = enabled;
    }
    if let Some(p) = file.path {
        if !p.get_ref().starts_with('/') {
            return Err(invalid(
                p.span(),
                "path",
                format!("{:?} must start with '/'", p.get_ref()),
            ));
        }
        check.path = p.into_inner();
    }
    for (value, field, slot) in [
        (file.interval, "interval", &mut check.interval),
        (file.timeout, "timeout", &mut check.timeout),
    ] {
        if let Some(d) = value {
            if d.0.is_zero() {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    line: find_key_line(text, field),
                    key: format!("{key}.{field}"),
                    message: "must be more than zero".into(),
                });
            }
            *slot = d.0;
        }
    }
    for (value, field, slot) in [
        (
            file.healthy_threshold,
            "healthy_threshold",
            &mut check.healthy_threshold,
        ),
        (
            file.unhealthy_threshold,
            "unhealthy_threshold",
            &mut check.unhealthy_threshold,
        ),
    ] {
        if let Some(n) = value {
            if *n.get_ref() == 0 {
                return Err(invalid(n.span(), field, "must be at least 1".into()));
            }
            *slot = n.into_inner();
        }
    }
    if let Some(expect) = file.expect_status {
        check.expect_status = StatusRange::parse(expect.get_ref())
            .map_err(|m| invalid(expect.span(), "expect_status", m))?;
    }
    if let Some(host) = file.host {
        let h = host.get_ref().trim();
        if h.is_empty() || http::uri::Authority::try_from(h).is_err() || h.contains('@') {
            return Err(invalid(
                host.span(),
                "host",
                format!("{h:?} is not a host name (such as \"app.example.com\")"),
            ));
        }
        check.host = Some(h.to_owned());
    }
    if let Some(headers) = file.headers {
        let span = headers.span();
        let mut list = Vec::new();
        for (name, value) in headers.into_inner() {
            if http::HeaderName::try_from(name.as_str()).is_err() {
                return Err(invalid(
                    span.clone(),
                    "headers",
                    format!("{name:?} is not a header name"),
                ));
            }
            if name.eq_ignore_ascii_case("host") {
                return Err(invalid(
                    span.clone(),
                    "headers",
                    "set the Host header with `host`, not in `headers`".into(),
                ));
            }
            if http::HeaderValue::try_from(value.as_str()).is_err() {
                return Err(invalid(
                    span.clone(),
                    "headers",
                    format!("the value of {name:?} is not a valid header value"),
                ));
            }
            list.push((name, value));
        }
        check.headers = list;
    }
    if let Some(port) = file.port {
        if *port.get_ref() == 0 {
            return Err(invalid(
                port.span(),
                "port",
                "must be a port from 1 to 65535".into(),
            ));
        }
        check.port = Some(port.into_inner());
    }
    if let Some(gate) = file.gate {
        check.gate = Gate::parse(gate.get_ref()).map_err(|m| invalid(gate.span(), "gate", m))?;
    }
    Ok(check)
}

fn resolve_passive(
    file: file::FilePassive,
    text: &str,
    path: &Path,
) -> Result<Passive, ConfigError> {
    let d = Passive::default();
    let passive = Passive {
        enabled: file.enabled.unwrap_or(d.enabled),
        failures: file.failures.as_ref().map_or(d.failures, |f| *f.get_ref()),
        ejection: file.ejection.map_or(d.ejection, |x| x.0),
        max_ejection: file.max_ejection.map_or(d.max_ejection, |x| x.0),
    };
    let invalid = |field: &str, message: &str| ConfigError::Invalid {
        path: path.to_owned(),
        line: find_key_line(text, field),
        key: format!("health.passive.{field}"),
        message: message.to_owned(),
    };
    if passive.failures == 0 {
        return Err(invalid("failures", "must be at least 1"));
    }
    if passive.ejection.is_zero() {
        return Err(invalid("ejection", "must be more than zero"));
    }
    if passive.max_ejection < passive.ejection {
        return Err(invalid("max_ejection", "must be at least `ejection`"));
    }
    Ok(passive)
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
/// A bad value of `key` (`section.name`): the error, on the line where `name` is written.
pub(crate) fn invalid_key(
    text: &str,
    path: &Path,
    key: &str,
    message: impl Into<String>,
) -> ConfigError {
    let name = key.rsplit('.').next().unwrap_or(key);
    ConfigError::Invalid {
        path: path.to_owned(),
        line: find_key_line(text, name),
        key: key.to_owned(),
        message: message.into(),
    }
}

fn find_key_line(text: &str, key: &str) -> usize {
    text.find(key).map_or(1, |at| line_of(text, at))
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
