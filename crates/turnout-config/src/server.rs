//! `[server]`: the listeners and the process lifecycle, validated into [`Server`] (each key's
//! error names the key and its line).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::defaults;
use crate::error::ConfigError;
use crate::file::FileServer;
use crate::span::{invalid_key, line_of};

/// `[server]`: the listeners and the process lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// This instance's name, as `turnout status` shows it; `None`: the host name.
    pub name: Option<String>,
    /// The proxy's port, the load balancer's.
    pub listen: SocketAddr,
    /// The admin API's port.
    pub admin: SocketAddr,
    /// The load balancer's health path.
    pub health_path: String,
    /// The admin API's bearer token (none: no authentication, fit only for loopback).
    pub admin_token: Option<String>,
    /// How long the health path answers 503 before the listener closes, at a shutdown.
    pub shutdown_delay: Duration,
    /// How long requests in flight get to finish, at a shutdown.
    pub shutdown_timeout: Duration,
    /// Client connections open at once.
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
    /// Request headers a request may carry.
    pub max_header_count: usize,
    /// Bytes a request's head may take.
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

impl FileServer {
    /// `[server]` validated. `state_file` is `[state] file`: an in-place upgrade needs it.
    pub(crate) fn resolve(
        self,
        state_file: Option<&Path>,
        text: &str,
        path: &Path,
    ) -> Result<Server, ConfigError> {
        let server = self;
        let invalid =
            |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of(text, span.start),
                key: key.to_owned(),
                message,
            };
        let health_path = server
            .health_path
            .unwrap_or_else(|| toml::Spanned::new(0..0, defaults::HEALTH_PATH.to_owned()));
        if !health_path.get_ref().starts_with('/') || health_path.get_ref().contains(['?', '#']) {
            return Err(invalid(
                health_path.span(),
                "server.health_path",
                format!(
                    "{:?} is not a path: it must start with '/' and hold no query",
                    health_path.get_ref()
                ),
            ));
        }
        let max_connections = server.max_connections.unwrap_or(defaults::MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(invalid_key(
                text,
                path,
                "server.max_connections",
                "must be at least 1",
            ));
        }
        let admin_token = match server.admin_token {
            Some(t) if t.trim().is_empty() => {
                return Err(invalid_key(
                    text,
                    path,
                    "server.admin_token",
                    "is empty: an empty token would mean no authentication; \
                              remove the key to run without one, or set a secret",
                ))
            }
            t => t,
        };
        let list = |values: Option<Vec<toml::Spanned<String>>>,
                    key: &str,
                    check: &dyn Fn(&str) -> Result<String, String>|
         -> Result<Option<Vec<String>>, ConfigError> {
            values
                .map(|vs| {
                    vs.into_iter()
                        .map(|v| check(v.get_ref()).map_err(|m| invalid(v.span(), key, m)))
                        .collect()
                })
                .transpose()
        };
        let upgrade_protocols = list(
            server.upgrade_protocols,
            "server.upgrade_protocols",
            &|p: &str| {
                let p = p.trim();
                if p.is_empty()
                    || !p
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
                {
                    Err(format!(
                        "{p:?} is not a protocol name (such as \"websocket\")"
                    ))
                } else {
                    Ok(p.to_ascii_lowercase())
                }
            },
        )?
        .unwrap_or_else(|| vec![defaults::UPGRADE_PROTOCOL.to_owned()]);
        let admin_hosts = list(server.admin_hosts, "server.admin_hosts", &|h: &str| {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.contains(['/', '@', ' ']) {
                Err(format!("{h:?} is not a host name"))
            } else {
                Ok(h)
            }
        })?
        .unwrap_or_default();
        let admin_origins = list(server.admin_origins, "server.admin_origins", &|o: &str| {
            let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
            if o.starts_with("http://") || o.starts_with("https://") {
                Ok(o)
            } else {
                Err(format!(
                    "{o:?} is not an origin such as \"https://ops.example.com\""
                ))
            }
        })?
        .unwrap_or_default();
        let workers = server.workers.unwrap_or_else(defaults::workers);
        if workers == 0 {
            return Err(invalid_key(
                text,
                path,
                "server.workers",
                "must be at least 1",
            ));
        }
        let max_header_bytes = server
            .max_header_bytes
            .unwrap_or(defaults::MAX_HEADER_BYTES);
        if max_header_bytes < 8192 {
            return Err(invalid_key(
                text,
                path,
                "server.max_header_bytes",
                format!("{max_header_bytes} is too small: at least 8192"),
            ));
        }
        let max_header_count = server
            .max_header_count
            .unwrap_or(defaults::MAX_HEADER_COUNT);
        if max_header_count == 0 {
            return Err(invalid_key(
                text,
                path,
                "server.max_header_count",
                "must be at least 1",
            ));
        }

