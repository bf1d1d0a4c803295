//! The routing vocabulary shared by the config file, the state file and the admin API: weighted
//! servers, a pool's balancer, stickiness, preview routing and A/B rules. Each has a raw serde
//! form and a validated domain form; the rules for what is valid live here once.

use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::names::{PoolName, ServerAddr};

/// The largest weight of one server in a pool.
pub const MAX_SERVER_WEIGHT: u32 = 1000;

/// What turnout speaks to a pool's servers (`[pools.NAME] protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1, one request at a time per connection, kept alive.
    #[default]
    Http1,
    /// HTTP/2 in cleartext with prior knowledge: a connection per server and worker carries
    /// every request as a stream (gRPC, trailers both ways).
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`) to `https://` servers, as [`Protocol::H2c`] otherwise.
    H2,
}

impl Protocol {
    /// `"http1"`, `"h2c"` or `"h2"`; the error says what is accepted.
    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s {
            "http1" => Ok(Protocol::Http1),
            "h2c" => Ok(Protocol::H2c),
            "h2" => Ok(Protocol::H2),
            other => Err(format!(
                "{other:?} is not a protocol: \"http1\", \"h2c\" (HTTP/2 in cleartext) or \"h2\" (HTTP/2 over TLS)"
            )),
        }
    }

    /// HTTP/2 (over TLS or not).
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2)
    }
}

/// One upstream server and its share of its pool's traffic (for the balancers that weigh).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// The server.
    pub addr: ServerAddr,
    /// Its share of its pool's traffic, 1 to 1000.
    pub weight: u32,
}

impl Backend {
    /// A server of weight 1.
    pub fn new(addr: ServerAddr) -> Backend {
        Backend { addr, weight: 1 }
    }

    /// Validates a raw entry (from the config file, the state file or the admin API).
    pub fn parse(entry: &ServerEntry) -> Result<Backend, String> {
        let addr = ServerAddr::parse(&entry.addr)?;
        if !(1..=MAX_SERVER_WEIGHT).contains(&entry.weight) {
            return Err(format!(
                "server {}: weight {} is out of range: 1 to {MAX_SERVER_WEIGHT}",
                entry.addr, entry.weight
            ));
        }
        Ok(Backend {
            addr,
            weight: entry.weight,
        })
    }

    /// The raw form, as the state file and the status show it.
    pub fn entry(&self) -> ServerEntry {
        ServerEntry {
            addr: self.addr.to_string(),
            weight: self.weight,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weight == 1 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} weight={}", self.addr, self.weight)
        }
    }
}

/// A server as written: `"HOST:PORT"`, or `{ addr = "HOST:PORT", weight = 3 }`. Written as a
/// plain string when its weight is 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// `host:port`.
    pub addr: String,
    /// 1 to 1000 (1 when the entry is a plain string).
    pub weight: u32,
}

impl Serialize for ServerEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        if self.weight == 1 {
            return s.serialize_str(&self.addr);
        }
        let mut st = s.serialize_struct("ServerEntry", 2)?;
        st.serialize_field("addr", &self.addr)?;
        st.serialize_field("weight", &self.weight)?;
        st.end()
    }
}

