//! `[tls]`: the HTTPS listener: its address (not one of the other listeners'), the
//! certificate and key files, and the handshake bounds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::span::{find_key_line, line_of};
use crate::{defaults, file};

/// `[tls]`: the HTTPS listener and its certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The HTTPS port.
    pub listen: SocketAddr,
    /// In file order; the first is served to clients that send no SNI name.
    pub certs: Vec<CertFiles>,
    /// Reload when a certificate or key file changes on disk.
    pub watch: bool,
    /// Refuse a certificate whose not-after date has passed.
    pub reject_expired: bool,
    /// A client must finish its handshake within this.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
}

/// `[[tls.certs]]`: a PEM chain (leaf first) and its PEM key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The PEM chain, leaf first.
    pub cert: PathBuf,
    /// The PEM key.
    pub key: PathBuf,
}

pub(crate) fn resolve_tls(
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
