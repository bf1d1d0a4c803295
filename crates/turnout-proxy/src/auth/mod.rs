//! `[[auth]]` at work: each rule whose scope (host, path prefix, pool) covers a request checks
//! it, in file order: basic auth ([`basic`]), a forward-auth sub-request ([`forward`]), or the
//! ALB's signed OIDC data ([`alb`]). A request meets [`Gate::check`] once routed (a rule may be
//! a pool's own, and one scoped to a pool that takes no live traffic ends when it goes live);
//! what a rule refuses is answered before any pool is asked, so it never counts in a pool's
//! figures. Every identity header any rule sets is first removed from every request: a client
//! cannot write its own.

mod alb;
mod basic;
mod forward;
#[cfg(test)]
mod tests;

use http::header::{self, HeaderValue};
use http::{HeaderMap, HeaderName, Request, Response};
use turnout_config::{AuthCheck, AuthRule};
use turnout_core::Metrics;

use crate::body::ProxyBody;
use crate::downstream::Downstream;
use crate::error::ProxyError;
use crate::tls::UpstreamTls;

/// Why a rule did not let a request on.
#[derive(Debug)]
pub(crate) enum Denied {
    /// Answered with turnout's own error (401, or 502/503 when the check could not be made),
    /// with basic auth's challenge.
    Error {
        err: ProxyError,
        challenge: Option<HeaderValue>,
    },
    /// Answered with the auth service's own answer (forward auth's 401, 403 or redirect).
    Answer(Box<Response<ProxyBody>>),
}

/// One rule and its checker.
#[derive(Debug)]
struct Rule {
    spec: AuthRule,
    check: Check,
}

#[derive(Debug)]
enum Check {
    Basic(basic::Basic),
    Forward(forward::Forward),
    Alb(alb::Alb),
}

/// The `[[auth]]` rules of the data plane.
#[derive(Debug)]
pub(crate) struct Gate {
    rules: Vec<Rule>,
    /// Every header a rule passes identity in: removed from each request before any check.
    identity: Vec<HeaderName>,
}

impl Gate {
    /// The rules' checkers (none configured: `None`, and no request pays for them). The
    /// config validated every part of them (hashes, realms, URLs).
    pub fn new(rules: &[AuthRule], tls: &UpstreamTls) -> Option<Gate> {
        if rules.is_empty() {
            return None;
        }
        let client = forward::client(tls);
        let mut identity: Vec<HeaderName> = Vec::new();
        let mut built = Vec::new();
        for spec in rules {
            let check = match &spec.check {
                AuthCheck::Basic {
                    users,
                    realm,
                    user_header,
                    ..
                } => {
                    identity.extend(user_header.iter().cloned());
                    Check::Basic(basic::Basic::new(users, realm, user_header.clone()))
                }
                AuthCheck::Forward {
                    url,
                    timeout,
                    copy_headers,
                } => {
                    identity.extend(copy_headers.iter().cloned());
                    Check::Forward(forward::Forward::new(
                        client.clone(),
                        url.clone(),
                        *timeout,
                        copy_headers.clone(),
                    ))
                }
                AuthCheck::Alb {
                    keys_url,
                    signer,
                    claims,
                } => {
                    identity.extend(claims.iter().map(|(_, h)| h.clone()));
                    Check::Alb(alb::Alb::new(
                        client.clone(),
                        keys_url.clone(),
                        signer.clone(),
                        claims.clone(),
                    ))
                }
            };
            built.push(Rule {
                spec: spec.clone(),
                check,
            });
        }
        identity.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        identity.dedup();
        Some(Gate {
            rules: built,
            identity,
        })
    }

    /// Checks `req` against every rule that covers it; `routed`: the pool it is routed to, and
    /// whether that pool takes live traffic. The rules that let it on add the identity they
    /// verified to its headers.
    pub async fn check<B>(
        &self,
        req: &mut Request<B>,
        routed: Option<(&str, bool)>,
        down: &Downstream,
        metrics: &Metrics,
    ) -> Result<(), Denied> {
        for h in &self.identity {
            req.headers_mut().remove(h);
        }
        for rule in &self.rules {
            if !rule.covers(req, routed) {
                continue;
            }
            let verdict = match &rule.check {
                Check::Basic(b) => b.check(req.headers_mut()).await,
                Check::Forward(f) => f.check(req, down).await,
                Check::Alb(a) => a.check(req.headers_mut()).await,
            };
            let name = rule.spec.name.as_str();
            match verdict {
                Ok(()) => metrics.auth(name, "allowed"),
                Err(Verdict::Refused(why)) => {
                    metrics.auth(name, "refused");
                    let err = ProxyError::Unauthenticated {
                        rule: name.to_owned(),
                        why,
                    };
                    let challenge = match &rule.check {
                        Check::Basic(b) => Some(b.challenge()),
                        _ => None,
                    };
                    return Err(Denied::Error { err, challenge });
                }
                Err(Verdict::Answer(resp)) => {
                    metrics.auth(name, "refused");
                    return Err(Denied::Answer(resp));
                }
                Err(Verdict::Unavailable { why, answered }) => {
                    metrics.auth(name, "failed");
                    return Err(Denied::Error {
                        err: ProxyError::AuthUnavailable {
                            rule: name.to_owned(),
                            why,
                            answered,
                        },
                        challenge: None,
                    });
                }
            }
        }
        Ok(())
    }
}

/// What one check says, short of letting the request on.
#[derive(Debug)]
enum Verdict {
    /// No or wrong credentials (401; the reason goes to the log).
    Refused(String),
    /// The auth service's own answer.
    Answer(Box<Response<ProxyBody>>),
    /// The check could not be made (fails closed).
    Unavailable { why: String, answered: bool },
}

impl Rule {
    /// The rule's scope covers the request: its host, its path prefix, and its pool (while
    /// that pool takes no live traffic, unless `until_live = false`).
    fn covers<B>(&self, req: &Request<B>, routed: Option<(&str, bool)>) -> bool {
        let spec = &self.spec;
        if let Some(prefix) = &spec.path_prefix {
            if !req.uri().path().starts_with(prefix.as_str()) {
                return false;
            }
        }
        if let Some(host) = &spec.host {
            // One Host is there: admission refused the request otherwise.
            let given = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(strip_port)
                .unwrap_or("");
            if !given.eq_ignore_ascii_case(host) {
                return false;
            }
        }
        if let Some(pool) = &spec.pool {
            let Some((routed_to, live)) = routed else {
                return false;
            };
            if routed_to != pool.as_str() || (spec.until_live && live) {
                return false;
            }
        }
        true
    }
}

/// A Host header's host, without its port (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(at) if !host[at..].contains(']') => &host[..at],
        _ => host,
    }
}

/// Appends `value` under `name`, if it is a valid header value (claims and auth answers may
/// hold anything; an invalid one is left out, never passed on half-made).
fn pass_on(headers: &mut HeaderMap, name: &HeaderName, value: &[u8]) {
    if let Ok(v) = HeaderValue::from_bytes(value) {
        headers.append(name.clone(), v);
    }
}
