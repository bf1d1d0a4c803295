//! The routing decision: which pool a new request goes to, from one snapshot. In order: a
//! preview header or cookie, the A/B rules (first match), a fleet switch's mark, the client's
//! stickiness, and last the weighted draw. Pure and allocation-free: it reads the request's
//! headers and returns borrowed parts of the snapshot.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};
use turnout_config::{Rule, RuleMatch, RuleOn};

use crate::pool::{hash_ip, Pool};
use crate::snapshot::{PreviewSettings, RouteSettings, RoutingSnapshot, StickyBy};
use crate::CoreError;

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
    pool: Arc<Pool>,
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

    fn matches(&self, req: &RequestInfo<'_>) -> bool {
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
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    /// The connection's peer (the load balancer, behind one).
    pub peer: IpAddr,
}

/// Why a request went where it went (for the access log and the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
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
    pub pool: &'s Arc<Pool>,
    pub reason: Reason,
    /// `Set-Cookie` values for the response: a sticky or preview cookie, a fleet mark.
    pub cookies: [Option<&'s HeaderValue>; 2],
}

/// A preview request that cannot be honoured: answered 403 (wrong token) or 400 (no such pool)
/// rather than silently routed somewhere the tester did not ask for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("preview refused: the preview header must be POOL:TOKEN with the configured token")]
    PreviewToken,
    #[error("preview refused: no pool named {0:?}")]
    PreviewPool(String),
}

impl RoutingSnapshot {
    /// Decides where a new request goes. `draw` is a random number for the weighted draw (the
    /// proxy passes a fresh one per request; tests pass a seeded sequence).
    #[inline]
    pub fn decide<'s>(&'s self, req: &RequestInfo<'_>, draw: u64) -> Result<Decision<'s>, Refusal> {
        let settings = &self.env.routing;
        if let Some(preview) = &settings.preview {
            if let Some(decision) = self.preview(preview, req)? {
                return Ok(decision);
            }
        }
        for (i, rule) in self.compiled.iter().enumerate() {
            if rule.matches(req) {
                return Ok(Decision {
                    pool: &rule.pool,
                    reason: Reason::Rule(i),
                    cookies: [None, None],
                });
            }
        }
        let mark = self.mark.as_deref();
        if let Some(m) = mark {
            if !m.live && m.carried_by(req.headers) {
                return Ok(Decision {
                    pool: &m.pool,
                    reason: Reason::Mark,
                    cookies: [None, None],
                });
            }
        }
        let (share, reason, sticky_cookie) = match &settings.sticky {
            StickyBy::Cookie => {
                let carried = cookie_value(req.headers, &settings.sticky_cookie);
                if let Some(share) =
                    carried.and_then(|c| self.split.iter().find(|s| s.pool.name().as_str() == c))
                {
                    (share, Reason::Sticky, None)
                } else {
                    let share = self.share_at(draw);
                    // Hand out the cookie while clients can land on different pools, and
                    // rewrite one that names a pool no longer in the split.
                    let set = (self.split.len() > 1 || carried.is_some())
                        .then_some(&share.pool.cookies().sticky);
                    (share, Reason::Split, set)
                }
            }
            StickyBy::Header(name) => match req.headers.get(name) {
                Some(v) => (
                    self.share_at(xxhash_rust::xxh3::xxh3_64(v.as_bytes())),
                    Reason::Sticky,
                    None,
                ),
                None => (self.share_at(draw), Reason::Split, None),
            },
            StickyBy::Ip => (
                self.share_at(hash_ip(self.client_ip(req))),
                Reason::Sticky,
                None,
            ),
            StickyBy::None => (self.share_at(draw), Reason::Split, None),
        };
        let mark_cookie = mark
            .filter(|m| m.live && Arc::ptr_eq(&m.pool, &share.pool) && Instant::now() < m.until)
            .map(|m| &m.set_cookie);
        Ok(Decision {
            pool: &share.pool,
            reason,
            cookies: [sticky_cookie, mark_cookie],
        })
    }

    /// The split's pool at position `x` (any number; reduced modulo the total weight).
    #[inline]
    fn share_at(&self, x: u64) -> &Share {
        if let [only] = &*self.split {
            return only;
        }
        let total = self.split.last().expect("the split is never empty").upto;
        let at = x % total;
        self.split
            .iter()
            .find(|s| at < s.upto)
            .expect("at < total = the last share's upto")
    }

    /// The client's address: the peer, or what a trusted proxy says in `X-Forwarded-For`.
    #[inline]
    pub fn client_ip(&self, req: &RequestInfo<'_>) -> IpAddr {
        self.env.routing.client_ip(req)
    }

    /// The preview header (refused when wrong) or else the preview cookie (ignored when
    /// wrong: a browser keeps sending a stale one).
    fn preview<'s>(
        &'s self,
        preview: &PreviewSettings,
        req: &RequestInfo<'_>,
    ) -> Result<Option<Decision<'s>>, Refusal> {
        let header = req
            .headers
            .get(&preview.header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let cookie = cookie_value(req.headers, &preview.cookie);
        if let Some(value) = header {
            let pool = self.preview_pool(preview, value)?;
            // Hand the browser the cookie, so the rest of its session stays on this pool.
            let set = pool
                .cookies()
                .preview
                .as_ref()
                .filter(|_| cookie != Some(value));
            return Ok(Some(Decision {
                pool,
                reason: Reason::Preview,
                cookies: [set, None],
            }));
        }
        Ok(cookie
            .and_then(|value| self.preview_pool(preview, value).ok())
            .map(|pool| Decision {
                pool,
                reason: Reason::Preview,
                cookies: [None, None],
            }))
    }

    fn preview_pool(&self, preview: &PreviewSettings, value: &str) -> Result<&Arc<Pool>, Refusal> {
        let name = match &preview.token {
            None => value.split_once(':').map_or(value, |(name, _)| name),
            Some(token) => match value.split_once(':') {
                Some((name, given)) if same_secret(given.as_bytes(), token.as_bytes()) => name,
                _ => return Err(Refusal::PreviewToken),
            },
        };
        self.pools
            .get(name.trim())
            .ok_or_else(|| Refusal::PreviewPool(name.to_owned()))
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
