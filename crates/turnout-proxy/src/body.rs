//! The body every response of the data plane carries: an upstream's body streamed through, or a
//! short synthetic one. The upstream variant holds the request's [`InFlight`] guard and drops it
//! at the body's last frame, so a pool counts a request in flight until its response has fully
//! left, and a streaming response keeps its pool alive however many switches happen meanwhile.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use turnout_core::InFlight;

use crate::deadlines::Stall;
use crate::downstream::Busy;

pin_project_lite::pin_project! {
    /// The body of every response the data plane sends: an upstream's streamed through, bytes
    /// in memory (turnout's own answers, cache hits), or a static file read as it is sent.
    // pin-project-lite takes no doc comments on a variant's fields: they are described in
    // plain comments, and the lint is allowed for them.
    #[allow(missing_docs)]
    #[derive(Debug)]
    #[project = Proj]
    pub enum ProxyBody {
        /// An upstream's body, holding the request's in-flight guard to its last byte.
        Upstream {
            // hyper's body from the server.
            #[pin]
            body: Incoming,
            // The request's in-flight count on its server, released at the last byte.
            guard: Option<InFlight>,
            // The client connection's busy mark, held while this body is sent.
            conn: Option<Busy>,
            // The stall deadline (a body that is all there when asked for, as most are, never
            // makes its timer).
            stall: Stall,
        },
        /// Bytes in memory, sent at once (`None`: an empty body).
        Full {
            // The bytes.
            data: Option<Bytes>,
        },
        /// A file (or a range of one) read from disk as it is sent. Boxed: the reader is
        /// over 100 bytes, and every response, proxied ones too, would carry that size.
        File {
            // The file's reader, limited to the range sent.
            stream: Pin<Box<tokio_util::io::ReaderStream<tokio::io::Take<tokio::fs::File>>>>,
            // Bytes still to send.
            remaining: u64,
        },
        /// A body whose end someone waits for: a gRPC call's answer from the app, its access
        /// line held until the trailers say how the call ended. Boxed: only such answers pay.
        Watched {
            // The body, and who is told of its trailers and (by being dropped) of its end.
            watched: Box<(ProxyBody, Option<Box<dyn Watcher>>)>,
        },
        /// Another body wrapped by a body type of another module: a gRPC call's stream from
        /// the app, which turnout ends itself at the call's deadline or when its pool's long
        /// calls close (`grpc::Cut`). Boxed: only such answers pay.
        Wrapped {
            // The wrapper, over the body it wraps.
            wrapped: Box<dyn Wrapper>,
        },
        /// Another body compressed as it streams (`[compression]`). Boxed: only a compressed
        /// response pays for the encoder's state.
        Encoded {
            // The encoder over the original body, read in chunks.
            stream: Encoder,
            // Ended (the stream said so).
            done: bool,
            // The client connection's busy mark, held while this body is sent.
            conn: Option<Busy>,
        },
    }
}

/// A body over another [`ProxyBody`], defined where it is used ([`ProxyBody::wrapped`]): it
/// passes the client connection's busy mark on to the body it wraps.
pub(crate) trait Wrapper:
    Body<Data = Bytes, Error = BodyError> + Send + Unpin + std::fmt::Debug
{
    /// Keeps the client connection marked busy until the wrapped body ends.
    fn mark_connection_busy(&mut self, busy: Busy);
}

/// Told of a watched body's trailers; dropped when the body ends ([`ProxyBody::watched`]).
pub(crate) trait Watcher: Send + std::fmt::Debug {
    /// The trailers have come.
    fn trailers(&mut self, trailers: &http::HeaderMap);
}

/// An encoder's output, chunk by chunk.
pub struct Encoder(Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>>);

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encoder")
    }
}

