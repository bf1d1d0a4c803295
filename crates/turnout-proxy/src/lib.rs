//! turnout's data plane: the port the load balancer talks to.
//!
//! # Layout
//! One request meets these in order; each is a module of its own.
//! - [`listener`]: the accept loop (bounded, never dies on an accept error) and the drain at
//!   shutdown.
//! - [`tls`]: the HTTPS listener's handshake (ClientHello first, then a slot) and certificates
//!   (SNI, reload); the trust settings of `https://` upstreams.
//! - `serve`: one client connection: hyper over the socket, its deadlines (`serve::deadlines`),
//!   the drain's close, cut-off logs.
//! - `request`: one request's path, phase by phase, top to bottom: start here.
//! - `local`: what turnout answers itself: the health path, the https redirect, `[[static]]`
//!   files (`local::files`), the pages of its own answers (`local::pages`: maintenance,
//!   502/503/504, JSON for clients that ask).
//! - `route`: one snapshot load, one decision: the pool, the cookies to set, and what holds
//!   the request first (maintenance mode, a pause); version-skew protection's pool and fallback.
//! - [`cache`]: the in-memory cache (moka, bounded in bytes) and its lookup: a hit, or one
//!   coalesced fetch per key.
//! - `forward`: the one forwarder (and its one retry rule) every path sends through, the upstream
//!   connections kept alive per worker thread (`forward::conns`, dialled through
//!   `forward::clients`), the upstream's answer turned into the client's response, upgrades
//!   tunneled (`forward::upgrade`).
//! - `access`: the access line, begun with the request and written once.
//!
//! Beside the request path: [`checker`] (active health checks), `headers` (hop-by-hop,
//! `X-Forwarded-*`, Host), `body` (the response body, which holds the request's in-flight guard
//! to its last byte), `error` (what can fail, and the status each failure answers).

mod access;
mod body;
pub mod cache;
pub mod checker;
mod error;
mod forward;
pub mod headers;
pub mod listener;
mod local;
mod request;
mod route;
mod serve;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use turnout_config::Config;
use turnout_core::Router;

pub use body::{ProxyBody, UpstreamBody};
pub use checker::{spawn_health_checks, HttpProber};
pub use error::{DisplayChain, ProxyError};
pub use listener::{Drained, TlsListener};
pub use tls::{CertStore, TlsError, UpstreamTls};

/// The data plane's settings, taken from the validated config.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub health_path: String,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_server: usize,
    pub health_reflects_pool: bool,
    pub client_header_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub client_send_timeout: Duration,
    pub client_body_timeout: Duration,
    /// An upstream response body that stalls this long after its head is given up on.
    pub upstream_body_timeout: Duration,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub statics: Vec<turnout_config::StaticDir>,
    pub cache: turnout_config::Cache,
    /// The plain listener answers 308 to `https://` on this port (but for the health path).
    pub redirect_https_port: Option<u16>,
    /// How to trust `https://` upstreams.
    pub upstream_tls: UpstreamTls,
    /// The protocols a client may upgrade to (lower case); `websocket` unless configured.
    pub upgrades: Vec<String>,
    /// Request bodies longer than this get 413.
    pub max_request_body: Option<u64>,
    /// Every request gets an `X-Request-Id`.
    pub request_id: bool,
    /// A request whose pool has no server able to take it waits this long for one.
    pub hold_when_unavailable: Option<Duration>,
    /// `[errors] dir`'s pages.
    pub error_pages: turnout_config::ErrorPages,
}

impl ProxySettings {
    /// The settings of `config`; reads the CA files of `[pools.NAME.tls]` (the error names one
    /// that cannot be used) and the system's roots.
    pub fn from_config(config: &Config) -> Result<ProxySettings, TlsError> {
        Ok(ProxySettings {
            health_path: config.server.health_path.clone(),
            max_connections: config.server.max_connections,
            shutdown_timeout: config.server.shutdown_timeout,
            connect_timeout: config.upstream.connect_timeout,
            response_timeout: config.upstream.response_timeout,
            idle_timeout: config.upstream.idle_timeout,
            max_idle_per_server: config.upstream.max_idle_per_server,
            health_reflects_pool: config.server.health_reflects_pool,
            client_header_timeout: config.server.client_header_timeout,
            client_idle_timeout: config.server.client_idle_timeout,
            client_send_timeout: config.server.client_send_timeout,
            client_body_timeout: config.server.client_body_timeout,
            upstream_body_timeout: config.upstream.body_timeout,
            max_header_count: config.server.max_header_count,
            max_header_bytes: config.server.max_header_bytes,
            statics: config.statics.clone(),
            cache: config.cache.clone(),
            redirect_https_port: config
                .tls
                .as_ref()
                .filter(|_| config.server.redirect_https)
                .map(|t| t.listen.port()),
            upstream_tls: UpstreamTls::load(&config.pool_ca)?,
            upgrades: config.server.upgrade_protocols.clone(),
            max_request_body: config.server.max_request_body,
            request_id: config.server.request_id,
            hold_when_unavailable: config.upstream.hold_when_unavailable,
            error_pages: config.error_pages.clone(),
        })
    }
}

