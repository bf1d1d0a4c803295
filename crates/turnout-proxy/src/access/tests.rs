//! The access line written by hand against the one `tracing_subscriber::fmt` writes for the
//! same record, byte for byte, for every shape a line takes.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, StatusCode};
use turnout_config::{PoolName, ServerAddr};
use turnout_core::{Metrics, Pool, PoolCookies, PoolSettings};

use super::{line, Access};

fn pool(name: &str) -> Arc<Pool> {
    Arc::new(Pool::new(
        PoolName::parse(name).expect("name"),
        Vec::new(),
        Arc::new(PoolSettings::default()),
        Metrics::new().pool(name),
        None,
        PoolCookies {
            sticky: HeaderValue::from_static("turnout-pool=x"),
            preview: None,
            version: None,
        },
    ))
}

fn record(target: &str, client: &str) -> Access {
    let req = http::Request::get(target).body(()).expect("a request");
    let down = crate::downstream::Downstream::new(client.parse().expect("an address"), false);
    Access::begin(&req, &down)
}

/// A writer the fmt layer fills, for the test to read.
#[derive(Clone, Default)]
struct Shelf(Arc<Mutex<Vec<u8>>>);

impl io::Write for Shelf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The line the `tracing` event makes, and the one written by hand, each without its
/// timestamp (the two were taken at different instants).
fn both(access: &Access, status: StatusCode, route: &str, elapsed: Duration) -> (String, String) {
    let shelf = Shelf::default();
    let writer = shelf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || access.event(status, route, elapsed));
    let from_tracing = String::from_utf8(shelf.0.lock().expect("lock").clone()).expect("utf-8");

    let mut by_hand = Vec::new();
    line::prefix(&mut by_hand, SystemTime::now());
    access.fields(&mut line::Text(&mut by_hand), status, route, elapsed);
    by_hand.push(b'\n');
    let by_hand = String::from_utf8(by_hand).expect("utf-8");
    let stamp = "2026-12-07T13:09:30.123456Z".len();
    (
        from_tracing[stamp..].to_owned(),
        by_hand[stamp..].to_owned(),
    )
}

/// The JSON line written by hand, and the one `tracing_subscriber`'s JSON formatter writes for
/// the event (as every other line is written with `[log] format = "json"`), each parsed.
fn both_json(
    access: &Access,
    status: StatusCode,
    route: &str,
    elapsed: Duration,
) -> (serde_json::Value, serde_json::Value, String) {
    let shelf = Shelf::default();
    let writer = shelf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || access.event(status, route, elapsed));
    let from_tracing = String::from_utf8(shelf.0.lock().expect("lock").clone()).expect("utf-8");

    let mut by_hand = Vec::new();
    line::json_begin(&mut by_hand, SystemTime::now());
    access.fields(&mut line::Json(&mut by_hand), status, route, elapsed);
    line::json_end(&mut by_hand);
    let by_hand = String::from_utf8(by_hand).expect("utf-8");
    assert!(
        by_hand.ends_with("}\n") && by_hand.matches('\n').count() == 1,
        "{by_hand}"
    );
    let parse = |text: &str| -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (parse(&from_tracing), parse(&by_hand), by_hand)
}

