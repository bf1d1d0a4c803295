//! `[limits]` and `[[limits.rate]]`: per-client request rates (with a burst), requests in flight
//! and connections per client, the allow-list nothing limits, and the dry-run that only counts.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::routing::TrustedProxies;
use crate::span::spanned_error;
use crate::PoolName;

/// The longest header name a rate may be keyed by.
const MAX_HEADER_NAME: usize = 64;

/// `[limits]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Count and log who would have been limited, but refuse nobody.
    pub dry_run: bool,
    /// Clients (the address `trusted_proxies` resolves to) no limit applies to.
    pub allow: TrustedProxies,
    /// Open connections one peer address may have; more are closed at accept.
    pub connections_per_client: Option<u32>,
    /// Requests one client may have in flight (to its response head); more answer 429.
    pub requests_per_client: Option<u32>,
    /// With `[fleet]`: each rate is divided by the live member count (see the README).
    pub divide_by_fleet: bool,
    /// `[[limits.rate]]`, in file order: a request must pass every one that applies to it.
    pub rates: Vec<RateLimit>,
}

/// One `[[limits.rate]]`: a rate and a burst, keyed by client or by a header, for the requests
/// in its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Its name in metrics and logs (the key class).
    pub name: String,
    /// What a client is.
    pub key: LimitKey,
    /// Requests per `per`.
    pub rate: NonZeroU32,
    /// The period `rate` counts over.
    pub per: Duration,
    /// Requests allowed at once above the rate.
    pub burst: NonZeroU32,
    /// Only requests whose path starts with this.
    pub path_prefix: Option<String>,
    /// Only requests routed to this pool (a canary's own, tighter budget).
    pub pool: Option<PoolName>,
}

/// What a rate counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's address (`trusted_proxies` applied).
    Client,
    /// A request header's value (an API key); requests without it are not counted by this rate.
    Header(http::HeaderName),
}

impl Limits {
    /// Nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.connections_per_client.is_none()
            && self.requests_per_client.is_none()
            && self.rates.is_empty()
    }
}

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    dry_run: Option<bool>,
    allow: Option<Vec<Spanned<String>>>,
    connections_per_client: Option<Spanned<u32>>,
    requests_per_client: Option<Spanned<u32>>,
    divide_by_fleet: Option<Spanned<bool>>,
    #[serde(default)]
    rate: Vec<FileRate>,
}

/// `[[limits.rate]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRate {
    name: Spanned<String>,
    /// "client" (default) or "header:NAME".
    by: Option<Spanned<String>>,
    /// "N/s", "N/m" or "N/h".
    rate: Spanned<String>,
    burst: Option<Spanned<u32>>,
    path_prefix: Option<Spanned<String>>,
    pool: Option<Spanned<String>>,
}

pub(crate) fn resolve_limits(
    file: FileLimits,
    pools: &BTreeMap<PoolName, Vec<crate::Backend>>,
    fleet: bool,
    text: &str,
    path: &Path,
) -> Result<Limits, ConfigError> {
    let invalid = spanned_error(text, path, "limits");
    let mut limits = Limits {
        dry_run: file.dry_run.unwrap_or(false),
        ..Limits::default()
    };
    if let Some(ips) = file.allow {
        let span = ips.first().map_or(0..0, Spanned::span);
        limits.allow = TrustedProxies::parse(ips.iter().map(|s| s.get_ref().as_str()))
            .map_err(|m| invalid(span, "allow", m))?;
    }
    for (key, value, slot) in [
        (
            "connections_per_client",
            file.connections_per_client,
            &mut limits.connections_per_client,
        ),
        (
            "requests_per_client",
            file.requests_per_client,
            &mut limits.requests_per_client,
        ),
    ] {
        if let Some(v) = value {
            if *v.get_ref() == 0 {
                return Err(invalid(
                    v.span(),
                    key,
                    "must be at least 1 (leave it out for no limit)".into(),
                ));
            }
            *slot = Some(*v.get_ref());
        }
    }
    if let Some(d) = file.divide_by_fleet {
        if *d.get_ref() && !fleet {
            return Err(invalid(
                d.span(),
                "divide_by_fleet",
                "needs a [fleet] (it divides each rate by the fleet's live members)".into(),
            ));
        }
        limits.divide_by_fleet = *d.get_ref();
    }
    let mut names = std::collections::BTreeSet::new();
    for r in file.rate {
        let invalid = spanned_error(text, path, "limits.rate");
        crate::scope::label_name(&r.name, &mut names, "rates", &invalid)?;
        let key = match r.by.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("client") => LimitKey::Client,
            Some(by) => {
                let header = by.strip_prefix("header:").map(str::trim);
                match header.and_then(|h| {
                    (h.len() <= MAX_HEADER_NAME)
                        .then(|| http::HeaderName::from_bytes(h.as_bytes()).ok())
                        .flatten()
                }) {
                    Some(h) => LimitKey::Header(h),
                    None => {
                        return Err(invalid(
                            r.by.as_ref().map_or(0..0, Spanned::span),
                            "by",
                            format!("{by:?}: write \"client\" or \"header:NAME\", e.g. \"header:X-Api-Key\""),
                        ))
                    }
                }
            }
        };
        let (rate, per) = parse_rate(r.rate.get_ref()).ok_or_else(|| {
            invalid(
                r.rate.span(),
                "rate",
                format!(
                    "{:?}: write requests per second, minute or hour, e.g. \"10/s\" or \"300/m\"",
                    r.rate.get_ref()
                ),
            )
        })?;
        let burst = match r.burst {
            None => rate,
            Some(b) => NonZeroU32::new(*b.get_ref())
                .ok_or_else(|| invalid(b.span(), "burst", "must be at least 1".into()))?,
        };
        let path_prefix = crate::scope::path_prefix(r.path_prefix, &invalid)?;
        let pool = crate::scope::pool(r.pool, pools, &invalid)?;
        limits.rates.push(RateLimit {
            name: r.name.into_inner(),
            key,
            rate,
            per,
            burst,
            path_prefix,
            pool,
        });
    }
    Ok(limits)
}

/// "10/s", "300/m", "1000/h": a count and its period.
fn parse_rate(s: &str) -> Option<(NonZeroU32, Duration)> {
    let (n, unit) = s.trim().split_once('/')?;
    let n = NonZeroU32::new(n.trim().parse().ok()?)?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return None,
    };
    Some((n, per))
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_read_as_count_and_period() {
        assert_eq!(
            parse_rate("10/s").map(|(n, p)| (n.get(), p.as_secs())),
            Some((10, 1))
        );
        assert_eq!(
            parse_rate(" 300 / m ").map(|(n, p)| (n.get(), p.as_secs())),
            Some((300, 60))
        );
        for bad in [
            "",
            "10",
            "0/s",
            "-1/s",
            "10/d",
            "x/s",
            "10/s/s",
            "99999999999/s",
        ] {
            assert_eq!(parse_rate(bad), None, "{bad:?}");
        }
    }
}
