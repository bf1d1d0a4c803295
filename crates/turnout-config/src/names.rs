//! The two names users write most: pool names and upstream server addresses. Their rules live
//! here once, for the config file, the state file and the admin API alike.

use std::fmt;
use std::sync::Arc;

/// A pool's name: 1 to 64 of `A-Z a-z 0-9 _ - .`. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolName(Arc<str>);

impl PoolName {
    /// A pool name: 1 to 64 letters, digits, `_`, `-` or `.`; the error says why not.
    pub fn parse(name: &str) -> Result<PoolName, String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(PoolName(name.into()))
        } else {
            Err(format!(
                "invalid pool name {name:?}: use 1 to 64 letters, digits, '_', '-' or '.'"
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for PoolName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An upstream server, `HOST:PORT` (an IPv4 address, a bracketed IPv6 address, or a DNS name
/// such as a compose service). A leading `http://` is accepted and dropped; a leading
/// `https://` is kept and means turnout speaks TLS to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerAddr(Arc<str>);

const HTTPS: &str = "https://";

impl ServerAddr {
    /// `HOST:PORT`, or `https://HOST:PORT` for a server spoken to over TLS (no path); the error
    /// says why not.
    pub fn parse(input: &str) -> Result<ServerAddr, String> {
        let bad = |why: &str| {
            Err(format!(
                "invalid server address {input:?}: {why} (expected HOST:PORT, such as \"127.0.0.1:3000\", or https://HOST:PORT)"
            ))
        };
        let tls = input.starts_with(HTTPS);
        let s = input
            .strip_prefix("http://")
            .or_else(|| input.strip_prefix(HTTPS))
            .unwrap_or(input);
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.contains('/') {
            return bad("a server is an address, without a path");
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return bad("the port is missing");
        };
        match port.parse::<u16>() {
            Ok(0) | Err(_) => return bad("the port must be a number from 1 to 65535"),
            Ok(_) => {}
        }
        let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
        if !host_ok {
            return bad("the host is not an IP address or a DNS name");
        }
        Ok(ServerAddr(if tls {
            format!("{HTTPS}{s}").into()
        } else {
            s.into()
        }))
    }

    /// The address as written (normalised): `HOST:PORT`, or `https://HOST:PORT`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `HOST:PORT`, as an HTTP authority.
    pub fn authority(&self) -> &str {
        self.0.strip_prefix(HTTPS).unwrap_or(&self.0)
    }

    /// Does turnout speak TLS to this server?
    pub fn is_tls(&self) -> bool {
        self.0.starts_with(HTTPS)
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
