//! `[health]`, `[pools.NAME.health]` and `[health.passive]`: the active checks (path,
//! interval, thresholds, the gate, the statuses that pass) and the passive ejections.

use std::path::Path;
use std::time::Duration;

use crate::error::ConfigError;
use crate::span::{find_key_line, line_of};
use crate::{defaults, file};

/// Active health checks of one pool's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Checks run (`false`: every server counts as up).
    pub enabled: bool,
    /// The path asked with `GET`.
    pub path: String,
    /// Between two checks of one server.
    pub interval: Duration,
    /// A check without an answer by then fails.
    pub timeout: Duration,
    /// Passes in a row that make a down server up.
    pub healthy_threshold: u32,
    /// Failures in a row that make an up server down.
    pub unhealthy_threshold: u32,
    /// The statuses that pass.
    pub expect_status: StatusRange,
    /// The `Host` header of each check; the server's address when `None`.
    pub host: Option<String>,
    /// Further headers sent with each check (validated names and values).
    pub headers: Vec<(String, String)>,
    /// The port checks go to, when it is not the one the server serves on.
    pub port: Option<u16>,
    /// How many of a pool's servers must pass a fresh probe before a switch to it.
    pub gate: Gate,
    /// `Some(service)`: a gRPC health check (`grpc.health.v1.Health/Check` asking about
    /// `service`, "" for the server as a whole) instead of a `GET` of `path`.
    pub grpc_service: Option<String>,
}

/// The health gate of a switch: which share of the target pool's servers must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gate {
    /// At least one server (the default).
    #[default]
    One,
    /// Every server.
    All,
    /// At least this percentage of the servers (1-100), rounded up.
    Percent(u8),
}

impl Gate {
    /// `"one"` (or `"any"`), `"all"`, or a percentage such as `"50%"`; the error says which.
    pub fn parse(s: &str) -> Result<Gate, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "one" | "any" | "at_least_one" => Ok(Gate::One),
            "all" => Ok(Gate::All),
            _ => match t.strip_suffix('%').map(|n| n.trim().parse::<u8>()) {
                Some(Ok(n)) if (1..=100).contains(&n) => Ok(Gate::Percent(n)),
                _ => Err(format!(
                    "{s:?} is not a gate: \"one\", \"all\" or a percentage such as \"50%\""
                )),
            },
        }
    }

    /// How many of `servers` must pass (at least one whenever there are servers).
    pub fn needed(&self, servers: usize) -> usize {
        match self {
            Gate::One => servers.min(1),
            Gate::All => servers,
            Gate::Percent(p) => (servers * usize::from(*p))
                .div_ceil(100)
                .max(servers.min(1)),
        }
    }
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gate::One => f.write_str("one"),
            Gate::All => f.write_str("all"),
            Gate::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: true,
            path: defaults::CHECK_PATH.to_owned(),
            interval: defaults::CHECK_INTERVAL,
            timeout: defaults::CHECK_TIMEOUT,
            healthy_threshold: defaults::HEALTHY_THRESHOLD,
            unhealthy_threshold: defaults::UNHEALTHY_THRESHOLD,
            expect_status: StatusRange { min: 200, max: 299 },
            host: None,
            headers: Vec::new(),
            port: None,
            gate: Gate::One,
            grpc_service: None,
        }
    }
}

/// An inclusive range of HTTP status codes, written "2xx", "200" or "200-399".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// The lowest status that passes.
    pub min: u16,
    /// The highest status that passes.
    pub max: u16,
}

