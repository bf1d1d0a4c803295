//! The access line's bytes, and where they go: written straight into the log writer's buffer
//! for this thread, with integers through `itoa`, strings copied as they are (quoted as `Debug`
//! quotes them), and the timestamp's date and time formatted once per second per thread.
//!
//! By hand rather than through a `tracing` event: the event's dispatch into the fmt layer, its
//! field visitor and `core::fmt` for every field were 6.9% of the proxy's CPU under load with
//! the access log on (perf, issue 29). The line is the one `tracing_subscriber::fmt` wrote (a
//! test compares the two byte for byte); `tracing`'s filter still decides whether it is written
//! (`RUST_LOG=info,turnout::access=off`). Without a [`AccessSink`] (a library user, a test) the
//! line goes out as the `tracing` event it used to be.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// Where access lines go: the binary's log writer.
pub trait AccessSink: Send + Sync + 'static {
    /// Appends one line to this thread's pending output; `fill` writes it, newline included.
    fn append(&self, fill: &mut dyn FnMut(&mut Vec<u8>));
}

static SINK: OnceLock<Box<dyn AccessSink>> = OnceLock::new();

/// Sends every access line of this process to `sink` from now on. The first call wins (as a
/// global `tracing` subscriber does); `false` if a sink was set already.
pub fn set_access_sink(sink: Box<dyn AccessSink>) -> bool {
    SINK.set(sink).is_ok()
}

pub(super) fn sink() -> Option<&'static dyn AccessSink> {
    SINK.get().map(Box::as_ref)
}

/// What `tracing_subscriber::fmt` writes between the timestamp and the fields (each field
/// brings its own leading space).
const LEVEL_AND_TARGET: &[u8] = b"  INFO turnout::access:";

thread_local! {
    /// The second the date and time below were formatted for, and `YYYY-MM-DDTHH:MM:SS.`.
    static SECOND: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// `2026-12-07T13:09:30.123456Z  INFO turnout::access:` for `now`, as tracing's fmt layer
/// writes it (RFC 3339, microseconds, UTC).
pub(super) fn prefix(out: &mut Vec<u8>, now: SystemTime) {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            // "2026-12-07T13:09:30Z": keep all but the Z, then the decimal point.
            let mut formatted = [0u8; 20];
            let mut cursor = std::io::Cursor::new(&mut formatted[..]);
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            // Years past 9999 do not fit; the line keeps whatever was written.
            let _ = write!(cursor, "{}", humantime::format_rfc3339_seconds(at));
            formatted[19] = b'.';
            *text = formatted;
            *second = secs;
        }
        out.extend_from_slice(text);
    });
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
    out.extend_from_slice(LEVEL_AND_TARGET);
}

/// ` key=value` with `value` as `Debug` shows a string: in double quotes, escaped.
pub(super) fn quoted(out: &mut Vec<u8>, key: &str, value: &str) {
    field(out, key);
    // Names, addresses and ids are printable ASCII with no quote or backslash; anything else
    // takes `Debug`'s own escaping.
    if value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// ` key=value` with `value` written as it is (a `Display` field).
pub(super) fn raw(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    field(out, key);
    out.extend_from_slice(value);
}

/// ` key=N`.
pub(super) fn number(out: &mut Vec<u8>, key: &str, value: u64) {
    field(out, key);
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// ` key=ADDRESS:PORT`, as `SocketAddr` displays it.
pub(super) fn address(out: &mut Vec<u8>, key: &str, addr: &SocketAddr) {
    field(out, key);
    match addr {
        SocketAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(n.format(*octet).as_bytes());
            }
            out.push(b':');
            out.extend_from_slice(n.format(v4.port()).as_bytes());
        }
        // IPv6's shortest form (the longest run of zeros elided) is left to `Display`.
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// ` key=MS.mmm`: a duration in milliseconds with three decimals, from whole microseconds.
pub(super) fn millis(out: &mut Vec<u8>, key: &str, elapsed: Duration) {
    field(out, key);
    let us = elapsed.as_micros();
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(n.format(us / 1000).as_bytes());
    out.push(b'.');
    let frac = (us % 1000) as u16;
    out.extend_from_slice(&[
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// ` key=`.
fn field(out: &mut Vec<u8>, key: &str) {
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
}
