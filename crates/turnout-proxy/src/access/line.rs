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
//!
//! Two formats ([`Fields`]), as `[log] format` chooses: [`Text`], the key=value line, and
//! [`Json`], one object per line with the same fields (strings escaped as JSON requires,
//! `status` and `ms` as numbers), its `timestamp`, `level` and `target` as
//! `tracing_subscriber`'s JSON formatter writes them for every other line.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use turnout_config::LogFormat;

/// Where access lines go: the binary's log writer.
pub trait AccessSink: Send + Sync + 'static {
    /// Appends one line to this thread's pending output; `fill` writes it, newline included.
    fn append(&self, fill: &mut dyn FnMut(&mut Vec<u8>));
}

static SINK: OnceLock<(Box<dyn AccessSink>, LogFormat)> = OnceLock::new();

/// Sends every access line of this process to `sink` from now on, written in `format`. The
/// first call wins (as a global `tracing` subscriber does); `false` if a sink was set already.
pub fn set_access_sink(sink: Box<dyn AccessSink>, format: LogFormat) -> bool {
    SINK.set((sink, format)).is_ok()
}

pub(super) fn sink() -> Option<(&'static dyn AccessSink, LogFormat)> {
    SINK.get().map(|(sink, format)| (sink.as_ref(), *format))
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
    timestamp(out, now);
    out.extend_from_slice(LEVEL_AND_TARGET);
}

/// `2026-12-07T13:09:30.123456Z` for `now`.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
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
}

/// `{"timestamp":"...","level":"INFO"`: a JSON line's opening, as `tracing_subscriber`'s
/// JSON formatter begins every other line; [`json_end`] closes it.
pub(super) fn json_begin(out: &mut Vec<u8>, now: SystemTime) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out, now);
    out.extend_from_slice(b"\",\"level\":\"INFO\"");
}

/// `,"target":"turnout::access"}` and the newline.
pub(super) fn json_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"target\":\"turnout::access\"}\n");
}

/// How one field of the line is written: [`Text`] or [`Json`].
pub(super) trait Fields {
    /// A string field; `quoted` in the text format (as a `Debug` field), else as it is.
    fn string(&mut self, key: &str, value: &str, quoted: bool);
    /// A whole number.
    fn number(&mut self, key: &str, value: u64);
    /// An address and port.
    fn address(&mut self, key: &str, addr: &SocketAddr);
    /// Milliseconds with three decimals.
    fn millis(&mut self, key: &str, elapsed: Duration);
    /// Anything else, as it displays (an error's chain).
    fn display(&mut self, key: &str, value: &dyn std::fmt::Display);
}

/// The key=value line.
pub(super) struct Text<'a>(pub &'a mut Vec<u8>);

impl Fields for Text<'_> {
    fn string(&mut self, key: &str, value: &str, quoted_: bool) {
        if quoted_ {
            quoted(self.0, key, value);
        } else {
            raw(self.0, key, value.as_bytes());
        }
    }
    fn number(&mut self, key: &str, value: u64) {
        number(self.0, key, value);
    }
    fn address(&mut self, key: &str, addr: &SocketAddr) {
        address(self.0, key, addr);
    }
    fn millis(&mut self, key: &str, elapsed: Duration) {
        millis(self.0, key, elapsed);
    }
    fn display(&mut self, key: &str, value: &dyn std::fmt::Display) {
        raw(self.0, key, b"");
        let _ = write!(self.0, "{value}");
    }
}

/// The JSON object's fields, each after a comma (the object is opened by [`json_begin`]).
pub(super) struct Json<'a>(pub &'a mut Vec<u8>);

impl Json<'_> {
    fn key(&mut self, key: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }
}

impl Fields for Json<'_> {
    fn string(&mut self, key: &str, value: &str, _quoted: bool) {
        self.key(key);
        json_string(self.0, value);
    }
    fn number(&mut self, key: &str, value: u64) {
        self.key(key);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
    fn address(&mut self, key: &str, addr: &SocketAddr) {
        self.key(key);
        // An address has no character JSON escapes.
        self.0.push(b'"');
        address_value(self.0, addr);
        self.0.push(b'"');
    }
    fn millis(&mut self, key: &str, elapsed: Duration) {
        // A JSON number: digits, a point, three digits.
        self.key(key);
        millis_value(self.0, elapsed);
    }
    fn display(&mut self, key: &str, value: &dyn std::fmt::Display) {
        self.key(key);
        self.0.push(b'"');
        let _ = std::fmt::Write::write_fmt(&mut JsonEscaped(self.0), format_args!("{value}"));
        self.0.push(b'"');
    }
}

/// `value` as a JSON string, quotes included.
fn json_string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let _ = std::fmt::Write::write_str(&mut JsonEscaped(out), value);
    out.push(b'"');
}

/// Writes what it is given escaped for the inside of a JSON string: `"` and `\\` and the
/// control characters, which are all JSON requires (UTF-8 passes as it is).
struct JsonEscaped<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f => b"",
                _ => continue,
            };
            self.0.extend_from_slice(&s.as_bytes()[plain..i]);
            plain = i + 1;
            if escape.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.0.extend_from_slice(b"\\u00");
                self.0.push(HEX[usize::from(b >> 4)]);
                self.0.push(HEX[usize::from(b & 0xf)]);
            } else {
                self.0.extend_from_slice(escape);
            }
        }
        self.0.extend_from_slice(&s.as_bytes()[plain..]);
        Ok(())
    }
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
    address_value(out, addr);
}

/// `ADDRESS:PORT`, as `SocketAddr` displays it.
fn address_value(out: &mut Vec<u8>, addr: &SocketAddr) {
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
    millis_value(out, elapsed);
}

/// `MS.mmm`.
fn millis_value(out: &mut Vec<u8>, elapsed: Duration) {
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
