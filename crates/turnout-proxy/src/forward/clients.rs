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

/// The same for HTTP/2 to the app (`protocol = "h2c"` or `"h2"`): TLS offers ALPN `h2` only.
fn h2_connector(config: &std::sync::Arc<rustls::ClientConfig>, http: &HttpConnector) -> Connector {
    let mut http = http.clone();
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls::ClientConfig::clone(config))
        .https_or_http()
        .enable_http2()
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
        Self::made_with(tls, http, connector)
    }

    /// Connectors for HTTP/2 servers: ALPN `h2` over TLS.
    pub fn h2_connectors(tls: &UpstreamTls, http: &HttpConnector) -> PerPool<Connector> {
        Self::made_with(tls, http, h2_connector)
    }

    fn made_with(
        tls: &UpstreamTls,
        http: &HttpConnector,
        make: fn(&std::sync::Arc<rustls::ClientConfig>, &HttpConnector) -> Connector,
    ) -> PerPool<Connector> {
        PerPool {
            default: make(tls.default_config(), http),
            by_pool: tls
                .pool_configs()
                .map(|(pool, config)| (pool.clone(), make(config, http)))
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

    /// Each pool's `T` beside its `U` from `other` (made for the same pools), as one `V`.
    pub fn zip<U, V>(self, mut other: PerPool<U>, mut f: impl FnMut(T, U) -> V) -> PerPool<V> {
        PerPool {
            default: f(self.default, other.default),
            by_pool: self
                .by_pool
                .into_iter()
                .filter_map(|(pool, t)| {
                    let u = other.by_pool.remove(&pool)?;
                    Some((pool, f(t, u)))
                })
                .collect(),
        }
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
