//! How turnout reaches an upstream server: a connector per set of trusted roots (the system's,
//! and each pool's own CA) that speaks plain TCP or, to an `https://` server, TLS (hyper-rustls
//! over hyper-util's connector). The request path dials through them ([`super::conns`]); the
//! health checker builds hyper-util clients on them.

use std::collections::HashMap;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use turnout_config::PoolName;

use crate::tls::UpstreamTls;

pub(crate) type Connector = HttpsConnector<HttpConnector>;

fn connector(config: &std::sync::Arc<rustls::ClientConfig>, http: &HttpConnector) -> Connector {
    let mut http = http.clone();
    // The TLS layer, not the HTTP connector, decides whether an `https://` URI may go out.
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls::ClientConfig::clone(config))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// One `T` for every pool: the pool's own when it names a CA, the system-roots one otherwise.
#[derive(Debug, Clone)]
pub(crate) struct PerPool<T> {
    default: T,
    by_pool: HashMap<PoolName, T>,
}

impl PerPool<Connector> {
    pub fn connectors(tls: &UpstreamTls, http: &HttpConnector) -> PerPool<Connector> {
        PerPool {
            default: connector(tls.default_config(), http),
            by_pool: tls
                .pool_configs()
                .map(|(pool, config)| (pool.clone(), connector(config, http)))
                .collect(),
        }
    }
}

impl<T> PerPool<T> {
    #[inline]
    pub fn for_pool(&self, pool: &str) -> &T {
        if self.by_pool.is_empty() {
            return &self.default;
        }
        self.by_pool.get(pool).unwrap_or(&self.default)
    }

    /// A `U` made from each `T`, for the same pools.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> PerPool<U> {
        PerPool {
            default: f(&self.default),
            by_pool: self
                .by_pool
                .iter()
                .map(|(pool, t)| (pool.clone(), f(t)))
                .collect(),
        }
    }
}
