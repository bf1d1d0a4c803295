//! `[[auth]]`: edge authentication rules. Each checks requests in its scope (host, path prefix,
//! pool) one way: basic auth against a file of password hashes, a forward-auth sub-request, or
//! the JWT an AWS ALB sends after its own OIDC login.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::span::spanned_error;
use crate::PoolName;

/// The largest users file read (a few thousand users).
const MAX_USERS_FILE: u64 = 1024 * 1024;
/// The most headers a forward-auth answer or ALB claims may pass on.
const MAX_PASSED_HEADERS: usize = 16;

/// One `[[auth]]` rule, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRule {
    /// Its name in metrics and logs.
    pub name: String,
    /// Only requests whose Host (without its port, any case) is this.
    pub host: Option<String>,
    /// Only requests whose path starts with this.
    pub path_prefix: Option<String>,
    /// Only requests routed to this pool.
    pub pool: Option<PoolName>,
    /// With `pool`: the rule applies only while that pool takes no live traffic (no weight in
    /// the split: it is reached through a preview), so it ends when the pool goes live.
    pub until_live: bool,
    /// How requests are checked.
    pub check: AuthCheck,
}

/// How an `[[auth]]` rule checks a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthCheck {
    /// `Authorization: Basic`, against the users file's hashes.
    Basic {
        /// The file the users were read from (for messages).
        file: PathBuf,
        /// `user` and its hash (argon2 PHC string or bcrypt), in file order.
        users: Vec<(String, String)>,
        /// The realm of the `WWW-Authenticate` challenge.
        realm: String,
        /// The verified user's name goes to the app in this header (a client's copy is removed).
        user_header: Option<http::HeaderName>,
    },
    /// A sub-request to an auth service (nginx's `auth_request`, Traefik's ForwardAuth).
    Forward {
        /// Where the sub-request goes (`http://`, or `https://`).
        url: http::Uri,
        /// The most the auth service may take.
        timeout: Duration,
        /// Headers copied from its 2xx answer to the request (a client's copies are removed).
        copy_headers: Vec<http::HeaderName>,
    },
    /// `x-amzn-oidc-data`: an ES256 JWT signed by the ALB.
    Alb {
        /// The ALB's public key for key id `kid` is fetched from `{keys_url}/{kid}`.
        keys_url: String,
        /// The load balancer's ARN: tokens another signer made are refused.
        signer: String,
        /// Claim name -> header the verified claim is passed in (a client's copies are removed).
        claims: Vec<(String, http::HeaderName)>,
    },
}

impl AuthCheck {
    /// The kind, as the config names it.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthCheck::Basic { .. } => "basic",
            AuthCheck::Forward { .. } => "forward",
            AuthCheck::Alb { .. } => "alb",
        }
    }
}

/// `[[auth]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    name: Spanned<String>,
    kind: Spanned<String>,
    host: Option<Spanned<String>>,
    path_prefix: Option<Spanned<String>>,
    pool: Option<Spanned<String>>,
    until_live: Option<Spanned<bool>>,
    // basic
    users_file: Option<Spanned<String>>,
    realm: Option<Spanned<String>>,
    user_header: Option<Spanned<String>>,
    // forward
    url: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    copy_headers: Option<Vec<Spanned<String>>>,
    // alb
    keys_url: Option<Spanned<String>>,
    signer: Option<Spanned<String>>,
    claims: Option<BTreeMap<String, Spanned<String>>>,
}