/// The most an upstream connection buffers (see `DataPlane::new`).
const UPSTREAM_MAX_BUF: usize = 64 * 1024;

/// The data plane. Cheap to clone; every clone is the same proxy.
#[derive(Debug, Clone)]
pub struct DataPlane {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    router: Router,
    /// The fixed part of the routing state (it never changes after start-up).
    env: Arc<turnout_core::Env>,
    settings: ProxySettings,
    /// Set once shutdown begins: the health path answers 503 from then on.
    draining: AtomicBool,
    /// Set when another turnout process took over the listening sockets (an in-place
    /// upgrade): the drain then leaves a quiet keep-alive connection open until its next
    /// request (answered with `Connection: close`) or its own idle timeout.
    handed_over: AtomicBool,
    /// Sends requests upstream; owns the upstream connections and the tunnels.
    forwarder: forward::Forwarder,
    /// Upstream assets and static files, in memory.
    cache: Arc<cache::Cache>,
    files: local::files::StaticFiles,
    /// The pages of turnout's own answers (`[errors] dir`, maintenance).
    pages: local::pages::Pages,
}

impl Shared {
    /// A shutdown's drain or a hand-over is under way: HTTP/1 responses say `Connection: close`.
    #[inline]
    pub(crate) fn closing(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || self.handed_over.load(Ordering::Relaxed)
    }
}

impl DataPlane {
    pub fn new(router: Router, settings: ProxySettings) -> DataPlane {
        // hyper grows a connection's read buffer up to ~400 KiB while a body streams, and a
        // client that stops reading leaves it (and a frame as large) held: 64 KiB bounds what
        // one slow reader costs (about 240 KiB in all, against ~1 MiB before), and still takes a
        // response head eight times nginx's default proxy_buffer_size. (32 KiB saved another
        // 50 KiB per slow reader, but split every 60 kB cached asset in two reads, and the
        // copies that joined them raised the cache's peak memory.)
        let upstreams = forward::conns::Upstreams::new(
            &settings.upstream_tls,
            settings.connect_timeout,
            settings.idle_timeout,
            settings.max_idle_per_server,
            UPSTREAM_MAX_BUF,
        );
        let metrics = &router.snapshot().env.metrics;
        let cache = Arc::new(
            cache::Cache::new(&settings.cache)
                .with_metrics(metrics.cache_hits.clone(), metrics.cache_misses.clone()),
        );
        let files = local::files::StaticFiles::new(&settings.statics, Arc::clone(&cache));
        let env = Arc::clone(&router.snapshot().env);
        DataPlane {
            shared: Arc::new(Shared {
                pages: local::pages::Pages::new(&settings.error_pages),
                cache,
                files,
                forwarder: forward::Forwarder::new(
                    upstreams,
                    Arc::clone(&env),
                    settings.response_timeout,
                    settings.hold_when_unavailable,
                    settings.upstream_body_timeout,
                ),
                env,
                router,
                settings,
                draining: AtomicBool::new(false),
                handed_over: AtomicBool::new(false),
            }),
        }
    }

    /// The cache, for the admin API (given to `Control` at its construction).
    pub fn cache(&self) -> Arc<dyn turnout_core::CacheAdmin> {
        Arc::clone(&self.shared.cache) as Arc<dyn turnout_core::CacheAdmin>
    }

    /// Starts the shutdown: the health path answers 503 so the load balancer stops sending, and
    /// HTTP/1 responses carry `Connection: close` so keep-alive clients move elsewhere.
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Another process took over the listening sockets (call before the serve's shutdown
    /// completes): the health path keeps answering (the load balancer still reaches this
    /// instance, through the new process), and the drain closes a quiet HTTP/1 keep-alive
    /// connection only after a response saying `Connection: close`, or at its idle timeout,
    /// never while a client may be sending on it; HTTP/2 ones get GOAWAY at once.
    pub fn handed_over(&self) {
        self.shared.handed_over.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod fuzz;
