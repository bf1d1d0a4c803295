//! The fuzzing tier for the request path: property tests (proptest, stable Rust, a bounded
//! number of cases) of what a client controls: the request head's headers, the static-file
//! path. Whatever comes in, nothing panics, what goes upstream holds no hop-by-hop header and one
//! Host at most, and no path leaves a static root.

use std::path::Component;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Version;
use proptest::prelude::*;

use crate::headers::{normalize_request, set_forwarded, strip_hop_by_hop};

/// Header names a client might send, the dangerous ones over-represented.
fn name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        Just("host"),
        Just("content-length"),
        Just("connection"),
        Just("upgrade"),
        Just("transfer-encoding"),
        Just("te"),
        Just("trailer"),
        Just("keep-alive"),
        Just("proxy-authorization"),
        Just("x-forwarded-for"),
        Just("forwarded"),
        Just("x-real-ip"),
        Just("x-custom"),
        Just("cookie"),
    ]
    .prop_map(HeaderName::from_static)
}

/// Values: printable text with the separators that matter (`,`, `:`, `@`, `/`, spaces).
fn value() -> impl Strategy<Value = HeaderValue> {
    "[ -~]{0,40}".prop_map(|v| HeaderValue::from_str(&v).expect("printable ASCII is a value"))
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec((name(), value()), 0..12).prop_map(|pairs| {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(n, v);
        }
        h
    })
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        Just(Version::HTTP_10),
        Just(Version::HTTP_11),
        Just(Version::HTTP_2)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn a_normalized_request_has_one_host_and_one_length(
        version in version(),
        authority in proptest::option::of("[a-z0-9.:@\\[\\]-]{0,20}"),
        mut h in headers(),
    ) {
        let authority = authority.and_then(|a| a.parse::<http::uri::Authority>().ok());
        if normalize_request(version, authority.as_ref(), &mut h).is_ok() {
            prop_assert!(h.get_all("host").iter().count() <= 1);
            prop_assert!(h.get_all("content-length").iter().count() <= 1);
            if version == Version::HTTP_11 {
                prop_assert_eq!(h.get_all("host").iter().count(), 1);
            }
            if let Some(host) = h.get("host") {
                prop_assert!(!host.as_bytes().contains(&b'@') && !host.as_bytes().contains(&b'/'));
            }
        }
    }

    #[test]
    fn nothing_hop_by_hop_goes_upstream(mut h in headers(), trusted in any::<bool>()) {
        let listed: Vec<HeaderName> = h
            .get_all("connection")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        strip_hop_by_hop(&mut h, false);
        set_forwarded(&mut h, &HeaderValue::from_static("192.0.2.1"), "http", None, trusted);
        for gone in ["connection", "upgrade", "transfer-encoding", "te", "trailer", "keep-alive", "proxy-authorization"] {
            prop_assert!(!h.contains_key(gone), "{gone} left");
        }
        for n in listed {
            if n != "x-forwarded-for" && n != "x-forwarded-proto" {
                prop_assert!(!h.contains_key(&n), "{n}, named in Connection, left");
            }
        }
        prop_assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        let xff = h["x-forwarded-for"].to_str().unwrap_or_default().to_owned();
        prop_assert!(xff.ends_with("192.0.2.1"), "{}", xff);
        if !trusted {
            prop_assert!(!h.contains_key("forwarded") && !h.contains_key("x-real-ip"));
        }
    }

    /// Whatever the (percent-encoded) path, a static file's path is plain names under its root.
    #[test]
    fn no_path_leaves_a_static_root(rest in "([a-z.]{0,4}|%2[eEfF]|%5[cC]|%00|\\.\\.|/|\\\\){0,12}") {
        if let Ok(path) = crate::local::files::relative_path(&rest) {
            prop_assert!(path.components().all(|c| matches!(c, Component::Normal(n) if n != "..")), "{}", path.display());
        }
    }
}
