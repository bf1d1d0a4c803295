//! Header hygiene at the proxy boundary: the request's Host and Content-Length checked (RFC 9112
//! 3.2, 6.3), hop-by-hop headers removed in both directions (RFC 9110 7.6.1), `X-Forwarded-*`
//! set on the way in, and what only a trusted proxy may say (`Forwarded`, `X-Real-IP`) dropped
//! from anyone else. The Host the client asked for is passed through, never rewritten.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// Why a request is refused before it is routed; each answers 400 and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// RFC 9112 3.2: an HTTP/1.1 request must name its host.
    #[error("an HTTP/1.1 request without a Host header")]
    NoHost,
    /// Two Host headers: which one the app would read is anyone's guess.
    #[error("more than one Host header")]
    TwoHosts,
    /// Not `host[:port]`.
    #[error("a Host header that is not host[:port]")]
    BadHost,
    /// HTTP/2: a Host that is not the `:authority`.
    #[error("a Host header that differs from the request's :authority")]
    HostMismatch,
    /// RFC 9112 6.3: differing lengths are a smuggling attempt or a broken client.
    #[error("Content-Length headers that differ")]
    ContentLength,
    /// `Connection: Host` would have Host stripped as hop-by-hop.
    #[error("a Connection header that names Host")]
    ConnectionNamesHost,
}

impl BadRequest {
    /// The text the client gets.
    pub fn public_text(self) -> &'static str {
        match self {
            BadRequest::NoHost => "400 Bad Request: an HTTP/1.1 request needs a Host header\n",
            BadRequest::TwoHosts => "400 Bad Request: more than one Host header\n",
            BadRequest::BadHost => "400 Bad Request: the Host header is not host[:port]\n",
            BadRequest::HostMismatch => {
                "400 Bad Request: the Host header differs from :authority\n"
            }
            BadRequest::ContentLength => "400 Bad Request: Content-Length headers that differ\n",
            BadRequest::ConnectionNamesHost => {
                "400 Bad Request: the Connection header names Host, which every request needs\n"
            }
        }
    }
}

/// Checks the request's Host and Content-Length and leaves exactly one of each (where it has
/// any), so that what is forwarded, what is cached under and what is routed on agree:
/// - HTTP/1.1 needs exactly one Host (RFC 9112 3.2): none, two, or a value that is not
///   `host[:port]` (a path, user info, spaces) is refused.
/// - An absolute-form target's authority wins over the Host header, which is replaced by it
///   (RFC 9112 3.2.2); over HTTP/2, `:authority` becomes the Host, and a Host header that
///   differs from it is refused (RFC 9113 8.3.1).
/// - Several Content-Length fields fold into one when they agree and are refused when they
///   do not (RFC 9110 8.6). hyper refuses differing ones on HTTP/1 itself, but keeps both.
///
/// Allocates only for an HTTP/2 request (its `:authority` copied into a Host header).
pub fn normalize_request(
    version: Version,
    authority: Option<&http::uri::Authority>,
    headers: &mut HeaderMap,
) -> Result<(), BadRequest> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(BadRequest::TwoHosts);
    }
    if host.is_some_and(|h| !valid_host(h.as_bytes())) {
        return Err(BadRequest::BadHost);
    }
    // The authority that must become the Host header, if any.
    let replace_with = match (authority, host) {
        (Some(a), Some(h)) if a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) => None,
        (Some(_), Some(_)) if version == Version::HTTP_2 => return Err(BadRequest::HostMismatch),
        (Some(_), None) if version == Version::HTTP_11 => return Err(BadRequest::NoHost),
        (Some(a), _) => Some(a),
        (None, None) if version == Version::HTTP_11 => return Err(BadRequest::NoHost),
        (None, _) => None,
    };
    if let Some(authority) = replace_with {
        if !valid_host(authority.as_str().as_bytes()) {
            return Err(BadRequest::BadHost);
        }
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| BadRequest::BadHost)?;
        headers.insert(header::HOST, host);
    }
    // `Connection: Host` would make a proxy that honours it drop the Host: the app would get
    // a request without one (and a cache key would differ from what the app saw).
    if headers.contains_key(header::CONNECTION) && connection_has(headers, "host") {
        return Err(BadRequest::ConnectionNamesHost);
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let (Some(first), Some(_)) = (lengths.next(), lengths.next()) {
        let first = first.clone();
        if headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().trim_ascii() != first.as_bytes().trim_ascii())
        {
            return Err(BadRequest::ContentLength);
        }
        headers.insert(header::CONTENT_LENGTH, first);
    }
    Ok(())
}

