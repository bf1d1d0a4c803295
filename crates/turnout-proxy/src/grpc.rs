//! gRPC at the front door: a call is a request whose `content-type` is `application/grpc`
//! (or `application/grpc+proto`, ...). What turnout answers such a call itself (no healthy
//! server, a timeout, a limit, maintenance, a shed pause) it answers as gRPC does: HTTP 200,
//! `content-type: application/grpc`, the code in `grpc-status` and the reason in
//! `grpc-message`, with no body (a "trailers-only" answer), never an HTML page a gRPC client
//! cannot read. And the call's own deadline (`grpc-timeout`) bounds the call: the wait for
//! the app's answer, and then its stream ([`Cut`]), which also ends, with a status the client
//! may retry on, when the call's pool is asked to close its long calls (a switch's
//! `close_tunnels_after`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
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
pub(crate) static GRPC_MESSAGE: header::HeaderName =
    header::HeaderName::from_static("grpc-message");
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

/// Why turnout ended a gRPC call's stream from the app: the code and message of the
/// trailers it sends the client in the app's stead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CutReason {
    /// The call's `grpc-timeout` passed: DEADLINE_EXCEEDED.
    Deadline,
    /// The pool was switched away from and its long calls closed (`close_tunnels_after`):
    /// UNAVAILABLE, which a client may retry (and the retry goes to the live pool).
    Closing,
}

impl CutReason {
    fn trailers(self) -> HeaderMap {
        let (code, message) = match self {
            CutReason::Deadline => (4u16, "turnout: the call's deadline (grpc-timeout) passed"),
            CutReason::Closing => (
                14,
                "turnout: the call's pool was switched away from and its streams closed \
                 (close_tunnels_after); call again",
            ),
        };
        let mut trailers = HeaderMap::with_capacity(2);
        trailers.insert(GRPC_STATUS.clone(), HeaderValue::from(code));
        trailers.insert(GRPC_MESSAGE.clone(), HeaderValue::from_static(message));
        trailers
    }
}

/// A gRPC call's stream from the app, ended by turnout (trailers in the app's stead, the
/// app's stream reset) at its `deadline` or once its pool's long calls are asked to close
/// (`closing`); always between two messages, never inside one, so the client reads every
/// message it got whole and then a status.
pub(crate) struct Cut {
    body: ProxyBody,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    closing: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    frames: Frames,
    reason: Option<CutReason>,
    done: bool,
}

impl std::fmt::Debug for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cut")
            .field("body", &self.body)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// `resp`, the app's answer to a gRPC call, ended by turnout at `deadline` or once
/// `closing` changes (see [`Cut`]); as it is when its stream has already ended (a
/// trailers-only answer).
pub(crate) fn cut(
    resp: Response<ProxyBody>,
    deadline: Option<tokio::time::Instant>,
    mut closing: tokio::sync::watch::Receiver<u64>,
) -> Response<ProxyBody> {
    if http_body::Body::is_end_stream(resp.body()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let cut = Cut {
        body,
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        closing: Some(Box::pin(async move {
            // A dropped sender (the pool is gone) closes nothing.
            if closing.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        })),
        frames: Frames::default(),
        reason: None,
        done: false,
    };
    Response::from_parts(parts, ProxyBody::wrapped(cut))
}

impl crate::body::Wrapper for Cut {
    fn mark_connection_busy(&mut self, busy: crate::downstream::Busy) {
        self.body.mark_connection_busy(busy);
    }
}

impl http_body::Body for Cut {
    type Data = bytes::Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.reason.is_none() {
            if this
                .deadline
                .as_mut()
                .is_some_and(|d| d.as_mut().poll(cx).is_ready())
            {
                this.reason = Some(CutReason::Deadline);
            } else if this
                .closing
                .as_mut()
                .is_some_and(|c| c.as_mut().poll(cx).is_ready())
            {
                this.reason = Some(CutReason::Closing);
            }
        }
        if let (Some(reason), true) = (this.reason, this.frames.at_boundary()) {
            this.done = true;
            // The app's stream goes (reset), and with it the call's in-flight count.
            this.body = ProxyBody::empty();
            this.deadline = None;
            this.closing = None;
            tracing::debug!(?reason, "gRPC call ended by turnout");
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(reason.trailers()))));
        }
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    this.frames.feed(data);
                } else {
                    // The app's trailers: the call ended on its own.
                    this.done = true;
                }
            }
            _ => this.done = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::default()
    }
}

