//! One accepted connection as its requests and its socket see it: the client's address (and
//! the header value made of it once), whether it came in over HTTPS, what is under way on it
//! ([`Activity`], which the socket's deadlines read), and what it holds for its life (its
//! permit and its count for `[limits]`). Every phase of a request reads it; it is one
//! allocation per connection, shared by the service and the socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use http::HeaderValue;

/// What a connection holds until it ends: its place under `max_connections`, and its count
/// for `[limits] connections_per_client`.
pub(crate) type Held = (
    tokio::sync::OwnedSemaphorePermit,
    Option<crate::limits::Counted>,
);

/// One accepted connection.
#[derive(Debug)]
pub(crate) struct Downstream {
    pub peer: SocketAddr,
    /// The client's IP, formatted once per connection for `X-Forwarded-For`.
    pub ip_header: HeaderValue,
    /// Came in over the HTTPS listener.
    pub https: bool,
    /// What the service tells the socket about the connection.
    pub activity: Activity,
    /// Released when the connection ends (the service and the socket both hold this).
    _held: Option<Held>,
}

impl Downstream {
    pub fn new(peer: SocketAddr, https: bool) -> Downstream {
        let ip_header = HeaderValue::try_from(peer.ip().to_string())
            .expect("an IP address is a valid header value");
        Downstream {
            peer,
            ip_header,
            https,
            activity: Activity::default(),
            _held: None,
        }
    }

    /// Holds `held` until the connection ends.
    pub fn holding(mut self, held: Held) -> Downstream {
        self._held = Some(held);
        self
    }

    /// `X-Forwarded-Proto`.
    pub fn proto(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// A request has begun on the connection: it is busy until the [`Busy`] is dropped (when
    /// its response has ended).
    pub fn begin(self: &Arc<Self>) -> Busy {
        let a = &self.activity;
        a.busy.fetch_add(1, Ordering::Relaxed);
        a.begun.fetch_add(1, Ordering::Relaxed);
        a.flags.fetch_and(!READING_HEAD, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }
}

/// [`Activity::flags`]: the connection became a tunnel (no more timeouts).
const UPGRADED: u8 = 1;
/// Bytes of a request head have arrived that hyper has not yet turned into a request.
const READING_HEAD: u8 = 2;
/// An idle HTTP/2 connection is due to close (with GOAWAY, by the serving task).
const CLOSE_IDLE: u8 = 4;

/// What the service tells the socket about one connection, in 12 bytes (every idle
/// connection keeps one).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Requests whose response has not finished.
    busy: AtomicU32,
    /// Requests begun on this connection (wrapping): a socket that was not read while its last
    /// request was in flight (hyper does not read a half-closable connection then) still sees
    /// that a request came and went.
    begun: AtomicU32,
    /// [`UPGRADED`], [`READING_HEAD`], [`CLOSE_IDLE`].
    flags: AtomicU8,
}

impl Activity {
    /// Nothing is under way on the connection: no request in flight, no tunnel, and no byte of
    /// a next request waiting. Only then may a drain close it without losing a request.
    pub fn is_quiet(&self) -> bool {
        !self.is_busy() && self.flags.load(Ordering::Relaxed) & READING_HEAD == 0
    }

    pub fn upgraded(&self) {
        self.flags.fetch_or(UPGRADED, Ordering::Relaxed);
    }

    pub fn is_upgraded(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & UPGRADED != 0
    }

    /// A request is in flight (or the connection is a tunnel).
    pub fn is_busy(&self) -> bool {
        self.in_flight() || self.is_upgraded()
    }

    /// A request's response has not finished.
    pub fn in_flight(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }

    /// How many requests have begun (wrapping).
    pub fn begun(&self) -> u32 {
        self.begun.load(Ordering::Relaxed)
    }

    /// The first bytes of a request head have come.
    pub fn head_started(&self) {
        self.flags.fetch_or(READING_HEAD, Ordering::Relaxed);
    }

    /// Asks the serving task to close this idle (HTTP/2) connection; the caller wakes it.
    pub fn ask_idle_close(&self) {
        self.flags.fetch_or(CLOSE_IDLE, Ordering::Relaxed);
    }

    /// [`Activity::ask_idle_close`] was called.
    pub fn idle_close_asked(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & CLOSE_IDLE != 0
    }
}

/// A request in flight on a connection; dropped when its response has ended.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Downstream>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.activity.busy.fetch_sub(1, Ordering::Relaxed);
    }
}