/// `host[:port]` as RFC 9110 7.2 allows it: a registered name, an IPv4 address or a bracketed
/// IPv6 literal, an optional numeric port; no user info, no path, nothing empty. Checked in
/// place by hand: `http::uri::Authority::try_from` copied every request's Host to check it
/// (one allocation a request, tests/allocations.rs), and let through what this refuses (a
/// bracketed literal that is no IPv6 address).
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = std::str::from_utf8(&rest[..close]).ok();
            if literal.is_none_or(|l| l.parse::<std::net::Ipv6Addr>().is_err()) {
                return false;
            }
            match &rest[close + 1..] {
                [] => (&[][..], None),
                [b':', port @ ..] => (&[][..], Some(port)),
                _ => return false,
            }
        }
        None => match value.iter().rposition(|&b| b == b':') {
            Some(at) => (&value[..at], Some(&value[at + 1..])),
            None => (value, None),
        },
    };
    // A registered name or an IPv4 address: unreserved characters and sub-delimiters (RFC
    // 3986 3.2.2), no ':' (an IPv6 address goes in brackets), no '%' (as `http` refuses it).
    let name_ok = value.starts_with(b"[")
        || (!host.is_empty()
            && host.iter().all(|&b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
            }));
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .is_some()
    });
    name_ok && port_ok
}

/// True when the request asks for an HTTP/1.1 protocol upgrade (WebSocket and the like) to
/// one of `allowed` (lower-case protocol names, `websocket` by default): every protocol its
/// `Upgrade` header lists must be allowed. Any other upgrade (`h2c`, `foo/1`) is not one: the
/// request is forwarded as a plain request with its `Upgrade` header removed.
pub fn is_upgrade_request(version: Version, headers: &HeaderMap, allowed: &[String]) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && connection_has(headers, "upgrade")
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .all(|v| upgrade_allowed(v.as_bytes(), allowed))
}