// By hand rather than `#[serde(untagged)]`: an untagged enum can only say "data did not match
// any variant", where this names the key that is wrong.
impl<'de> Deserialize<'de> for ServerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ServerEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a server \"HOST:PORT\" or { addr = \"HOST:PORT\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ServerEntry, E> {
                Ok(ServerEntry {
                    addr: s.to_owned(),
                    weight: 1,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServerEntry, A::Error> {
                let (mut addr, mut weight) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "addr" => addr = Some(map.next_value::<String>()?),
                        "weight" => {
                            let w = map.next_value::<i64>()?;
                            weight = Some(u32::try_from(w).map_err(|_| {
                                de::Error::custom(format!(
                                    "weight {w} is out of range: 1 to {MAX_SERVER_WEIGHT}"
                                ))
                            })?);
                        }
                        other => return Err(de::Error::unknown_field(other, &["addr", "weight"])),
                    }
                }
                Ok(ServerEntry {
                    addr: addr.ok_or_else(|| de::Error::missing_field("addr"))?,
                    weight: weight.unwrap_or(1),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// How a pool spreads requests over its servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Balance {
    /// Each available server in turn; weights are not used.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (nginx's): a weight-3 server gets 3 of every 4 requests
    /// beside a weight-1 one, spread out rather than in bursts.
    Weighted,
    /// The server with the fewest requests in flight relative to its weight.
    LeastRequests,
    /// The client's address on a consistent-hash ring: a client keeps its server, and adding or
    /// removing one of N servers moves only about 1/N of the clients.
    IpHash,
    /// Two servers drawn at random, the less loaded (relative to weight) of the two.
    RandomTwoChoices,
}

impl Balance {
    /// The balancers' names, for error messages.
    pub const NAMES: &'static str =
        "\"round_robin\", \"weighted\", \"least_requests\", \"ip_hash\" or \"random_two_choices\"";

    /// A balancer by its name; the error lists the names.
    pub fn parse(s: &str) -> Result<Balance, String> {
        Ok(match s {
            "round_robin" => Balance::RoundRobin,
            "weighted" => Balance::Weighted,
            "least_requests" => Balance::LeastRequests,
            "ip_hash" => Balance::IpHash,
            "random_two_choices" => Balance::RandomTwoChoices,
            _ => return Err(format!("unknown balance {s:?}: use {}", Balance::NAMES)),
        })
    }

    /// Its name, as the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::Weighted => "weighted",
            Balance::LeastRequests => "least_requests",
            Balance::IpHash => "ip_hash",
            Balance::RandomTwoChoices => "random_two_choices",
        }
    }

    /// Does this balancer use the servers' weights?
    pub fn weighs(self) -> bool {
        !matches!(self, Balance::RoundRobin)
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a client that got a pool during a split keeps getting it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Sticky {
    /// A cookie names the pool (set by turnout while a split is in force).
    #[default]
    Cookie,
    /// The value of this request header (lower-cased name), hashed onto the split.
    Header(String),
    /// The client's address (see [`TrustedProxies`]), hashed onto the split.
    Ip,
    /// Every request is drawn afresh.
    None,
}

/// Networks whose `X-Forwarded-For` turnout believes: the load balancer's subnet. A request
/// from any other peer is keyed by the peer's own address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Parses `"10.0.0.0/16"`, `"10.0.1.5"` (one address) or `"::1/128"`.
    pub fn parse<'a>(nets: impl IntoIterator<Item = &'a str>) -> Result<TrustedProxies, String> {
        nets.into_iter()
            .map(|n| {
                n.parse::<ipnet::IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("invalid network {n:?}: write an address or a CIDR such as \"10.0.0.0/16\"")
                    })
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// Is `ip` in one of the networks?
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// No network listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The address a request comes from: the peer, unless the peer is trusted, in which case
    /// the right-most `X-Forwarded-For` address that is not itself trusted. No allocation.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        if !self.contains(&peer) {
            return peer;
        }
        let mut client = peer;
        for value in forwarded_for.rev() {
            for hop in value.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(ip) if self.contains(&ip) => client = ip,
                    Ok(ip) => return ip,
                    // A malformed hop: trust nothing to the left of it.
                    Err(_) => return client,
                }
            }
        }
        client
    }
}

/// Preview routing: a request naming a pool in `header` (or the `cookie`) goes to that pool,
/// whatever the split; with a `token`, only when the value is `POOL:TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// Lower-cased header name.
    pub header: String,
    /// The token a preview request must carry (none: previews need no token).
    pub token: Option<String>,
    /// The cookie a preview sets.
    pub cookie: String,
}