impl StatusRange {
    /// `"2xx"`, `"200"` or `"200-399"` (statuses 100 to 599).
    pub fn parse(s: &str) -> Result<StatusRange, String> {
        let bad = || format!("invalid status range {s:?}: write \"2xx\", \"200\" or \"200-399\"");
        let code = |c: &str| {
            c.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(bad)
        };
        let range = if let Some(class) = s.strip_suffix("xx") {
            let c = code(&format!("{class}00"))?;
            StatusRange {
                min: c,
                max: c + 99,
            }
        } else if let Some((lo, hi)) = s.split_once('-') {
            StatusRange {
                min: code(lo)?,
                max: code(hi)?,
            }
        } else {
            let c = code(s)?;
            StatusRange { min: c, max: c }
        };
        if range.min > range.max {
            return Err(bad());
        }
        Ok(range)
    }

    /// Does `status` pass?
    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// `[health.passive]`: ejecting servers that fail real requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passive {
    /// Ejections happen (`false`: failed requests never take a server out).
    pub enabled: bool,
    /// Consecutive failures that eject a server.
    pub failures: u32,
    /// The first ejection's length; each further one in a row doubles it, up to `max_ejection`.
    pub ejection: Duration,
    /// The longest an ejection lasts, however often it doubled.
    pub max_ejection: Duration,
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            enabled: true,
            failures: defaults::PASSIVE_FAILURES,
            ejection: defaults::EJECTION,
            max_ejection: defaults::MAX_EJECTION,
        }
    }
}