/// A body's error: the upstream's (hyper) or a file's (I/O).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl ProxyBody {
    /// An upstream's body, given up on (an error that ends the response) when no byte of it
    /// comes for `stall_after` (`upstream.body_timeout`).
    pub fn upstream(body: Incoming, guard: InFlight, stall_after: Duration) -> ProxyBody {
        ProxyBody::Upstream {
            body,
            guard: Some(guard),
            conn: None,
            stall: Stall::new(stall_after),
        }
    }

    /// Keeps the client connection marked busy until this body ends (synthetic bodies are a
    /// few bytes written at once, so for them the mark ends now).
    pub(crate) fn mark_connection_busy(&mut self, busy: Busy) {
        match self {
            ProxyBody::Upstream { conn, .. } | ProxyBody::Encoded { conn, .. } => {
                *conn = Some(busy);
            }
            ProxyBody::Watched { watched } => watched.0.mark_connection_busy(busy),
            ProxyBody::Wrapped { wrapped } => wrapped.mark_connection_busy(busy),
            ProxyBody::Full { .. } | ProxyBody::File { .. } => {}
        }
    }

    /// `body`, with `watcher` told of its trailers and dropped at its end (or when it is
    /// dropped without one): a gRPC call's access line, written with its `grpc-status`.
    pub(crate) fn watched(body: ProxyBody, watcher: Box<dyn Watcher>) -> ProxyBody {
        ProxyBody::Watched {
            watched: Box::new((body, Some(watcher))),
        }
    }

    /// `wrapper` (over another body) as the response's body.
    pub(crate) fn wrapped(wrapper: impl Wrapper + 'static) -> ProxyBody {
        ProxyBody::Wrapped {
            wrapped: Box::new(wrapper),
        }
    }

    /// A body of static text.
    pub fn from_static(text: &'static str) -> ProxyBody {
        ProxyBody::Full {
            data: Some(Bytes::from_static(text.as_bytes())),
        }
    }

    /// No body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Full { data: None }
    }

    /// A body of `data` (empty bytes: no body).
    pub fn bytes(data: Bytes) -> ProxyBody {
        ProxyBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// The bytes `reader` gives (an encoder over another body), in 16 KiB chunks.
    pub(crate) fn encoded(reader: impl tokio::io::AsyncRead + Send + 'static) -> ProxyBody {
        ProxyBody::Encoded {
            stream: Encoder(Box::pin(tokio_util::io::ReaderStream::with_capacity(
                reader,
                16 * 1024,
            ))),
            done: false,
            conn: None,
        }
    }

    /// `len` bytes of `file` from where it stands, in 64 KiB reads.
    pub fn file(file: tokio::fs::File, len: u64) -> ProxyBody {
        use tokio::io::AsyncReadExt;
        ProxyBody::File {
            stream: Box::pin(tokio_util::io::ReaderStream::with_capacity(
                file.take(len),
                64 * 1024,
            )),
            remaining: len,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            Proj::Upstream {
                body,
                guard,
                conn,
                stall,
            } => {
                let frame = match body.poll_frame(cx) {
                    Poll::Ready(frame) => {
                        stall.progress();
                        frame
                    }
                    Poll::Pending => {
                        ready!(stall.poll_expired(cx));
                        let after = stall.after();
                        guard.take();
                        conn.take();
                        let why = format!(
                            "the upstream sent no byte of the response body for {after:?} (upstream.body_timeout); the response was cut off"
                        );
                        tracing::warn!("{why}");
                        return Poll::Ready(Some(Err(BodyError::from(why))));
                    }
                };
                if !matches!(frame, Some(Ok(_))) {
                    // The end, or an error that ends it: the request is no longer in flight.
                    guard.take();
                    conn.take();
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            Proj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Proj::File { stream, remaining } => {
                let chunk = ready!(futures_util::Stream::poll_next(stream.as_mut(), cx));
                if let Some(Ok(c)) = &chunk {
                    *remaining = remaining.saturating_sub(c.len() as u64);
                } else if chunk.is_none() && *remaining > 0 {
                    // The file shrank while it was sent: fail the response rather than send
                    // fewer bytes than its Content-Length promised.
                    *remaining = 0;
                    return Poll::Ready(Some(Err(BodyError::from(
                        "the file shrank while it was sent",
                    ))));
                }
                Poll::Ready(chunk.map(|c| c.map(Frame::data).map_err(BodyError::from)))
            }
            Proj::Watched { watched } => {
                let (body, access) = &mut **watched;
                let frame = ready!(Pin::new(body).poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let (Some(trailers), Some(w)) = (f.trailers_ref(), access.as_mut()) {
                            w.trailers(trailers);
                            access.take();
                        }
                    }
                    // The end (without trailers), or an error that ends it: the line now.
                    _ => drop(access.take()),
                }
                Poll::Ready(frame)
            }
            Proj::Wrapped { wrapped } => Pin::new(&mut **wrapped).poll_frame(cx),
            Proj::Encoded { stream, done, conn } => {
                let chunk = ready!(futures_util::Stream::poll_next(stream.0.as_mut(), cx));
                if !matches!(chunk, Some(Ok(_))) {
                    *done = true;
                    conn.take();
                }
                Poll::Ready(chunk.map(|c| c.map(Frame::data).map_err(BodyError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Full { data } => data.is_none(),
            ProxyBody::File { remaining, .. } => *remaining == 0,
            ProxyBody::Encoded { done, .. } => *done,
            ProxyBody::Watched { watched } => watched.0.is_end_stream(),
            ProxyBody::Wrapped { wrapped } => wrapped.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::File { remaining, .. } => SizeHint::with_exact(*remaining),
            ProxyBody::Encoded { .. } => SizeHint::default(),
            ProxyBody::Watched { watched } => watched.0.size_hint(),
            ProxyBody::Wrapped { wrapped } => wrapped.size_hint(),
        }
    }
}

/// A client's request body on its way upstream, and for a mirrored request a copy kept as it
/// passes ([`ClientBody::tee`]): the copy goes to the mirror once the whole body has gone to
/// the original's server, so the copy never slows the original down.
#[derive(Debug)]
pub struct ClientBody {
    body: Incoming,
    tee: Option<Box<Tee>>,
    /// Bytes still allowed (`[server] max_request_body`); past it the body fails with
    /// [`ClientBodyError::TooLarge`].
    left: u64,
    limit: u64,
    /// Set once the whole body has been read, for a forward that must tell a slow upload
    /// from a slow app ([`ClientBody::watch_end`]); `None` unless asked for.
    ended: Option<Arc<AtomicBool>>,
}

/// Why a client's request body failed on its way upstream.
#[derive(Debug)]
pub enum ClientBodyError {
    /// Reading it from the client failed (the cause says how: gone, stalled, malformed).
    Read(hyper::Error),
    /// It went past `[server] max_request_body`.
    TooLarge { limit: u64 },
}

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientBodyError::Read(_) => f.write_str("reading the request body"),
            ClientBodyError::TooLarge { limit } => {
                write!(
                    f,
                    "the request body is longer than server.max_request_body ({limit} bytes)"
                )
            }
        }
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientBodyError::Read(e) => Some(e),
            ClientBodyError::TooLarge { .. } => None,
        }
    }
}

/// The copy of a body of `expected` bytes (its Content-Length) being kept for a mirror.
#[derive(Debug)]
struct Tee {
    chunks: Vec<Bytes>,
    len: usize,
    expected: usize,
    done: tokio::sync::oneshot::Sender<Bytes>,
}

impl Tee {
    fn finish(self) {
        let whole = if self.chunks.len() == 1 {
            self.chunks.into_iter().next().expect("one")
        } else {
            self.chunks.concat().into()
        };
        let _ = self.done.send(whole);
    }
}

impl ClientBody {
    pub fn new(body: Incoming) -> ClientBody {
        ClientBody {
            body,
            tee: None,
            left: u64::MAX,
            limit: u64::MAX,
            ended: None,
        }
    }

    /// A flag set once the whole body has been read from the client (one allocation, for
    /// requests that have a body only).
    pub fn watch_end(&mut self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(self.body.is_end_stream()));
        self.ended = Some(Arc::clone(&flag));
        flag
    }

    /// Fails the body once more than `limit` bytes have come (`None`: no limit).
    pub fn limited(mut self, limit: Option<u64>) -> ClientBody {
        if let Some(limit) = limit {
            self.left = limit;
            self.limit = limit;
        }
        self
    }

    /// `body` (of exactly `expected` bytes: its Content-Length), and the whole of it through
    /// the returned receiver once it has all passed. The receiver gets nothing if the body
    /// fails or turns out longer.
    pub fn tee(
        body: Incoming,
        expected: usize,
    ) -> (ClientBody, tokio::sync::oneshot::Receiver<Bytes>) {
        let (done, rx) = tokio::sync::oneshot::channel();
        let tee = Tee {
            chunks: Vec::new(),
            len: 0,
            expected,
            done,
        };
        (
            ClientBody {
                tee: Some(Box::new(tee)),
                ..ClientBody::new(body)
            },
            rx,
        )
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            let len = data.map_or(0, |d| d.len() as u64);
            match this.left.checked_sub(len) {
                Some(left) => this.left = left,
                None => {
                    this.tee = None;
                    return Poll::Ready(Some(Err(ClientBodyError::TooLarge { limit: this.limit })));
                }
            }
        }
        match (&frame, this.tee.as_mut()) {
            (Some(Ok(f)), Some(tee)) => {
                if let Some(data) = f.data_ref() {
                    tee.len += data.len();
                    if tee.len > tee.expected {
                        this.tee = None;
                    } else {
                        // A reference count, not a copy of the bytes.
                        tee.chunks.push(data.clone());
                        // hyper may never ask past the last byte of a known length.
                        if tee.len == tee.expected {
                            this.tee.take().expect("matched").finish();
                        }
                    }
                }
            }
            (None, Some(tee)) if tee.len == tee.expected => {
                this.tee.take().expect("matched").finish();
            }
            (None | Some(Err(_)), Some(_)) => this.tee = None,
            _ => {}
        }
        if let Some(ended) = &this.ended {
            if frame.is_none() || (matches!(frame, Some(Ok(_))) && this.body.is_end_stream()) {
                ended.store(true, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(ClientBodyError::Read)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The body of a request on its way to an upstream. A request that may be retried on another
/// server sends its body as [`UpstreamBody::reclaimable`]: if the first attempt fails before
/// reading any of it (a refused connection), the body comes back through the returned receiver
/// and goes out again, unread, to the next server. A mirrored copy carries its body whole.
#[derive(Debug)]
pub enum UpstreamBody {
    /// The client's body, streamed as it arrives (a request that is not retried).
    Incoming(ClientBody),
    /// The client's body, given back unread if the attempt fails before reading it.
    Reclaimable(Reclaimable),
    /// A whole body in memory (a mirrored copy's).
    Full(Option<Bytes>),
    /// No body.
    Empty,
}

/// A client's body lent to one attempt: see [`UpstreamBody::reclaimable`].
#[derive(Debug)]
pub struct Reclaimable {
    body: Option<ClientBody>,
    polled: bool,
    /// The bytes of the body read before (by an attempt the app refused), sent first, and a
    /// copy of what this attempt reads, for the next; `None`: the body is only given back
    /// unread. Boxed: only a request to an HTTP/2 pool pays for it.
    replay: Option<Box<Replay>>,
    give_back: Option<tokio::sync::oneshot::Sender<Returned>>,
}

/// What an attempt gives back for the next one: the body's bytes already read from the client
/// (sent again first), its trailers if they came, and the rest of it (`None`: it had ended).
#[derive(Debug)]
pub struct Returned {
    read: Vec<Bytes>,
    trailers: Option<http::HeaderMap>,
    rest: Option<ClientBody>,
}

impl Returned {
    /// A body none of which was read.
    pub fn unread(body: ClientBody) -> Returned {
        Returned {
            read: Vec::new(),
            trailers: None,
            rest: Some(body),
        }
    }
}

/// A replayable body's state (see [`Reclaimable::replay`]).
#[derive(Debug, Default)]
struct Replay {
    /// Read before, still to send: `prefix[next..]`.
    prefix: Vec<Bytes>,
    next: usize,
    trailers: Option<http::HeaderMap>,
    trailers_sent: bool,
    /// What this attempt has sent, in order (the prefix again, then what it read).
    sent: Vec<Bytes>,
    sent_bytes: usize,
    /// Past [`REPLAY_LIMIT`]: the copy was let go, and the body cannot be sent again.
    overflowed: bool,
    /// The client's body ended (this attempt, or one before, read its end).
    ended: bool,
}

/// The most of a request body kept to send it again to another server after an HTTP/2 app
/// refused it unprocessed (a gRPC call's message is usually far smaller; a body past this is
/// not sent again, and such a refusal fails the request as before).
pub const REPLAY_LIMIT: usize = 64 * 1024;

impl Replay {
    fn keep(&mut self, data: &Bytes) {
        if self.overflowed {
            return;
        }
        self.sent_bytes += data.len();
        if self.sent_bytes > REPLAY_LIMIT {
            self.overflowed = true;
            self.sent = Vec::new();
        } else {
            self.sent.push(data.clone());
        }
    }
}

impl UpstreamBody {
    /// `body` lent to one attempt, and the receiver it comes back through, unread, when the
    /// attempt fails before polling it; with `replay` (an HTTP/2 pool), also when it was read
    /// (up to [`REPLAY_LIMIT`] bytes), to be sent again after the app refused it.
    pub fn reclaimable(
        body: Returned,
        replay: bool,
    ) -> (UpstreamBody, tokio::sync::oneshot::Receiver<Returned>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let Returned {
            read,
            trailers,
            rest,
        } = body;
        let replay = (replay || !read.is_empty() || trailers.is_some()).then(|| {
            Box::new(Replay {
                ended: rest.is_none(),
                prefix: read,
                trailers,
                ..Replay::default()
            })
        });
        let body = Reclaimable {
            body: rest,
            polled: false,
            replay,
            give_back: Some(tx),
        };
        (UpstreamBody::Reclaimable(body), rx)
    }
}

impl Reclaimable {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        self.polled = true;
        let Some(replay) = self.replay.as_deref_mut() else {
            return match self.body.as_mut() {
                Some(body) => Pin::new(body).poll_frame(cx),
                None => Poll::Ready(None),
            };
        };
        if let Some(data) = replay.prefix.get(replay.next).cloned() {
            replay.next += 1;
            replay.keep(&data);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if replay.ended {
            if replay.trailers_sent {
                return Poll::Ready(None);
            }
            replay.trailers_sent = true;
            return Poll::Ready(replay.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    replay.keep(data);
                } else if let Some(t) = f.trailers_ref() {
                    replay.trailers = Some(t.clone());
                    replay.trailers_sent = true;
                    replay.ended = true;
                }
            }
            None => {
                replay.ended = true;
                replay.trailers_sent = true;
            }
            // A failed body is not sent again.
            Some(Err(_)) => replay.overflowed = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match self.replay.as_deref() {
            Some(r) if r.next < r.prefix.len() => false,
            Some(r) if r.ended => r.trailers_sent || r.trailers.is_none(),
            _ => self.body.as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let prefix: u64 = self.replay.as_deref().map_or(0, |r| {
            r.prefix[r.next..].iter().map(|b| b.len() as u64).sum()
        });
        let rest = match (&self.replay, &self.body) {
            (Some(r), _) if r.ended => SizeHint::with_exact(0),
            (_, Some(body)) => body.size_hint(),
            (_, None) => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

impl Drop for Reclaimable {
    fn drop(&mut self) {
        let Some(tx) = self.give_back.take() else {
            return;
        };
        let returned = match self.replay.take() {
            None if !self.polled => self.body.take().map(Returned::unread),
            None => None,
            Some(r) if r.overflowed => None,
            Some(mut r) => {
                // What this attempt sent, and what of the prefix it had not sent yet.
                let mut read = std::mem::take(&mut r.sent);
                read.extend(r.prefix.drain(r.next..));
                Some(Returned {
                    read,
                    trailers: r.trailers,
                    rest: if r.ended { None } else { self.body.take() },
                })
            }
        };
        if let Some(returned) = returned {
            let _ = tx.send(returned);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            UpstreamBody::Incoming(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Reclaimable(r) => r.poll_frame(cx),
            UpstreamBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Incoming(body) => body.is_end_stream(),
            UpstreamBody::Reclaimable(r) => r.is_end_stream(),
            UpstreamBody::Full(data) => data.is_none(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Incoming(body) => body.size_hint(),
            UpstreamBody::Reclaimable(r) => r.size_hint(),
            UpstreamBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}
