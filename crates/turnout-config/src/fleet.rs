//! `[fleet]`: the fleet this instance belongs to, whose desired routing lives in etcd: the
//! fleet's and the instance's names, the etcd endpoints, the member lease, and etcd's TLS.
//! The etcd user and password are not in the file: `TURNOUT_ETCD_USER` and
//! `TURNOUT_ETCD_PASSWORD` in the environment (read by the binary).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::duration::HumanDuration;
use crate::error::ConfigError;
use crate::span::{invalid_key, spanned_error};

/// The shortest member lease: etcd rounds shorter ones up, and a keep-alive every third of it
/// must fit between two of etcd's elections.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// `[fleet]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The fleet's name: its keys live under `/turnout/fleets/NAME/`.
    pub name: String,
    /// This instance's name in the fleet; `None`: the host name (resolved at start).
    pub instance: Option<String>,
    /// The etcd endpoints, `http://` or `https://`, at least one.
    pub etcd: Vec<String>,
    /// The lease this instance's membership is held under: it is dropped from the fleet this
    /// long after it stops renewing.
    pub lease_ttl: Duration,
    /// How long a start waits to join before serving anyway (its health path failing until it
    /// has joined).
    pub join_timeout: Duration,
    /// The admin URL the fleet lists for this instance (default: `http://` + `[server] admin`).
    pub admin_url: Option<String>,
    /// `[fleet.tls]`: how etcd is reached over TLS.
    pub tls: Option<FleetTls>,
}

/// `[fleet.tls]`: a CA to trust for etcd's certificate, and a client certificate if etcd asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTls {
    /// The PEM CA file that signed etcd's certificate.
    pub ca: PathBuf,
    /// The client certificate and key (PEM), both or neither.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// `[fleet]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFleet {
    name: Spanned<String>,
    instance: Option<Spanned<String>>,
    etcd: Spanned<Vec<Spanned<String>>>,
    lease_ttl: Option<HumanDuration>,
    join_timeout: Option<HumanDuration>,
    admin_url: Option<Spanned<String>>,
    tls: Option<FileFleetTls>,
}

/// `[fleet.tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFleetTls {
    ca: PathBuf,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// A fleet or instance name: 1 to 64 of `A-Z a-z 0-9 . _ -` (they become etcd key segments).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn resolve_fleet(
    file: FileFleet,
    text: &str,
    path: &Path,
) -> Result<Fleet, ConfigError> {
    let invalid = spanned_error(text, path, "fleet");
    let name_rule = "1 to 64 of A-Z a-z 0-9 . _ -";
    if !valid_name(file.name.get_ref()) {
        return Err(invalid(
            file.name.span(),
            "name",
            format!("invalid name {:?}: {name_rule}", file.name.get_ref()),
        ));
    }
    if let Some(i) = file.instance.as_ref().filter(|i| !valid_name(i.get_ref())) {
        return Err(invalid(
            i.span(),
            "instance",
            format!("invalid name {:?}: {name_rule}", i.get_ref()),
        ));
    }
    if file.etcd.get_ref().is_empty() {
        return Err(invalid(
            file.etcd.span(),
            "etcd",
            "needs at least one endpoint, e.g. [\"http://10.0.0.5:2379\"]".into(),
        ));
    }
    let tls = file.tls.is_some();
    let mut etcd = Vec::new();
    for e in file.etcd.into_inner() {
        let url = e.get_ref();
        let scheme_ok = if tls {
            url.starts_with("https://")
        } else {
            url.starts_with("http://")
        };
        let host = url.split_once("://").map_or("", |(_, rest)| rest);
        if !scheme_ok || host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            let want = if tls {
                "https://HOST:PORT (with [fleet.tls])"
            } else {
                "http://HOST:PORT (https:// needs [fleet.tls])"
            };
            return Err(invalid(
                e.span(),
                "etcd",
                format!("invalid endpoint {url:?}: write it as {want}"),
            ));
        }
        etcd.push(e.into_inner());
    }
    let lease_ttl = file
        .lease_ttl
        .map_or(crate::defaults::FLEET_LEASE_TTL, |d| d.0);
    if lease_ttl < MIN_LEASE_TTL || lease_ttl.subsec_nanos() != 0 {
        return Err(invalid_key(
            text,
            path,
            "fleet.lease_ttl",
            "must be whole seconds, at least 2s (etcd leases count in seconds)",
        ));
    }
    let join_timeout = file
        .join_timeout
        .map_or(crate::defaults::FLEET_JOIN_TIMEOUT, |d| d.0);
    if let Some(u) = &file.admin_url {
        let ok = (u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://"))
            && u.get_ref().len() <= 256;
        if !ok {
            return Err(invalid(
                u.span(),
                "admin_url",
                format!(
                    "invalid URL {:?}: write it as http://HOST:PORT",
                    u.get_ref()
                ),
            ));
        }
    }
    let tls = match file.tls {
        None => None,
        Some(t) => {
            let identity = match (t.cert, t.key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => {
                    return Err(invalid_key(
                        text,
                        path,
                        "fleet.tls.cert",
                        "cert and key go together: set both, or neither",
                    ))
                }
            };
            Some(FleetTls { ca: t.ca, identity })
        }
    };
    Ok(Fleet {
        name: file.name.into_inner(),
        instance: file.instance.map(Spanned::into_inner),
        etcd,
        lease_ttl,
        join_timeout,
        admin_url: file.admin_url.map(Spanned::into_inner),
        tls,
    })
}
