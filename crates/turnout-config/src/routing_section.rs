//! `[routing]`: the pool that is active at start, stickiness, preview routing, the A/B rules and
//! version-skew protection, validated into [`Routing`]. (The vocabulary these are made of, shared
//! with the state file and the admin API, is `routing.rs`.)

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::error::ConfigError;
use crate::names::PoolName;
use crate::routing::{is_token, Backend, Preview, Rule, Sticky, TrustedProxies};
use crate::span::{find_key_line, line_of};
use crate::statics::check_prefix;
use crate::{defaults, file};

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// The pool new clients go to, unless the state file says otherwise.
    pub active: PoolName,
    /// How a client keeps its pool while a split is in force.
    pub sticky: Sticky,
    /// The cookie that names a client's pool (`Sticky::Cookie`).
    pub sticky_cookie: String,
    /// Peers whose `X-Forwarded-For` is believed (the load balancer's subnet).
    pub trusted_proxies: TrustedProxies,
    /// Off unless `preview_header` is set.
    pub preview: Option<Preview>,
    /// A/B rules, in order; the first match wins.
    pub rules: Vec<Rule>,
    /// Version-skew protection, on for this long after a page load (`None`: off).
    pub skew_protection: Option<Duration>,
    /// The asset prefixes skew protection covers; empty: `[cache] prefixes`.
    pub skew_prefixes: Vec<String>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            active: PoolName::parse("blue").expect("a valid name"),
            sticky: Sticky::Cookie,
            sticky_cookie: defaults::STICKY_COOKIE.to_owned(),
            trusted_proxies: TrustedProxies::default(),
            preview: None,
            rules: Vec::new(),
            skew_protection: None,
            skew_prefixes: Vec::new(),
        }
    }
}

/// The rest of `[routing]`: stickiness, preview and rules.
pub(crate) fn resolve_routing(
    file: file::FileRouting,
    active: PoolName,
    pools: &BTreeMap<PoolName, Vec<Backend>>,
    text: &str,
    path: &Path,
) -> Result<Routing, ConfigError> {
    let invalid = |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(text, span.start),
        key: format!("routing.{key}"),
        message,
    };
    let token =
        |value: &Option<toml::Spanned<String>>, key: &str, default: &str, what: &str| match value {
            None => Ok(default.to_owned()),
            Some(v) if is_token(v.get_ref()) => Ok(v.get_ref().clone()),
            Some(v) => Err(invalid(
                v.span(),
                key,
                format!("{:?} is not a valid {what} name", v.get_ref()),
            )),
        };
    let sticky = match &file.sticky {
        None => Sticky::Cookie,
        Some(s) => match s.get_ref().as_str() {
            "cookie" => Sticky::Cookie,
            "ip" => Sticky::Ip,
            "none" => Sticky::None,
            "header" => match &file.sticky_header {
                Some(_) => Sticky::Header(
                    token(&file.sticky_header, "sticky_header", "", "header")?.to_ascii_lowercase(),
                ),
                None => {
                    return Err(invalid(
                        s.span(),
                        "sticky",
                        "sticky = \"header\" needs sticky_header = \"NAME\" (e.g. \"X-User-Id\")"
                            .into(),
                    ))
                }
            },
            other => {
                return Err(invalid(
                    s.span(),
                    "sticky",
                    format!(
                        "unknown mode {other:?}: use \"cookie\", \"header\", \"ip\" or \"none\""
                    ),
                ))
            }
        },
    };
    let sticky_cookie = token(
        &file.sticky_cookie,
        "sticky_cookie",
        defaults::STICKY_COOKIE,
        "cookie",
    )?;
    let mut trusted = Vec::new();
    for net in file.trusted_proxies.iter().flatten() {
        TrustedProxies::parse([net.get_ref().as_str()])
            .map_err(|m| invalid(net.span(), "trusted_proxies", m))?;
        trusted.push(net.get_ref().as_str());
    }
    let trusted_proxies = TrustedProxies::parse(trusted).expect("each network was checked above");
    let preview = match &file.preview_header {
        None => None,
        Some(_) => Some(Preview {
            header: token(&file.preview_header, "preview_header", "", "header")?
                .to_ascii_lowercase(),
            token: file.preview_token.clone().filter(|t| !t.is_empty()),
            cookie: token(
                &file.preview_cookie,
                "preview_cookie",
                defaults::PREVIEW_COOKIE,
                "cookie",
            )?,
        }),
    };
    if preview.is_none() && (file.preview_token.is_some() || file.preview_cookie.is_some()) {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            line: find_key_line(text, "preview_"),
            key: "routing.preview_header".into(),
            message: "preview_token and preview_cookie need preview_header (e.g. \"X-Turnout-Pool\") to turn preview routing on".into(),
        });
    }
    let mut rules = Vec::with_capacity(file.rules.len());
    for (i, spec) in file.rules.iter().enumerate() {
        let key = format!("rules[{i}]");
        let rule = Rule::parse(spec.get_ref()).map_err(|m| invalid(spec.span(), &key, m))?;
        match pools.get(&rule.to) {
            None => {
                return Err(invalid(
                    spec.span(),
                    &key,
                    format!("no pool named {:?}", rule.to.as_str()),
                ))
            }
            Some(servers) if servers.is_empty() => {
                return Err(invalid(
                    spec.span(),
                    &key,
                    format!(
                        "pool {:?} has no servers to send the rule's requests to",
                        rule.to.as_str()
                    ),
                ))
            }
            Some(_) => rules.push(rule),
        }
    }
    let mut skew_prefixes = Vec::new();
    for p in file.skew_prefixes.unwrap_or_default() {
        check_prefix(p.get_ref()).map_err(|m| invalid(p.span(), "skew_prefixes", m))?;
        skew_prefixes.push(p.into_inner());
    }
    let skew_protection = file.skew_protection.map(|d| d.0).filter(|d| !d.is_zero());
    Ok(Routing {
        active,
        sticky,
        sticky_cookie,
        trusted_proxies,
        preview,
        rules,
        skew_protection,
        skew_prefixes,
    })
}