/// Where a stream of gRPC messages stands (each a byte of flags, a 4-byte big-endian length
/// and that many bytes): between two messages, or inside one. Followed by hand: it is five
/// bytes of framing, and a gRPC codec would decode what turnout only passes on.
#[derive(Debug, Default)]
struct Frames {
    /// Bytes of the current message's prefix read so far (0 to 4).
    prefix: [u8; 5],
    have: usize,
    /// Bytes of the current message's payload still to come.
    left: u64,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.left == 0
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let take = data
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= take as u64;
                data = &data[take..];
                continue;
            }
            self.prefix[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have == 5 {
                self.have = 0;
                let len = [
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ];
                self.left = u64::from(u32::from_be_bytes(len));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Message boundaries are found however the bytes are split into frames.
    #[test]
    fn message_boundaries_are_followed_across_any_split() {
        let stream: Vec<u8> = [message(3), message(0), message(300), message(1)].concat();
        let boundaries = [0usize, 8, 13, 318, 324];
        for chunk in [1usize, 2, 3, 5, 7, 64, 1000] {
            let mut frames = Frames::default();
            let mut at = 0;
            for piece in stream.chunks(chunk) {
                frames.feed(piece);
                at += piece.len();
                assert_eq!(
                    frames.at_boundary(),
                    boundaries.contains(&at),
                    "chunks of {chunk}, at {at}"
                );
            }
        }
    }

    /// A message of `len` bytes of 7, with its prefix.
    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    /// The next frame of `body` if one is ready now.
    fn next_now(body: &mut ProxyBody) -> Option<Option<http_body::Frame<bytes::Bytes>>> {
        use futures_util::FutureExt;
        use http_body_util::BodyExt;
        body.frame()
            .now_or_never()
            .map(|f| f.map(|f| f.expect("no error")))
    }

    /// A deadline passed inside a message waits for the message's end, then the stream ends
    /// with DEADLINE_EXCEEDED in trailers and nothing after; the app's stream is let go. In
    /// paused time, over a stream written piece by piece.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_cuts_between_messages() {
        use tokio::io::AsyncWriteExt;
        let (mut app, stream) = tokio::io::duplex(1024);
        let (_pool, closing) = tokio::sync::watch::channel(0u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let resp = cut(
            Response::new(ProxyBody::encoded(stream)),
            Some(deadline),
            closing,
        );
        let mut body = resp.into_body();
        app.write_all(&message(3)).await.expect("write");
        tokio::task::yield_now().await;
        let first = next_now(&mut body).flatten().expect("a frame");
        assert_eq!(first.data_ref().map(|d| d.len()), Some(8));
        let second = message(10);
        app.write_all(&second[..7]).await.expect("write");
        tokio::task::yield_now().await;
        assert!(next_now(&mut body).flatten().is_some_and(|f| f.is_data()));
        tokio::time::advance(Duration::from_secs(2)).await;
        // Past the deadline, inside a message: the rest of it is waited for.
        assert!(
            next_now(&mut body).is_none(),
            "no trailers inside a message"
        );
        app.write_all(&second[7..]).await.expect("write");
        tokio::task::yield_now().await;
        let rest = next_now(&mut body).flatten().expect("the rest");
        assert_eq!(rest.data_ref().map(|d| d.len()), Some(8));
        let end = next_now(&mut body).flatten().expect("trailers");
        let trailers = end.trailers_ref().expect("trailers");
        assert_eq!(trailers["grpc-status"], "4");
        assert!(trailers["grpc-message"]
            .to_str()
            .is_ok_and(|m| m.contains("grpc-timeout")));
        assert!(http_body::Body::is_end_stream(&body));
        assert!(matches!(next_now(&mut body), Some(None)));
        // Nothing more is read from the app: its stream was dropped.
        assert!(app.write_all(&message(1)).await.is_err());
    }

    /// Its pool's long calls closed (`close_tunnels_after`): UNAVAILABLE, between messages.
    /// Without a deadline and before the close, the stream passes untouched; a stream that
    /// ended already is not wrapped.
    #[tokio::test(start_paused = true)]
    async fn closing_the_pool_ends_the_stream_with_unavailable() {
        use tokio::io::AsyncWriteExt;
        let (mut app, stream) = tokio::io::duplex(1024);
        let (pool, closing) = tokio::sync::watch::channel(0u64);
        let mut body = cut(Response::new(ProxyBody::encoded(stream)), None, closing).into_body();
        app.write_all(&message(2)).await.expect("write");
        tokio::task::yield_now().await;
        assert!(next_now(&mut body).flatten().is_some_and(|f| f.is_data()));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(next_now(&mut body).is_none(), "no deadline: still open");
        pool.send_modify(|n| *n += 1);
        let end = next_now(&mut body).flatten().expect("trailers");
        let trailers = end.trailers_ref().expect("trailers");
        assert_eq!(trailers["grpc-status"], "14");
        assert!(trailers["grpc-message"]
            .to_str()
            .is_ok_and(|m| m.contains("close_tunnels_after")));

        let (_pool, closing) = tokio::sync::watch::channel(0u64);
        let done = cut(Response::new(ProxyBody::empty()), None, closing);
        assert!(matches!(done.body(), ProxyBody::Full { .. }));
    }

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
        let faults = turnout_config::GrpcCodes::default();
        assert!(faults.contains(14) && faults.contains(13) && faults.contains(2));
        assert!(!faults.contains(0) && !faults.contains(5) && !faults.contains(3));
        assert!(!faults.contains(17) && !faults.contains(u16::MAX));
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
