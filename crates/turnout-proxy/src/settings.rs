//! The data plane's settings, taken from the validated config once at start.

use turnout_config::Config;

use crate::tls::{TlsError, UpstreamTls};

/// The data plane's settings: the config's sections it reads, held whole (not re-listed field
/// by field), and what is derived from them at start.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// `[server]`, without the admin token (the data plane never needs it).
    pub server: turnout_config::Server,
    /// `[upstream]`.
    pub upstream: turnout_config::Upstream,
    /// `[[static]]`.
    pub statics: Vec<turnout_config::StaticDir>,
    /// `[cache]`.
    pub cache: turnout_config::Cache,
    /// `[errors] dir`'s pages.
    pub error_pages: turnout_config::ErrorPages,
    /// The plain listener answers 308 to `https://` on this port (but for the health path).
    pub redirect_https_port: Option<u16>,
    /// How to trust `https://` upstreams (`[pools.NAME.tls] ca`, read at start).
    pub upstream_tls: UpstreamTls,
    /// `[limits]`.
    pub limits: turnout_config::Limits,
    /// `[[auth]]`.
    pub auth: Vec<turnout_config::AuthRule>,
    /// `[compression]`.
    pub compression: Option<turnout_config::Compression>,
}

impl ProxySettings {
    /// The settings of `config`; reads the CA files of `[pools.NAME.tls]` (the error names one
    /// that cannot be used) and the system's roots.
    pub fn from_config(config: &Config) -> Result<ProxySettings, TlsError> {
        let mut server = config.server.clone();
        server.admin_token = None;
        Ok(ProxySettings {
            server,
            upstream: config.upstream.clone(),
            statics: config.statics.clone(),
            cache: config.cache.clone(),
            error_pages: config.error_pages.clone(),
            redirect_https_port: config
                .tls
                .as_ref()
                .filter(|_| config.server.redirect_https)
                .map(|t| t.listen.port()),
            upstream_tls: UpstreamTls::load(&config.pool_ca)?,
            limits: config.limits.clone(),
            auth: config.auth.clone(),
            compression: config.compression.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_plane_holds_the_sections_but_never_the_admin_token() {
        let text = "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nadmin_token = \"s3cret-token-value\"\n\n[upstream]\nconnect_timeout = \"7s\"\n\n[pools.blue]\nservers = [\"127.0.0.1:9\"]\n\n[routing]\nactive = \"blue\"\n";
        let config = Config::parse(text, std::path::Path::new("<test>")).expect("valid");
        let settings = ProxySettings::from_config(&config).expect("no CA files");
        assert_eq!(
            settings.upstream.connect_timeout,
            std::time::Duration::from_secs(7)
        );
        assert_eq!(settings.server.listen, config.server.listen);
        assert_eq!(settings.server.admin_token, None);
        assert!(!format!("{settings:?}").contains("s3cret-token-value"));
    }
}
