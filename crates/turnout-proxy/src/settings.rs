//! The data plane's settings, taken from the validated config once at start.

use std::time::Duration;

use turnout_config::Config;

use crate::tls::{TlsError, UpstreamTls};

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