pub(crate) fn resolve_auth(
    file: Vec<FileAuth>,
    pools: &BTreeMap<PoolName, Vec<crate::Backend>>,
    text: &str,
    path: &Path,
) -> Result<Vec<AuthRule>, ConfigError> {
    let invalid = spanned_error(text, path, "auth");
    let mut rules = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for a in file {
        crate::scope::label_name(&a.name, &mut names, "rules", &invalid)?;
        let name = a.name.get_ref();
        let kind = a.kind.get_ref().as_str();
        // Keys of another kind are refused, naming the kind they belong to.
        let foreign: [(&str, Option<std::ops::Range<usize>>, &str); 9] = [
            (
                "users_file",
                a.users_file.as_ref().map(Spanned::span),
                "basic",
            ),
            ("realm", a.realm.as_ref().map(Spanned::span), "basic"),
            (
                "user_header",
                a.user_header.as_ref().map(Spanned::span),
                "basic",
            ),
            ("url", a.url.as_ref().map(Spanned::span), "forward"),
            ("timeout", a.timeout.as_ref().map(Spanned::span), "forward"),
            (
                "copy_headers",
                a.copy_headers
                    .as_ref()
                    .map(|c| c.first().map_or(a.kind.span(), Spanned::span)),
                "forward",
            ),
            ("keys_url", a.keys_url.as_ref().map(Spanned::span), "alb"),
            ("signer", a.signer.as_ref().map(Spanned::span), "alb"),
            (
                "claims",
                a.claims
                    .as_ref()
                    .map(|c| c.values().next().map_or(a.kind.span(), Spanned::span)),
                "alb",
            ),
        ];
        if !matches!(kind, "basic" | "forward" | "alb") {
            return Err(invalid(
                a.kind.span(),
                "kind",
                format!("{kind:?}: write \"basic\", \"forward\" or \"alb\""),
            ));
        }
        for (key, span, owner) in foreign {
            if let (Some(span), true) = (span, owner != kind) {
                return Err(invalid(
                    span,
                    key,
                    format!("is a key of kind = \"{owner}\", and this rule is kind = \"{kind}\""),
                ));
            }
        }
        let header = |s: &Spanned<String>, key: &str| {
            http::HeaderName::from_bytes(s.get_ref().trim().as_bytes())
                .ok()
                .filter(|h| !crate::auth::reserved_header(h))
                .ok_or_else(|| {
                    invalid(
                        s.span(),
                        key,
                        format!("{:?} is not a header turnout may set", s.get_ref()),
                    )
                })
        };
        let required = |v: Option<Spanned<String>>, key: &str| {
            v.ok_or_else(|| {
                crate::span::invalid_key(
                    text,
                    path,
                    &format!("auth.{key}"),
                    format!("rule {name:?} (kind = \"{kind}\") needs `{key}`"),
                )
            })
        };
        let check = match kind {
            "basic" => {
                let f = required(a.users_file, "users_file")?;
                let file = PathBuf::from(f.get_ref());
                let users = read_users(&file).map_err(|m| invalid(f.span(), "users_file", m))?;
                AuthCheck::Basic {
                    file,
                    users,
                    realm: match a.realm {
                        None => name.clone(),
                        Some(r)
                            if r.get_ref().bytes().all(|b| {
                                b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' '
                            }) && r.get_ref().len() <= 64 =>
                        {
                            r.into_inner()
                        }
                        Some(r) => {
                            return Err(invalid(
                                r.span(),
                                "realm",
                                format!(
                                    "{:?}: up to 64 printable characters, no quotes or backslashes",
                                    r.get_ref()
                                ),
                            ))
                        }
                    },
                    user_header: a
                        .user_header
                        .as_ref()
                        .map(|h| header(h, "user_header"))
                        .transpose()?,
                }
            }
            "forward" => {
                let u = required(a.url, "url")?;
                let url = u
                    .get_ref()
                    .parse::<http::Uri>()
                    .ok()
                    .filter(|url| {
                        matches!(url.scheme_str(), Some("http" | "https")) && url.host().is_some()
                    })
                    .ok_or_else(|| {
                        invalid(
                            u.span(),
                            "url",
                            format!(
                                "{:?}: write the auth service's http:// or https:// URL",
                                u.get_ref()
                            ),
                        )
                    })?;
                let timeout = match a.timeout {
                    None => crate::defaults::AUTH_TIMEOUT,
                    Some(t) => crate::duration::parse_duration(t.get_ref())
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            invalid(
                                t.span(),
                                "timeout",
                                format!("{:?}: write a duration such as \"2s\"", t.get_ref()),
                            )
                        })?,
                };
                let mut copy_headers = Vec::new();
                for h in a.copy_headers.unwrap_or_default() {
                    copy_headers.push(header(&h, "copy_headers")?);
                }
                if copy_headers.len() > MAX_PASSED_HEADERS {
                    return Err(crate::span::invalid_key(
                        text,
                        path,
                        "auth.copy_headers",
                        format!("at most {MAX_PASSED_HEADERS} headers"),
                    ));
                }
                AuthCheck::Forward {
                    url,
                    timeout,
                    copy_headers,
                }
            }
            _ => {
                let k = required(a.keys_url, "keys_url")?;
                let keys_url = k.get_ref().trim_end_matches('/').to_owned();
                let uri = keys_url.parse::<http::Uri>().ok();
                // https, but for a key server on this machine (a test's, or a local mirror).
                let ok = uri.as_ref().is_some_and(|u| {
                    u.query().is_none()
                        && match (u.scheme_str(), u.host()) {
                            (Some("https"), Some(_)) => true,
                            (Some("http"), Some(h)) => {
                                h == "localhost"
                                    || h.trim_matches(['[', ']'])
                                        .parse::<std::net::IpAddr>()
                                        .is_ok_and(|ip| ip.is_loopback())
                            }
                            _ => false,
                        }
                });
                if !ok {
                    return Err(invalid(
                        k.span(),
                        "keys_url",
                        format!(
                            "{:?}: write the region's https:// key server, e.g. \"https://public-keys.auth.elb.eu-west-1.amazonaws.com\" (http:// only on loopback)",
                            k.get_ref()
                        ),
                    ));
                }
                let s = required(a.signer, "signer")?;
                if !s.get_ref().starts_with("arn:") || s.get_ref().len() > 512 {
                    return Err(invalid(
                        s.span(),
                        "signer",
                        format!(
                            "{:?}: write the load balancer's ARN (arn:aws:elasticloadbalancing:...)",
                            s.get_ref()
                        ),
                    ));
                }
                let mut claims = Vec::new();
                for (claim, h) in a.claims.unwrap_or_else(|| {
                    BTreeMap::from([
                        (
                            "sub".to_owned(),
                            Spanned::new(0..0, "X-Auth-User".to_owned()),
                        ),
                        (
                            "email".to_owned(),
                            Spanned::new(0..0, "X-Auth-Email".to_owned()),
                        ),
                    ])
                }) {
                    claims.push((claim, header(&h, "claims")?));
                }
                if claims.len() > MAX_PASSED_HEADERS {
                    return Err(crate::span::invalid_key(
                        text,
                        path,
                        "auth.claims",
                        format!("at most {MAX_PASSED_HEADERS} claims"),
                    ));
                }
                AuthCheck::Alb {
                    keys_url,
                    signer: s.into_inner(),
                    claims,
                }
            }
        };
        let host = a.host.map(|h| h.get_ref().trim().to_ascii_lowercase());
        let path_prefix = crate::scope::path_prefix(a.path_prefix, &invalid)?;
        let pool = crate::scope::pool(a.pool, pools, &invalid)?;
        if let (Some(u), None) = (&a.until_live, &pool) {
            return Err(invalid(
                u.span(),
                "until_live",
                "needs `pool` (it ends the rule when that pool goes live)".into(),
            ));
        }
        rules.push(AuthRule {
            name: a.name.into_inner(),
            host,
            path_prefix,
            pool,
            until_live: a.until_live.is_none_or(Spanned::into_inner),
            check,
        });
    }
    Ok(rules)
}

