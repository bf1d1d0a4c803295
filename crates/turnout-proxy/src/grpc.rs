//! gRPC at the front door: a call is a request whose `content-type` is `application/grpc`
//! (or `application/grpc+proto`, ...). What turnout answers such a call itself (no healthy
//! server, a timeout, a limit, maintenance, a shed pause) it answers as gRPC does: HTTP 200,
//! `content-type: application/grpc`, the code in `grpc-status` and the reason in
//! `grpc-message`, with no body (a "trailers-only" answer), never an HTML page a gRPC client
//! cannot read. And the call's own deadline (`grpc-timeout`) bounds the wait for the app.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;

/// Whether `headers` are a gRPC call's.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_type(v.as_bytes()))
}

fn is_grpc_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// The gRPC code for an HTTP status turnout answered with (the mapping of gRPC's
/// "HTTP to gRPC status code mapping", sharpened where turnout knows more: a timeout is
/// DEADLINE_EXCEEDED, a limit RESOURCE_EXHAUSTED).
fn code_for(status: StatusCode) -> u8 {
    match status.as_u16() {
        // UNAVAILABLE: no healthy server, maintenance, a shed pause, a failed forward.
        502 | 503 => 14,
        // DEADLINE_EXCEEDED: no response head in time; a request head or body too slow.
        504 | 408 => 4,
        // RESOURCE_EXHAUSTED: a [limits] rate or count, a body or head over its bound.
        429 | 413 | 431 => 8,
        401 => 16,
        403 => 7,
        404 => 12,
        400 => 13,
        _ => 2,
    }
}

/// `resp`, an answer turnout made itself to a gRPC call, as gRPC says it: HTTP 200 with the
/// code and a message naming turnout, the status and `route` (why), headers kept but for the
/// body's own.
pub(crate) fn answer_as_grpc(resp: Response<ProxyBody>, route: &str) -> Response<ProxyBody> {
    let (mut parts, _) = resp.into_parts();
    let status = parts.status;
    let code = code_for(status);
    let mut message = format!(
        "turnout: {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if !route.is_empty() {
        message.push_str(" (");
        message.push_str(route);
        message.push(')');
    }
    parts.status = StatusCode::OK;
    let h = &mut parts.headers;
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_LANGUAGE,
        header::VARY,
    ] {
        h.remove(name);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(GRPC_STATUS.clone(), HeaderValue::from(u16::from(code)));
    // ASCII, no control characters, no '%': nothing to percent-encode.
    if let Ok(value) = HeaderValue::try_from(message) {
        h.insert(GRPC_MESSAGE.clone(), value);
    }
    Response::from_parts(parts, ProxyBody::from_static(""))
}

static GRPC_STATUS: header::HeaderName = header::HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: header::HeaderName = header::HeaderName::from_static("grpc-message");
static GRPC_TIMEOUT: header::HeaderName = header::HeaderName::from_static("grpc-timeout");

/// `grpc-status` in `headers` (a call's trailers, or a trailers-only head), when it is a
/// number gRPC defines (0 to 16).
pub(crate) fn status_of(headers: &HeaderMap) -> Option<u16> {
    let value = headers.get(&GRPC_STATUS)?.as_bytes();
    // Decimal digits only (`u16::from_str` would also take a sign).
    if value.is_empty() || value.len() > 2 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value)
        .ok()?
        .parse()
        .ok()
        .filter(|c| *c <= 16)
}

/// The gRPC codes that say the server failed, not the call: they count as errors in a pool's
/// figures (as 5xx do): UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS. The
/// others (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, ...) are the caller's.
pub(crate) fn is_server_fault(code: u16) -> bool {
    matches!(code, 2 | 4 | 13 | 14 | 15)
}

/// The call's deadline, from `grpc-timeout` (gRPC's form: at most 8 digits and a unit, `H`
/// `M` `S` `m` `u` `n`); `None` when there is none or it is malformed (then the usual
/// `response_timeout` applies alone).
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    // A static name: a `&str` key would be parsed into a header name on every request.
    let value = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        for (value, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC+json", true),
            ("application/grpc; charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpcx", false),
            ("application/json", false),
            ("application/gr", false),
            ("", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_grpc(&h), grpc, "{value:?}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeouts_parse_as_grpc_writes_them_and_misuse_is_ignored() {
        let parse = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_str(v).expect("value"));
            grpc_timeout(&h)
        };
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse("1u"), Some(Duration::from_micros(1)));
        // More than 8 digits, no digits, a sign, a space, an unknown unit, no unit: ignored.
        for bad in [
            "123456789S",
            "S",
            "-5S",
            "+5S",
            "5 S",
            "5s",
            "5",
            "",
            "5SS",
            "1.5S",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // The largest allowed values do not overflow.
        assert_eq!(
            parse("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    /// `grpc-status` as the app wrote it; anything else (a forged or broken value) is no
    /// status at all, never a wrong one.
    #[test]
    fn grpc_statuses_are_read_strictly() {
        let read = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-status", HeaderValue::from_str(v).expect("value"));
            status_of(&h)
        };
        assert_eq!(read("0"), Some(0));
        assert_eq!(read("14"), Some(14));
        assert_eq!(read("16"), Some(16));
        for bad in [
            "17",
            "999",
            "-1",
            "+1",
            " 1",
            "1 ",
            "OK",
            "",
            "99999999999999999999",
        ] {
            assert_eq!(read(bad), None, "{bad:?}");
        }
        assert_eq!(status_of(&HeaderMap::new()), None);
        assert!(is_server_fault(14) && is_server_fault(13) && is_server_fault(2));
        assert!(!is_server_fault(0) && !is_server_fault(5) && !is_server_fault(3));
    }

    #[test]
    fn turnouts_own_answers_become_grpc_statuses() {
        for (status, code) in [
            (StatusCode::SERVICE_UNAVAILABLE, "14"),
            (StatusCode::BAD_GATEWAY, "14"),
            (StatusCode::GATEWAY_TIMEOUT, "4"),
            (StatusCode::TOO_MANY_REQUESTS, "8"),
            (StatusCode::UNAUTHORIZED, "16"),
            (StatusCode::IM_A_TEAPOT, "2"),
        ] {
            let mut resp = crate::error::text_response(status, "nope\n");
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            let resp = answer_as_grpc(resp, "maintenance");
            assert_eq!(resp.status(), StatusCode::OK);
            let h = resp.headers();
            assert_eq!(h["content-type"], "application/grpc");
            assert_eq!(h["grpc-status"], code, "{status}");
            let message = h["grpc-message"].to_str().expect("ascii");
            assert!(
                message.starts_with(&format!("turnout: {}", status.as_u16())),
                "{message}"
            );
            assert!(message.ends_with("(maintenance)"), "{message}");
            assert_eq!(h["retry-after"], "1");
            assert!(!h.contains_key("content-length"));
        }
    }
}