/// `[health]` (over the defaults) or `[pools.NAME.health]` (over `[health]`), validated.
pub(crate) fn resolve_check(
    file: file::FileHealthCheck,
    base: &HealthCheck,
    key: &str,
    text: &str,
    path: &Path,
) -> Result<HealthCheck, ConfigError> {
    let invalid =
        |span: std::ops::Range<usize>, field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            key: format!("{key}.{field}"),
            message,
        };
    let mut check = base.clone();
    // Keys only an HTTP check reads, with where they were set.
    let http_only = [
        (file.path.as_ref().map(|p| p.span()), "path"),
        (
            file.expect_status.as_ref().map(|e| e.span()),
            "expect_status",
        ),
    ];
    if let Some(enabled) = file.enabled {
        check.enabled = enabled;
    }
    if let Some(p) = file.path {
        if !p.get_ref().starts_with('/') {
            return Err(invalid(
                p.span(),
                "path",
                format!("{:?} must start with '/'", p.get_ref()),
            ));
        }
        check.path = p.into_inner();
    }
    for (value, field, slot) in [
        (file.interval, "interval", &mut check.interval),
        (file.timeout, "timeout", &mut check.timeout),
    ] {
        if let Some(d) = value {
            if d.0.is_zero() {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    line: find_key_line(text, field),
                    key: format!("{key}.{field}"),
                    message: "must be more than zero".into(),
                });
            }
            *slot = d.0;
        }
    }
    for (value, field, slot) in [
        (
            file.healthy_threshold,
            "healthy_threshold",
            &mut check.healthy_threshold,
        ),
        (
            file.unhealthy_threshold,
            "unhealthy_threshold",
            &mut check.unhealthy_threshold,
        ),
    ] {
        if let Some(n) = value {
            if *n.get_ref() == 0 {
                return Err(invalid(n.span(), field, "must be at least 1".into()));
            }
            *slot = n.into_inner();
        }
    }
    if let Some(expect) = file.expect_status {
        check.expect_status = StatusRange::parse(expect.get_ref())
            .map_err(|m| invalid(expect.span(), "expect_status", m))?;
    }
    if let Some(host) = file.host {
        let h = host.get_ref().trim();
        if h.is_empty() || http::uri::Authority::try_from(h).is_err() || h.contains('@') {
            return Err(invalid(
                host.span(),
                "host",
                format!("{h:?} is not a host name (such as \"app.example.com\")"),
            ));
        }
        check.host = Some(h.to_owned());
    }
    if let Some(headers) = file.headers {
        let span = headers.span();
        let mut list = Vec::new();
        for (name, value) in headers.into_inner() {
            if http::HeaderName::try_from(name.as_str()).is_err() {
                return Err(invalid(
                    span.clone(),
                    "headers",
                    format!("{name:?} is not a header name"),
                ));
            }
            if name.eq_ignore_ascii_case("host") {
                return Err(invalid(
                    span.clone(),
                    "headers",
                    "set the Host header with `host`, not in `headers`".into(),
                ));
            }
            if http::HeaderValue::try_from(value.as_str()).is_err() {
                return Err(invalid(
                    span.clone(),
                    "headers",
                    format!("the value of {name:?} is not a valid header value"),
                ));
            }
            list.push((name, value));
        }
        check.headers = list;
    }
    if let Some(port) = file.port {
        if *port.get_ref() == 0 {
            return Err(invalid(
                port.span(),
                "port",
                "must be a port from 1 to 65535".into(),
            ));
        }
        check.port = Some(port.into_inner());
    }
    if let Some(gate) = file.gate {
        check.gate = Gate::parse(gate.get_ref()).map_err(|m| invalid(gate.span(), "gate", m))?;
    }
    let grpc = match &file.kind {
        None => base.grpc_service.is_some(),
        Some(kind) => match kind.get_ref().as_str() {
            "http" => false,
            "grpc" if key == "health" => {
                return Err(invalid(
                    kind.span(),
                    "type",
                    "a gRPC check is set per pool, under [pools.NAME.health] of a pool with \
                     protocol = \"h2c\" or \"h2\""
                        .into(),
                ))
            }
            "grpc" => true,
            other => {
                return Err(invalid(
                    kind.span(),
                    "type",
                    format!("{other:?} is not a check type: \"http\" or \"grpc\""),
                ))
            }
        },
    };
    check.grpc_service = match (grpc, file.grpc_service) {
        (false, Some(service)) => {
            return Err(invalid(
                service.span(),
                "grpc_service",
                "is for a gRPC check: add type = \"grpc\"".into(),
            ))
        }
        (false, None) => None,
        (true, Some(service)) => {
            let name = service.get_ref();
            if name.len() > 200
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
            {
                return Err(invalid(
                    service.span(),
                    "grpc_service",
                    format!(
                        "{:?} is not a gRPC service name (such as \"shop.Orders\"; \"\" for the \
                         whole server): letters, digits, '.', '_', '-' and '/', at most 200",
                        name.chars().take(64).collect::<String>()
                    ),
                ));
            }
            Some(service.into_inner())
        }
        (true, None) => Some(base.grpc_service.clone().unwrap_or_default()),
    };
    if grpc {
        // What only an HTTP check reads: refused rather than silently unused.
        for (set, field) in http_only {
            if let Some(span) = set {
                return Err(invalid(
                    span,
                    field,
                    "is for an HTTP check; a gRPC check asks grpc.health.v1.Health/Check and \
                     passes on SERVING"
                        .into(),
                ));
            }
        }
    }
    Ok(check)
}

pub(crate) fn resolve_passive(
    file: file::FilePassive,
    text: &str,
    path: &Path,
) -> Result<Passive, ConfigError> {
    let d = Passive::default();
    let passive = Passive {
        enabled: file.enabled.unwrap_or(d.enabled),
        failures: file.failures.as_ref().map_or(d.failures, |f| *f.get_ref()),
        ejection: file.ejection.map_or(d.ejection, |x| x.0),
        max_ejection: file.max_ejection.map_or(d.max_ejection, |x| x.0),
    };
    let invalid = |field: &str, message: &str| ConfigError::Invalid {
        path: path.to_owned(),
        line: find_key_line(text, field),
        key: format!("health.passive.{field}"),
        message: message.to_owned(),
    };
    if passive.failures == 0 {
        return Err(invalid("failures", "must be at least 1"));
    }
    if passive.ejection.is_zero() {
        return Err(invalid("ejection", "must be more than zero"));
    }
    if passive.max_ejection < passive.ejection {
        return Err(invalid("max_ejection", "must be at least `ejection`"));
    }
    Ok(passive)
}