/// Headers an auth rule may not set: hop-by-hop and framing ones, Host, and the forwarding
/// headers turnout writes itself.
pub(crate) fn reserved_header(h: &http::HeaderName) -> bool {
    use http::header::*;
    [
        CONNECTION,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        HOST,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHORIZATION,
        COOKIE,
    ]
    .contains(h)
        || h.as_str().starts_with("x-forwarded-")
        || h.as_str() == "keep-alive"
}

/// The users file: `user:hash` per line, `#` comments and blank lines skipped; each hash an
/// argon2 PHC string (`$argon2id$...`) or bcrypt (`$2b$...`, `$2y$`, `$2a$`). Errors name the
/// file and its line.
fn read_users(file: &Path) -> Result<Vec<(String, String)>, String> {
    let text = crate::read::read_capped(file, MAX_USERS_FILE)
        .map_err(|e| format!("cannot read users file {}: {e}", file.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| format!("users file {} is not UTF-8", file.display()))?;
    let mut users: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("users file {}, line {}", file.display(), n + 1);
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("{at}: write user:hash"));
        };
        if user.is_empty() || user.len() > 128 || user.bytes().any(|b| b.is_ascii_control()) {
            return Err(format!(
                "{at}: the user name is empty, over 128 bytes or has control characters"
            ));
        }
        if !is_password_hash(hash) {
            return Err(format!(
                "{at}: user {user:?}'s hash is neither argon2 ($argon2id$...) nor bcrypt ($2b$...): plain passwords are refused (make one with `turnout hash-password`)"
            ));
        }
        if users.iter().any(|(u, _)| u == user) {
            return Err(format!("{at}: user {user:?} is listed twice"));
        }
        users.push((user.to_owned(), hash.to_owned()));
    }
    if users.is_empty() {
        return Err(format!("users file {} lists no user", file.display()));
    }
    Ok(users)
}

/// An argon2 PHC string that parses, or a bcrypt hash by its form.
fn is_password_hash(hash: &str) -> bool {
    let argon2 = ["$argon2id$", "$argon2i$", "$argon2d$"]
        .iter()
        .any(|p| hash.starts_with(p))
        && argon2::PasswordHash::new(hash).is_ok_and(|p| p.hash.is_some() && p.salt.is_some());
    let bcrypt = ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
        && hash.len() == 60
        && hash[4..6].bytes().all(|b| b.is_ascii_digit())
        && hash.as_bytes()[6] == b'$';
    argon2 || bcrypt
}
