//! The pooled upstream clients. Each speaks plain HTTP/1.1 or, to an `https://` server, TLS
//! (hyper-rustls over hyper-util's connector); there is one per set of trusted roots: the
//! system's, and each pool's own CA.

use std::collections::HashMap;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};
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

/// A client for every pool: the pool's own when it names a CA, the system-roots one otherwise.
#[derive(Debug, Clone)]
pub(crate) struct ClientSet<B> {
    default: Client<Connector, B>,
    by_pool: HashMap<PoolName, Client<Connector, B>>,
}

impl<B> ClientSet<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(tls: &UpstreamTls, builder: &Builder, http: &HttpConnector) -> ClientSet<B> {
        ClientSet {
            default: builder.build(connector(tls.default_config(), http)),
            by_pool: tls
                .pool_configs()
                .map(|(pool, config)| (pool.clone(), builder.build(connector(config, http))))
                .collect(),
        }
    }

    #[inline]
    pub fn for_pool(&self, pool: &str) -> &Client<Connector, B> {
        if self.by_pool.is_empty() {
            return &self.default;
        }
        self.by_pool.get(pool).unwrap_or(&self.default)
    }
}
