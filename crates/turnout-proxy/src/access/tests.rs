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
    access.fields(&mut by_hand, status, route, elapsed);
    by_hand.push(b'\n');
    let by_hand = String::from_utf8(by_hand).expect("utf-8");
    let stamp = "2026-12-07T13:09:30.123456Z".len();
    (
        from_tracing[stamp..].to_owned(),
        by_hand[stamp..].to_owned(),
    )
}

fn same(access: &Access, status: StatusCode, route: &str, elapsed: Duration) -> String {
    let (from_tracing, by_hand) = both(access, status, route, elapsed);
    assert_eq!(by_hand, from_tracing);
    by_hand
}

#[test]
fn an_answered_request_is_written_as_the_fmt_layer_wrote_it() {
    let mut access = record("/orders/7?page=2", "10.0.1.20:51234");
    access.pool = Some(pool("green"));
    access.upstream = Some(ServerAddr::parse("127.0.0.1:4000").expect("addr"));
    access.request_id = Some(HeaderValue::from_static("5fcec82f0430c62e930868ce9ee3382a"));
    let line = same(&access, StatusCode::OK, "split", Duration::from_micros(412));
    assert_eq!(
        line,
        "  INFO turnout::access: method=GET path=/orders/7 status=200 pool=\"green\" route=\"split\" upstream=\"127.0.0.1:4000\" client=10.0.1.20:51234 request_id=\"5fcec82f0430c62e930868ce9ee3382a\" ms=0.412\n"
    );
}

#[test]
fn every_other_shape_matches_too() {
    // Refused before any pool: no pool, no upstream, no id; a long time.
    let refused = record("/", "127.0.0.1:9");
    same(
        &refused,
        StatusCode::BAD_REQUEST,
        "refused",
        Duration::from_secs(3723),
    );
    // Aborted, cached, over IPv6 with a scope-less address, a failure with its cause.
    let mut aborted = record("/assets/app.js", "[2001:db8::1]:443");
    aborted.pool = Some(pool("blue"));
    aborted.cache = Some("MISS");
    aborted.upstream = Some(ServerAddr::parse("https://127.0.0.1:4443").expect("addr"));
    aborted.error = Some(Box::new(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "the server hung up",
    )));
    same(
        &aborted,
        crate::error::CLIENT_CLOSED,
        "aborted",
        Duration::ZERO,
    );
    // An id from a trusted proxy with a quote and a backslash in it; a path with escapes.
    let mut odd = record("/a%22b/%5C/~x,y;z@!$&'()*+=?q=1", "[::1]:8080");
    odd.request_id = Some(HeaderValue::from_static("id-\"quoted\"-\\-{}"));
    odd.method = Method::from_bytes(b"PURGE").expect("method");
    let line = same(
        &odd,
        StatusCode::from_u16(599).expect("status"),
        "",
        Duration::from_nanos(999),
    );
    assert!(
        line.contains(r#"request_id="id-\"quoted\"-\\-{}""#),
        "{line}"
    );
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