/// An A/B rule as written in the config file, the admin API and the state file: exactly one of
/// `header`, `cookie` or `query` names what to look at; exactly one of `equals` or `prefix` says
/// how to compare it; `to` names the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Match on this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Match on this cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Match on this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The value must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The value must start with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The pool a matching request goes to.
    pub to: String,
}

/// What a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOn {
    /// A request header (lower-cased name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query parameter; its value is compared percent-decoded.
    Query(String),
}

/// How a rule compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleMatch {
    /// The whole value.
    Equals(String),
    /// The value's start.
    Prefix(String),
}

impl RuleMatch {
    /// Does `value` match?
    pub fn matches(&self, value: &str) -> bool {
        match self {
            RuleMatch::Equals(v) => value == v,
            RuleMatch::Prefix(p) => value.starts_with(p.as_str()),
        }
    }

    /// The value compared with.
    pub fn value(&self) -> &str {
        match self {
            RuleMatch::Equals(v) | RuleMatch::Prefix(v) => v,
        }
    }
}

/// A validated A/B rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What the rule looks at.
    pub on: RuleOn,
    /// How it compares.
    pub matcher: RuleMatch,
    /// Where a match goes.
    pub to: PoolName,
}

impl Rule {
    /// Validates `spec`; the error says what is wrong with it (the caller adds which rule).
    pub fn parse(spec: &RuleSpec) -> Result<Rule, String> {
        let on = match (&spec.header, &spec.cookie, &spec.query) {
            (Some(h), None, None) => {
                if !is_token(h) {
                    return Err(format!("header {h:?} is not a valid header name"));
                }
                RuleOn::Header(h.to_ascii_lowercase())
            }
            (None, Some(c), None) => {
                if !is_token(c) {
                    return Err(format!("cookie {c:?} is not a valid cookie name"));
                }
                RuleOn::Cookie(c.clone())
            }
            (None, None, Some(q)) => {
                if q.is_empty() {
                    return Err("query must name a parameter".into());
                }
                RuleOn::Query(q.clone())
            }
            _ => return Err(
                "give exactly one of \"header\", \"cookie\" or \"query\" to say what it matches"
                    .into(),
            ),
        };
        let matcher = match (&spec.equals, &spec.prefix) {
            (Some(v), None) => RuleMatch::Equals(v.clone()),
            (None, Some(p)) if !p.is_empty() => RuleMatch::Prefix(p.clone()),
            (None, Some(_)) => {
                return Err(
                    "an empty \"prefix\" would match everything; drop the rule instead".into(),
                )
            }
            _ => return Err("give exactly one of \"equals\" or \"prefix\"".into()),
        };
        let to = PoolName::parse(&spec.to)?;
        Ok(Rule { on, matcher, to })
    }

    /// The raw form, as the admin API and the state file show it.
    pub fn spec(&self) -> RuleSpec {
        let mut spec = RuleSpec {
            header: None,
            cookie: None,
            query: None,
            equals: None,
            prefix: None,
            to: self.to.to_string(),
        };
        match &self.on {
            RuleOn::Header(h) => spec.header = Some(h.clone()),
            RuleOn::Cookie(c) => spec.cookie = Some(c.clone()),
            RuleOn::Query(q) => spec.query = Some(q.clone()),
        }
        match &self.matcher {
            RuleMatch::Equals(v) => spec.equals = Some(v.clone()),
            RuleMatch::Prefix(p) => spec.prefix = Some(p.clone()),
        }
        spec
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = match &self.on {
            RuleOn::Header(h) => ("header", h),
            RuleOn::Cookie(c) => ("cookie", c),
            RuleOn::Query(q) => ("query", q),
        };
        let (op, v) = match &self.matcher {
            RuleMatch::Equals(v) => ("=", v),
            RuleMatch::Prefix(p) => ("^=", p),
        };
        write!(f, "{kind} {name} {op} {v:?} -> {}", self.to)
    }
}

