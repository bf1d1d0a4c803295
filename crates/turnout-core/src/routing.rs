//! One request's route through a routing snapshot: [`RoutingSnapshot::decide`] (preview,
//! rules, fleet mark, stickiness, the weighted draw). The decision's parts (settings, rules,
//! shares, the answer) live in [`crate::decide`]; this file puts them to work on a snapshot.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::decide::{
    cookie_value, same_secret, Decision, PreviewSettings, Reason, Refusal, RequestInfo, Share,
    StickyBy,
};
use crate::pool::{hash_ip, Pool};
use crate::snapshot::RoutingSnapshot;

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
