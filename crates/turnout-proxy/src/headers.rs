//! Header hygiene at the proxy boundary: hop-by-hop headers removed in both directions (RFC 9110
//! 7.6.1), `X-Forwarded-*` set on the way in. `Host` is never touched.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// True when the request asks for an HTTP/1.1 protocol upgrade (WebSocket and the like).
pub fn is_upgrade_request(version: http::Version, headers: &HeaderMap) -> bool {
    version == http::Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && connection_has(headers, "upgrade")
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
    if headers.contains_key(header::CONNECTION) {
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
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    // Proxy-Connection, Proxy-Authorization, Proxy-Authenticate and any other Proxy-*.
    if headers.keys().any(is_proxy_header) {
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
    } else {
        headers.remove(header::UPGRADE);
    }
}

fn is_proxy_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("proxy-")
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Appends the client's address to `X-Forwarded-For`, and sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (from `host`, the Host the client asked for).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn upgrade_keeps_upgrade_and_rewrites_connection() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(http::Version::HTTP_11, &h));
        assert!(!is_upgrade_request(http::Version::HTTP_10, &h));
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
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &ip, "http", None);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert!(!h.contains_key("x-forwarded-host"));
    }
}