fn upgrade_allowed(value: &[u8], allowed: &[String]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let mut any = false;
    for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        // `websocket`, or `name/version`: the name is what is configured.
        let name = token.split('/').next().unwrap_or(token).trim();
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
            return false;
        }
        any = true;
    }
    any
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes the hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`, every
/// `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, and `Upgrade` unless `upgrade` is set, in
/// which case `Upgrade` stays and `Connection: upgrade` is written back.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names (a handful) says which hop-by-hop headers are there, and only
    // those are removed: a hashed lookup per hop-by-hop name, present or not, twice per request
    // (request and response), was 2.5k of the 48k instructions a proxied request costs
    // (benches/instructions-per-request.sh).
    let mut present = Present::default();
    for name in headers.keys() {
        present.see(name);
    }
    if present.connection {
        // Names listed in Connection; allocates only when it names headers beyond the usual
        // keep-alive/close/upgrade tokens, which are handled below anyway.
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                if token.is_empty()
                    || token.eq_ignore_ascii_case("keep-alive")
                    || token.eq_ignore_ascii_case("close")
                    || token.eq_ignore_ascii_case("upgrade")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    if !kept_whatever_connection_says(&name) {
                        named.push(name);
                    }
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    if present.keep_alive {
        headers.remove(&KEEP_ALIVE);
    }
    if present.te {
        headers.remove(header::TE);
    }
    if present.trailer {
        headers.remove(header::TRAILER);
    }
    if present.transfer_encoding {
        headers.remove(header::TRANSFER_ENCODING);
    }
    // Proxy-Connection, Proxy-Authorization, Proxy-Authenticate and any other Proxy-*.
    if present.proxy {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_proxy_header(n))
            .cloned()
            .collect();
        for name in proxy {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present.upgrade {
        headers.remove(header::UPGRADE);
    }
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Which hop-by-hop headers a map holds, from one look at each name.
#[derive(Default)]
struct Present {
    connection: bool,
    keep_alive: bool,
    te: bool,
    trailer: bool,
    transfer_encoding: bool,
    upgrade: bool,
    proxy: bool,
}

impl Present {
    fn see(&mut self, name: &HeaderName) {
        if name == header::CONNECTION {
            self.connection = true;
        } else if name == header::TE {
            self.te = true;
        } else if name == header::TRAILER {
            self.trailer = true;
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == header::UPGRADE {
            self.upgrade = true;
        } else if name == KEEP_ALIVE {
            self.keep_alive = true;
        } else if is_proxy_header(name) {
            self.proxy = true;
        }
    }
}

/// Headers a `Connection` header may not take away: the ones every request and response needs
/// (Host, Content-Length) and the ones turnout itself reads or sets on the way (the
/// `X-Forwarded-*` family, `Forwarded`, `X-Real-IP`, `X-Request-Id`). Naming them there is
/// never a hop-by-hop header of the client's, only a way to make the app see a different
/// request than turnout routed and cached.
fn kept_whatever_connection_says(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::FORWARDED
        || name == X_FORWARDED_FOR
        || name == X_FORWARDED_PROTO
        || name == X_FORWARDED_HOST
        || name == X_REAL_IP
        || name == X_REQUEST_ID
}

fn is_proxy_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("proxy-")
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's `X-Request-Id`, set on its headers (so the app gets it) and returned: the one
/// a trusted proxy sent, when it is a plain token of at most 128 visible characters; otherwise
/// a new one, 32 hex digits of randomness (as nginx's `$request_id`). A client's own id is not
/// kept from anyone else: it would let a client put any text into the logs under another's id.
pub fn request_id(headers: &mut HeaderMap, trusted_peer: bool) -> HeaderValue {
    if trusted_peer {
        let mut sent = headers.get_all(&X_REQUEST_ID).iter();
        if let (Some(id), None) = (sent.next(), sent.next()) {
            let b = id.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
                return id.clone();
            }
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut text = [0u8; 32];
    for c in text.iter_mut() {
        *c = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    let id = cut_id(&text);
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

/// How many request ids one buffer holds.
const IDS_PER_BUFFER: usize = 32;

thread_local! {
    /// The buffer this thread cuts request ids from.
    static IDS: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::new(bytes::BytesMut::new());
}

/// `text` as a header value cut from this thread's buffer of ids: `HeaderValue::from_bytes`
/// copies into an allocation of its own on every request; slices of one shared buffer cost
/// two allocations per 32 ids. A buffer lives while any of its ids does (1 KiB at most for a
/// long-lived request's id).
fn cut_id(text: &[u8; 32]) -> HeaderValue {
    IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        if ids.capacity() < text.len() {
            *ids = bytes::BytesMut::with_capacity(text.len() * IDS_PER_BUFFER);
        }
        ids.extend_from_slice(text);
        let id = ids.split_to(text.len()).freeze();
        HeaderValue::from_maybe_shared(id).expect("hex digits are a valid header value")
    })
}

/// Appends the client's address to `X-Forwarded-For`, and sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (from `host`, the Host the client asked for). `Forwarded` and
/// `X-Real-IP` pass only from a `trusted_peer` (a proxy in `trusted_proxies`); from anyone
/// else they are dropped, since an app reading them would believe what the client made up.
/// (`X-Forwarded-For` is appended to, never dropped: its right-most address is always the one
/// turnout saw, and the load balancer's own entries stay for apps that trust it.)
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
    trusted_peer: bool,
) {
    if !trusted_peer {
        headers.remove(header::FORWARDED);
        headers.remove(&X_REAL_IP);
    }
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter();
    let xff = match prior.next() {
        None => client_ip.clone(),
        Some(first) => {
            let mut joined = first.as_bytes().to_vec();
            for value in prior.chain(std::iter::once(client_ip)) {
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(value.as_bytes());
            }
            HeaderValue::from_bytes(&joined).expect("joined header values stay valid")
        }
    };
    // Several X-Forwarded-For lines fold into one, in order.
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    match host {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

/// With a preview token configured, the token is turnout's secret, not the app's: the preview
/// header keeps only the pool's name, and the preview cookie is taken out of `Cookie`.
/// Allocates only for a request that carries either.
pub fn strip_preview_token(headers: &mut HeaderMap, header_name: &HeaderName, cookie: &str) {
    let pool = headers
        .get(header_name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(':'))
        .map(|(pool, _token)| pool.trim().to_owned());
    if let Some(pool) = pool {
        let pool = HeaderValue::try_from(pool).unwrap_or(HeaderValue::from_static(""));
        headers.insert(header_name.clone(), pool);
    }
    if !headers.get_all(header::COOKIE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(';').any(|pair| cookie_named(pair, cookie)))
    }) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .filter(|pair| !cookie_named(pair, cookie))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|v| !v.is_empty())
        .collect();
    headers.remove(header::COOKIE);
    for value in kept {
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.append(header::COOKIE, v);
        }
    }
}

fn cookie_named(pair: &str, name: &str) -> bool {
    pair.trim()
        .split_once('=')
        .is_some_and(|(n, _)| n.trim() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Uri;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn strips_every_hop_by_hop_header() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("host", "example.com"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-kept"]);
    }

    /// Each hop-by-hop header alone is found and removed; a map with none is left whole.
    #[test]
    fn each_hop_by_hop_header_alone_is_removed_and_others_kept() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = map(&[("host", "example.com"), (name, "x"), ("accept", "*/*")]);
            strip_hop_by_hop(&mut h, false);
            let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            left.sort_unstable();
            assert_eq!(left, ["accept", "host"], "{name}");
        }
        let mut h = map(&[
            ("host", "example.com"),
            ("keep-alive-x", "1"),
            ("proxyish", "1"),
        ]);
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }

    #[test]
    fn connection_never_takes_away_what_turnout_needs() {
        let mut h = map(&[
            (
                "connection",
                "Content-Length, X-Forwarded-For, x-request-id, Forwarded, X-Private",
            ),
            ("content-length", "3"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-request-id", "abc"),
            ("forwarded", "for=192.0.2.1"),
            ("x-private", "secret"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "content-length",
                "forwarded",
                "x-forwarded-for",
                "x-request-id"
            ]
        );
        for value in ["Host", "close, host", " HOST ,keep-alive"] {
            let mut h = map(&[("host", "example.com"), ("connection", value)]);
            assert_eq!(
                normalize_request(http::Version::HTTP_11, None, &mut h),
                Err(BadRequest::ConnectionNamesHost),
                "{value}"
            );
        }
        let mut h = map(&[("host", "example.com"), ("connection", "hostname, x-host")]);
        assert_eq!(
            normalize_request(http::Version::HTTP_11, None, &mut h),
            Ok(())
        );
    }

    #[test]
    fn upgrade_keeps_upgrade_and_rewrites_connection() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let ws = ["websocket".to_owned()];
        assert!(is_upgrade_request(http::Version::HTTP_11, &h, &ws));
        assert!(!is_upgrade_request(http::Version::HTTP_10, &h, &ws));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_headers_append_and_set() {
        let ip = HeaderValue::from_static("10.1.2.3");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        set_forwarded(
            &mut h,
            &ip,
            "http",
            Some(HeaderValue::from_static("shop.example")),
            false,
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &ip, "http", None, false);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert!(!h.contains_key("x-forwarded-host"));
    }

    fn normalized(
        version: Version,
        uri: &str,
        pairs: &[(&str, &str)],
    ) -> Result<HeaderMap, BadRequest> {
        let mut h = map(pairs);
        let uri: Uri = uri.parse().expect("uri");
        normalize_request(version, uri.authority(), &mut h).map(|()| h)
    }

    #[test]
    fn one_valid_host_or_400() {
        use BadRequest::*;
        let v11 = Version::HTTP_11;
        assert_eq!(normalized(v11, "/", &[]).err(), Some(NoHost));
        assert_eq!(
            normalized(v11, "/", &[("host", "a.example"), ("host", "b.example")]).err(),
            Some(TwoHosts)
        );
        for bad in [
            "a/b", "user@a", "", "a b", ":80", "a:port", "::1", "a:99999", "[zz]", "[::1",
            "[::1]x", "a%20b", "a:", "a:+80", "a\"b", "a{b}", "[::1]:", "a?b", "a#b",
        ] {
            assert_eq!(
                normalized(v11, "/", &[("host", bad)]).err(),
                Some(BadHost),
                "{bad:?}"
            );
        }
        for good in [
            "a.example",
            "a.example:8080",
            "10.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "localhost",
            "a.example:0",
            "x_y-z~1",
        ] {
            let h = normalized(v11, "/", &[("host", good)]).expect(good);
            assert_eq!(h["host"], good);
        }
        // HTTP/1.0 may leave it out.
        assert!(normalized(Version::HTTP_10, "/", &[]).is_ok());
        // An absolute-form target's authority with user info is refused (found by the fuzz
        // tier: "http://@0/" with "Host: a" forwarded "Host: @0").
        assert_eq!(
            normalized(Version::HTTP_10, "http://@0/", &[("host", "a")]).err(),
            Some(BadHost)
        );
        // An absolute-form target's authority replaces the Host header.
        let h = normalized(v11, "http://real.example/x", &[("host", "other.example")]).expect("ok");
        assert_eq!(h["host"], "real.example");
        // HTTP/2: :authority becomes the Host; a different Host header is refused.
        let h = normalized(Version::HTTP_2, "http://a.example/", &[]).expect("ok");
        assert_eq!(h["host"], "a.example");
        assert_eq!(
            normalized(
                Version::HTTP_2,
                "http://a.example/",
                &[("host", "b.example")]
            )
            .err(),
            Some(HostMismatch)
        );
        assert!(normalized(
            Version::HTTP_2,
            "http://a.example/",
            &[("host", "A.example")]
        )
        .is_ok());
    }

    #[test]
    fn content_lengths_fold_or_400() {
        let v2 = Version::HTTP_2;
        let h = normalized(
            v2,
            "http://a/",
            &[("content-length", "5"), ("content-length", "5")],
        )
        .expect("same values fold");
        assert_eq!(h.get_all("content-length").iter().count(), 1);
        assert_eq!(h["content-length"], "5");
        assert_eq!(
            normalized(
                v2,
                "http://a/",
                &[("content-length", "5"), ("content-length", "6")]
            )
            .err(),
            Some(BadRequest::ContentLength)
        );
    }

    #[test]
    fn only_allowed_upgrades() {
        let ws = ["websocket".to_owned()];
        let req = |up: &str| map(&[("connection", "upgrade"), ("upgrade", up)]);
        assert!(is_upgrade_request(Version::HTTP_11, &req("websocket"), &ws));
        assert!(is_upgrade_request(Version::HTTP_11, &req("WebSocket"), &ws));
        for other in ["h2c", "foo/1", "websocket, h2c", ""] {
            assert!(
                !is_upgrade_request(Version::HTTP_11, &req(other), &ws),
                "{other:?}"
            );
        }
        let more = ["websocket".to_owned(), "foo".to_owned()];
        assert!(is_upgrade_request(Version::HTTP_11, &req("foo/1"), &more));
    }

    #[test]
    fn request_ids_are_made_or_kept_from_trusted_peers_only() {
        let made = |h: &mut HeaderMap, trusted| {
            let id = request_id(h, trusted);
            assert_eq!(h["x-request-id"], id, "the app gets the same id");
            id
        };
        let a = made(&mut HeaderMap::new(), false);
        let b = made(&mut HeaderMap::new(), false);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit), "{a:?}");
        assert_ne!(a, b, "each request its own");
        let theirs = [("x-request-id", "alb-trace-123")];
        assert_eq!(made(&mut map(&theirs), true), "alb-trace-123");
        assert_ne!(made(&mut map(&theirs), false), "alb-trace-123");
        // Two ids, or one with spaces or too long, are replaced even from a trusted peer.
        let two = [("x-request-id", "a"), ("x-request-id", "b")];
        let mut h = map(&two);
        let id = made(&mut h, true);
        assert_eq!(
            (id.len(), h.get_all("x-request-id").iter().count()),
            (32, 1)
        );
        assert_eq!(made(&mut map(&[("x-request-id", "a b")]), true).len(), 32);
        let long = "x".repeat(129);
        assert_eq!(made(&mut map(&[("x-request-id", &long)]), true).len(), 32);
    }

    #[test]
    fn forwarded_and_real_ip_only_from_trusted_peers() {
        let ip = HeaderValue::from_static("10.1.2.3");
        let claims = [("forwarded", "for=1.2.3.4"), ("x-real-ip", "1.2.3.4")];
        let mut h = map(&claims);
        set_forwarded(&mut h, &ip, "http", None, false);
        assert!(!h.contains_key("forwarded") && !h.contains_key("x-real-ip"));
        let mut h = map(&claims);
        set_forwarded(&mut h, &ip, "http", None, true);
        assert_eq!(h["forwarded"], "for=1.2.3.4");
        assert_eq!(h["x-real-ip"], "1.2.3.4");
    }

    #[test]
    fn preview_token_stays_with_turnout() {
        let name = HeaderName::from_static("x-preview");
        let mut h = map(&[
            ("x-preview", "green:s3cret"),
            ("cookie", "a=1; turnout-preview=green:s3cret; b=2"),
            ("cookie", "turnout-preview=green:s3cret"),
        ]);
        strip_preview_token(&mut h, &name, "turnout-preview");
        assert_eq!(h["x-preview"], "green");
        let cookies: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
        // Nothing to take out: untouched.
        let mut h = map(&[("cookie", "a=1")]);
        strip_preview_token(&mut h, &name, "turnout-preview");
        assert_eq!(h["cookie"], "a=1");
    }
}
