//! The routing decision: which pool a new request goes to, from one snapshot. In order: a
//! preview header or cookie, the A/B rules (first match), a fleet switch's mark, the client's
//! stickiness, and last the weighted draw. Pure and allocation-free: it reads the request's
//! headers and returns borrowed parts of the snapshot.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};
use turnout_config::{Preview, Rule, RuleMatch, RuleOn, Sticky, TrustedProxies};

use crate::error::CoreError;
use crate::pool::Pool;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// One pool of the split, with the running total of weights up to and including it.
#[derive(Debug, Clone)]
pub(crate) struct Share {
    pub pool: Arc<Pool>,
    pub upto: u64,
}

/// A rule with its header name parsed and its pool resolved.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    on: On,
    matcher: RuleMatch,
    pub(crate) pool: Arc<Pool>,
}

#[derive(Debug, Clone)]
enum On {
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

impl CompiledRule {
    pub fn new(rule: &Rule, pool: Arc<Pool>) -> Result<CompiledRule, CoreError> {
        let on = match &rule.on {
            RuleOn::Header(h) => On::Header(
                HeaderName::try_from(h.as_str())
                    .map_err(|_| CoreError::Invalid(format!("invalid header name {h:?}")))?,
            ),
            RuleOn::Cookie(c) => On::Cookie(c.clone()),
            RuleOn::Query(q) => On::Query(q.clone()),
        };
        Ok(CompiledRule {
            on,
            matcher: rule.matcher.clone(),
            pool,
        })
    }

    pub(crate) fn matches(&self, req: &RequestInfo<'_>) -> bool {
        match &self.on {
            On::Header(h) => req
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| self.matcher.matches(v)),
            On::Cookie(c) => cookie_value(req.headers, c).is_some_and(|v| self.matcher.matches(v)),
            On::Query(q) => req.query.is_some_and(|qs| {
                qs.split('&').any(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    k == q && decoded_matches(&self.matcher, v)
                })
            }),
        }
    }
}

/// Compares a percent-encoded query value with `matcher`, decoding as it goes (no buffer).
fn decoded_matches(matcher: &RuleMatch, raw: &str) -> bool {
    let mut decoded = percent_encoding::percent_decode_str(raw);
    match matcher {
        RuleMatch::Equals(v) => decoded.eq(v.bytes()),
        RuleMatch::Prefix(p) => p.bytes().all(|b| decoded.next() == Some(b)),
    }
}

/// What the decision reads from a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The request's headers (its cookies among them).
    pub headers: &'a HeaderMap,
    /// The query string.
    pub query: Option<&'a str>,
    /// The connection's peer (the load balancer, behind one).
    pub peer: IpAddr,
}

/// Why a request went where it went (for the access log and the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A preview header or cookie asked for the pool.
    Preview,
    /// The rule at this 0-based position.
    Rule(usize),
    /// A fleet switch's mark sent it to the prepared pool.
    Mark,
    /// Its cookie, header or address kept it on its pool.
    Sticky,
    /// The weighted draw.
    Split,
    /// Version-skew protection: an asset of a page loaded from this pool's version.
    Skew,
}

impl Reason {
    /// The reason as the access log and the metrics name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Preview => "preview",
            Reason::Rule(_) => "rule",
            Reason::Mark => "mark",
            Reason::Sticky => "sticky",
            Reason::Split => "split",
            Reason::Skew => "skew",
        }
    }
}

/// Where a request goes, and the cookies its response carries.
#[derive(Debug)]
pub struct Decision<'s> {
    /// The pool chosen.
    pub pool: &'s Arc<Pool>,
    /// Why.
    pub reason: Reason,
    /// `Set-Cookie` values for the response: a sticky or preview cookie, a fleet mark.
    pub cookies: [Option<&'s HeaderValue>; 2],
}

/// A preview request that cannot be honoured: answered 403 (wrong token) or 400 (no such pool)
/// rather than silently routed somewhere the tester did not ask for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// A preview header without the configured token.
    #[error("preview refused: the preview header must be POOL:TOKEN with the configured token")]
    PreviewToken,
    /// A preview of a pool that does not exist.
    #[error("preview refused: no pool named {0:?}")]
    PreviewPool(String),
}

/// The fixed part of `[routing]`, in the form the request path reads.
#[derive(Debug, Default)]
pub struct RouteSettings {
    /// What keeps a client on its pool.
    pub sticky: StickyBy,
    /// The sticky cookie's name.
    pub sticky_cookie: String,
    /// The proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Preview routing, when configured.
    pub preview: Option<PreviewSettings>,
    /// Version-skew protection, when on.
    pub skew: Option<SkewSettings>,
}

/// Version-skew protection: a page load's response names its pool's version in
/// [`VERSION_COOKIE`]; an asset request carrying it goes to that version while it can serve.
#[derive(Debug)]
pub struct SkewSettings {
    /// How long the cookie lives.
    pub max_age: std::time::Duration,
    /// The asset paths it covers.
    pub prefixes: Vec<String>,
}

impl SkewSettings {
    /// Does version-skew protection cover `path` (on segment boundaries)?
    #[inline]
    pub fn covers(&self, path: &str) -> bool {
        crate::path::under_any(path, &self.prefixes)
    }
}

/// The cookie that names the version (`pool.generation`) a page was loaded from.
pub const VERSION_COOKIE: &str = "turnout-version";

/// `Sticky` with its header name parsed once.
#[derive(Debug, Default)]
pub enum StickyBy {
    /// A cookie turnout sets.
    #[default]
    Cookie,
    /// A request header the client sends (an id).
    Header(http::HeaderName),
    /// The client's IP.
    Ip,
    /// No stickiness: each new request is drawn.
    None,
}

/// Preview routing: a header (or its cookie) names the pool to test.
#[derive(Debug)]
pub struct PreviewSettings {
    /// The header that asks for a pool.
    pub header: http::HeaderName,
    /// The token a preview must carry, if any.
    pub token: Option<String>,
    /// The cookie a preview sets, so the rest of the page follows.
    pub cookie: String,
}

impl RouteSettings {
    /// `[routing]`'s fixed part, parsed once.
    pub fn from_config(routing: &turnout_config::Routing) -> RouteSettings {
        let header = |h: &str| {
            http::HeaderName::try_from(h).expect("a validated token is a valid header name")
        };
        RouteSettings {
            sticky: match &routing.sticky {
                Sticky::Cookie => StickyBy::Cookie,
                Sticky::Header(h) => StickyBy::Header(header(h)),
                Sticky::Ip => StickyBy::Ip,
                Sticky::None => StickyBy::None,
            },
            sticky_cookie: routing.sticky_cookie.clone(),
            trusted_proxies: routing.trusted_proxies.clone(),
            preview: routing.preview.as_ref().map(|p: &Preview| PreviewSettings {
                header: header(&p.header),
                token: p.token.clone(),
                cookie: p.cookie.clone(),
            }),
            skew: None,
        }
    }
}

impl RouteSettings {
    /// The client's address: the peer, or what a trusted proxy says in `X-Forwarded-For`.
    #[inline]
    pub fn client_ip(&self, req: &RequestInfo<'_>) -> IpAddr {
        self.trusted_proxies.client(
            req.peer,
            req.headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, if it has one. No allocation,
/// and no validation of the whole header: only the value found is checked to be text.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let name = name.as_bytes();
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let value = pair.strip_prefix(name)?.strip_prefix(b"=")?;
            std::str::from_utf8(value).ok()
        })
}

/// Equal secrets, compared in constant time (`subtle`): response times do not reveal how much
/// of a guess was right. The admin token and the preview token are both checked with it.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests;