        let max_request_body = match &server.max_request_body {
            None => None,
            Some(v) => match v.get_ref().parse::<bytesize::ByteSize>() {
                Ok(b) if b.as_u64() > 0 => Some(b.as_u64()),
                _ => {
                    return Err(invalid(
                        v.span(),
                        "server.max_request_body",
                        format!(
                            "invalid size {:?}: write it like \"10MiB\" or \"500KB\" (more than 0; remove the key for no limit)",
                            v.get_ref()
                        ),
                    ))
                }
            },
        };

        let upgrade_socket = match (&server.upgrade_socket, &state_file) {
            (Some(p), None) => return Err(invalid(
                p.span(),
                "server.upgrade_socket",
                "an in-place upgrade needs [state] file: the new process reads the routing from it"
                    .into(),
            )),
            (Some(p), Some(_)) => Some(p.get_ref().clone()),
            (None, Some(state)) => {
                let mut name = state.as_os_str().to_owned();
                name.push(".upgrade.sock");
                Some(PathBuf::from(name))
            }
            (None, None) => None,
        };
        // sun_path holds 108 bytes with its terminating NUL.
        if let Some(sock) = upgrade_socket
            .as_ref()
            .filter(|p| p.as_os_str().len() > 107)
        {
            let (span, how) = match &server.upgrade_socket {
                Some(p) => (p.span(), "shorten it"),
                None => (0..0, "set [server] upgrade_socket to a shorter path"),
            };
            return Err(invalid(
                span,
                "server.upgrade_socket",
                format!(
                    "the upgrade socket {} is longer than a Unix socket path may be (107 bytes): {how}",
                    sock.display()
                ),
            ));
        }

        let name = match &server.name {
            None => None,
            Some(n) => {
                let v = n.get_ref().trim();
                if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(invalid(
                        n.span(),
                        "server.name",
                        format!(
                            "{:?} is not a name: 1 to 64 visible ASCII characters, no spaces",
                            n.get_ref()
                        ),
                    ));
                }
                Some(v.to_owned())
            }
        };
        let mut upgrade_binaries = Vec::new();
        for b in server.upgrade_binaries.iter().flatten() {
            if !b.get_ref().is_absolute() {
                return Err(invalid(
                    b.span(),
                    "server.upgrade_binaries",
                    format!(
                        "{} is not an absolute path: list each binary an upgrade may start by its full path",
                        b.get_ref().display()
                    ),
                ));
            }
            if upgrade_socket.is_none() {
                return Err(invalid(
                    b.span(),
                    "server.upgrade_binaries",
                    "an in-place upgrade needs [state] file: the new process reads the routing from it"
                        .into(),
                ));
            }
            upgrade_binaries.push(b.get_ref().clone());
        }

        let listen = server.listen.map_or_else(defaults::listen, |a| a.0);
        let admin = server.admin.map_or_else(defaults::admin, |a| a.0);
        let redirect_https = server.redirect_https.unwrap_or(false);
        Ok(Server {
            listen,
            admin,
            health_path: health_path.into_inner(),
            admin_token,
            shutdown_delay: server
                .shutdown_delay
                .map_or(defaults::SHUTDOWN_DELAY, |d| d.0),
            shutdown_timeout: server
                .shutdown_timeout
                .map_or(defaults::SHUTDOWN_TIMEOUT, |d| d.0),
            max_connections,
            workers,
            health_reflects_pool: server
                .health_reflects_pool
                .unwrap_or(defaults::HEALTH_REFLECTS_POOL),
            client_header_timeout: server
                .client_header_timeout
                .map_or(defaults::CLIENT_HEADER_TIMEOUT, |d| d.0),
            client_idle_timeout: server
                .client_idle_timeout
                .map_or(defaults::CLIENT_IDLE_TIMEOUT, |d| d.0),
            max_header_count,
            max_header_bytes,
            redirect_https,
            client_send_timeout: server
                .client_send_timeout
                .map_or(defaults::CLIENT_SEND_TIMEOUT, |d| d.0),
            client_body_timeout: server
                .client_body_timeout
                .map_or(defaults::CLIENT_BODY_TIMEOUT, |d| d.0),
            upgrade_protocols,
            admin_hosts,
            admin_origins,
            max_request_body,
            request_id: server.request_id.unwrap_or(true),
            upgrade_socket,
            upgrade_binaries,
            name,
        })
    }
}