/// Validates a list of rules, naming the first bad one by its 1-based position.
pub fn parse_rules(specs: &[RuleSpec]) -> Result<Vec<Rule>, String> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| Rule::parse(s).map_err(|e| format!("rule {}: {e}", i + 1)))
        .collect()
}

/// An RFC 9110 token: what header and cookie names are made of.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_trusts_only_configured_proxies() {
        let trusted = TrustedProxies::parse(["10.0.0.0/16", "127.0.0.1"]).expect("nets");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            trusted.client(ip("192.0.2.9"), ["1.2.3.4"].into_iter()),
            ip("192.0.2.9")
        );
        // A trusted peer: the right-most untrusted hop.
        assert_eq!(
            trusted.client(
                ip("10.0.1.5"),
                ["1.2.3.4, 198.51.100.7, 10.0.3.3"].into_iter()
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            trusted.client(ip("10.0.1.5"), ["1.2.3.4", "198.51.100.7"].into_iter()),
            ip("198.51.100.7")
        );
        // No header, or only trusted hops: the last trusted one.
        assert_eq!(
            trusted.client(ip("10.0.1.5"), std::iter::empty()),
            ip("10.0.1.5")
        );
        assert_eq!(
            trusted.client(ip("10.0.1.5"), ["garbage, 10.0.2.2"].into_iter()),
            ip("10.0.2.2")
        );
        assert!(TrustedProxies::parse(["10.0.0.0/33"]).is_err());
    }

    #[test]
    fn rules_name_what_is_wrong() {
        let spec = |json: &str| serde_json::from_str::<RuleSpec>(json).expect("json");
        let ok =
            Rule::parse(&spec(r#"{"header":"X-Beta","equals":"1","to":"green"}"#)).expect("ok");
        assert_eq!(ok.on, RuleOn::Header("x-beta".into()));
        assert_eq!(ok.to_string(), "header x-beta = \"1\" -> green");
        for (json, says) in [
            (
                r#"{"equals":"1","to":"green"}"#,
                "exactly one of \"header\"",
            ),
            (
                r#"{"header":"a","cookie":"b","equals":"1","to":"green"}"#,
                "exactly one of \"header\"",
            ),
            (
                r#"{"header":"a b","equals":"1","to":"green"}"#,
                "not a valid header name",
            ),
            (
                r#"{"cookie":"c","to":"green"}"#,
                "exactly one of \"equals\"",
            ),
            (
                r#"{"query":"q","prefix":"","to":"green"}"#,
                "empty \"prefix\"",
            ),
            (
                r#"{"query":"q","equals":"1","to":"no pool"}"#,
                "invalid pool name",
            ),
        ] {
            let e = Rule::parse(&spec(json)).expect_err(json);
            assert!(e.contains(says), "{json}: {e}");
        }
        assert_eq!(Rule::parse(&ok.spec()), Ok(ok));
    }

    #[test]
    fn server_entries_are_strings_or_tables() {
        let e: Vec<ServerEntry> =
            serde_json::from_str(r#"["127.0.0.1:1", {"addr":"127.0.0.1:2","weight":3}]"#)
                .expect("json");
        assert_eq!(e[0].weight, 1);
        assert_eq!(e[1].weight, 3);
        assert_eq!(
            serde_json::to_string(&e).expect("ser"),
            r#"["127.0.0.1:1",{"addr":"127.0.0.1:2","weight":3}]"#
        );
        let bad =
            serde_json::from_str::<ServerEntry>(r#"{"addr":"a:1","wieght":3}"#).expect_err("typo");
        assert!(bad.to_string().contains("wieght"), "{bad}");
        assert!(Backend::parse(&ServerEntry {
            addr: "127.0.0.1:1".into(),
            weight: 0
        })
        .expect_err("zero")
        .contains("out of range"));
    }
}