/// The JSON line has exactly the fields tracing's JSON formatter gives the event, with the same
/// values, but for `ms`, a number here (a string there: the event displays it) and the
/// timestamp (taken at another instant, in the same form).
fn same_json(
    access: &Access,
    status: StatusCode,
    route: &str,
    elapsed: Duration,
) -> serde_json::Value {
    let (mut from_tracing, mut by_hand, text) = both_json(access, status, route, elapsed);
    let ms = by_hand["ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("ms is a number: {text}"));
    assert_eq!(ms.to_string().parse::<f64>().ok(), Some(ms));
    assert_eq!(
        from_tracing["ms"]
            .as_str()
            .map(str::parse::<f64>)
            .and_then(Result::ok),
        Some(ms)
    );
    for stamp in [&by_hand["timestamp"], &from_tracing["timestamp"]] {
        let stamp = stamp.as_str().expect("a timestamp");
        assert_eq!(stamp.len(), "2026-12-07T13:09:30.123456Z".len(), "{stamp}");
        humantime::parse_rfc3339(stamp).expect("RFC 3339");
    }
    for v in [&mut from_tracing, &mut by_hand] {
        let map = v.as_object_mut().expect("an object");
        map.remove("ms");
        map.remove("timestamp");
    }
    assert_eq!(by_hand, from_tracing, "{text}");
    by_hand
}

fn same(access: &Access, status: StatusCode, route: &str, elapsed: Duration) -> String {
    let (from_tracing, by_hand) = both(access, status, route, elapsed);
    assert_eq!(by_hand, from_tracing);
    by_hand
}

/// Every shape a line takes: the record, its status, route and time. The error text has what
/// JSON must escape (quotes, a backslash, a newline, a tab, a control character) and UTF-8
/// that passes as it is.
fn shapes() -> Vec<(Access, StatusCode, &'static str, Duration)> {
    // Answered: a pool, a server, an id.
    let mut answered = record("/orders/7?page=2", "10.0.1.20:51234");
    answered.pool = Some(pool("green"));
    answered.upstream = Some(ServerAddr::parse("127.0.0.1:4000").expect("addr"));
    answered.request_id = Some(HeaderValue::from_static("5fcec82f0430c62e930868ce9ee3382a"));
    // Refused before any pool: no pool, no upstream, no id; a long time.
    let refused = record("/", "127.0.0.1:9");
    // Aborted, cached, over IPv6 with a scope-less address, a failure with its cause.
    let mut aborted = record("/assets/app.js", "[2001:db8::1]:443");
    aborted.pool = Some(pool("blue"));
    aborted.cache = Some("MISS");
    aborted.upstream = Some(ServerAddr::parse("https://127.0.0.1:4443").expect("addr"));
    aborted.error = Some(Box::new(io::Error::new(
        io::ErrorKind::ConnectionReset,
        ODD_ERROR,
    )));
    // An id from a trusted proxy with a quote and a backslash in it; a path with escapes.
    let mut odd = record("/a%22b/%5C/~x,y;z@!$&'()*+=?q=1", "[::1]:8080");
    odd.request_id = Some(HeaderValue::from_static(ODD_ID));
    odd.method = Method::from_bytes(b"PURGE").expect("method");
    // A gRPC call the app ended with UNAVAILABLE (HTTP 200), logged when it ended.
    let mut call = record("/shop.Orders/Get", "10.0.1.21:40000");
    call.pool = Some(pool("green"));
    call.grpc_status = 14;
    vec![
        (
            answered,
            StatusCode::OK,
            "split",
            Duration::from_micros(412),
        ),
        (
            refused,
            StatusCode::BAD_REQUEST,
            "refused",
            Duration::from_secs(3723),
        ),
        (
            aborted,
            crate::error::CLIENT_CLOSED,
            "aborted",
            Duration::ZERO,
        ),
        (
            odd,
            StatusCode::from_u16(599).expect("status"),
            "",
            Duration::from_nanos(999),
        ),
        (call, StatusCode::OK, "split", Duration::from_millis(1500)),
    ]
}

const ODD_ERROR: &str = "the \"server\" hung up\\\n\tat \u{1} \u{e9}t\u{e9}";
const ODD_ID: &str = "id-\"quoted\"-\\-{}";

#[test]
fn every_shape_is_written_as_the_fmt_layer_wrote_it() {
    let lines: Vec<String> = shapes()
        .iter()
        .map(|(access, status, route, elapsed)| same(access, *status, route, *elapsed))
        .collect();
    assert_eq!(
        lines[0],
        "  INFO turnout::access: method=GET path=/orders/7 status=200 pool=\"green\" route=\"split\" upstream=\"127.0.0.1:4000\" client=10.0.1.20:51234 request_id=\"5fcec82f0430c62e930868ce9ee3382a\" ms=0.412\n"
    );
    assert!(
        lines[3].contains(r#"request_id="id-\"quoted\"-\\-{}""#),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].contains(" status=200 grpc_status=14 pool=\"green\""),
        "{}",
        lines[4]
    );
}

/// `[log] format = "json"`: every shape of line is one JSON object with the text line's fields.
#[test]
fn json_lines_carry_the_same_fields_for_every_shape() {
    let lines: Vec<serde_json::Value> = shapes()
        .iter()
        .map(|(access, status, route, elapsed)| same_json(access, *status, route, *elapsed))
        .collect();
    assert_eq!(
        lines[0],
        serde_json::json!({
            "level": "INFO", "target": "turnout::access", "method": "GET", "path": "/orders/7",
            "status": 200, "pool": "green", "route": "split", "upstream": "127.0.0.1:4000",
            "client": "10.0.1.20:51234", "request_id": "5fcec82f0430c62e930868ce9ee3382a",
        })
    );
    assert_eq!(lines[2]["status"], 499);
    assert_eq!(lines[2]["client"], "[2001:db8::1]:443");
    assert!(
        lines[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains(ODD_ERROR)),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3]["request_id"], ODD_ID);
    assert_eq!(lines[3]["path"], "/a%22b/%5C/~x,y;z@!$&'()*+=");
    assert_eq!(lines[4]["grpc_status"], 14);
}

#[test]
fn the_timestamp_is_rfc3339_in_microseconds_across_seconds() {
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_650_170);
    for offset_us in [0u64, 999_999, 1_000_000, 1_000_001, 86_400_000_000 + 5] {
        let at = base + Duration::from_micros(offset_us);
        let mut out = Vec::new();
        line::prefix(&mut out, at);
        let text = String::from_utf8(out).expect("utf-8");
        let expected = humantime::format_rfc3339_micros(at).to_string();
        assert_eq!(&text[..expected.len()], expected, "at +{offset_us} us");
    }
}

/// The fallback event's `Millis` and the line's `millis` show the same three decimals.
#[test]
fn millis_have_three_decimals() {
    let shown = |d| super::Millis(d).to_string();
    let by_hand = |d| {
        let mut out = Vec::new();
        line::millis(&mut out, "ms", d);
        String::from_utf8(out).expect("utf-8")
    };
    for (d, text) in [
        (Duration::from_micros(0), "0.000"),
        (Duration::from_micros(1_234_567), "1234.567"),
        (Duration::from_nanos(45_999), "0.045"),
    ] {
        assert_eq!(shown(d), text);
        assert_eq!(by_hand(d), format!(" ms={text}"));
    }
}
