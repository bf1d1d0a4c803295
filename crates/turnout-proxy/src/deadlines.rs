//! Client connection timeouts that hyper does not separate: hyper's header read timeout runs
//! from the moment a connection waits for a request, so it would close idle keep-alive
//! connections as early as slow ones. Behind a load balancer that is the classic race: the
//! balancer sends a request on a connection the proxy is closing, and answers 502. So turnout
//! keeps the two apart, around the socket:
//!
//! - `client_header_timeout`: from the first byte of a request (or from accept) until its head
//!   is complete (the service was called). Slowloris clients are cut off here.
//! - `client_idle_timeout`: an idle keep-alive connection (no request in flight, no byte of a
//!   new one) is closed after this; set it above the load balancer's own idle timeout.
//!
//! While a request is in flight (until its response body ends) or after an upgrade, neither
//! applies.
//! - `client_body_timeout`: an HTTP/1 request body with no byte for this long is given up on
//!   (hyper reads a connection only for the body while its request is in flight). HTTP/2
//!   bodies are bounded by the stream's flow control instead.
//! - An idle HTTP/2 connection is closed with GOAWAY (through the serving task), not cut.
//! - `client_send_timeout`: a client that takes no byte of what turnout writes for this long
//!   (its window full: it stopped reading) is cut off, in every phase. What waits for it is
//!   bounded anyway (hyper's buffers and the upstream client's), but its connection, upstream
//!   connection and memory should not be held for ever.
//!
//! Written by hand because no crate offers these per-phase deadlines for hyper.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::downstream::Downstream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Between requests.
    Idle,
    /// HTTP/2 streams are in flight.
    Busy,
    /// An HTTP/1 request is in flight: reads are for its body.
    Body,
    /// An idle HTTP/2 connection is being shut down with GOAWAY: no more deadlines.
    Closing,
}

pin_project_lite::pin_project! {
    /// A client socket with the header and idle deadlines applied on read, and the send
    /// deadline on write.
    #[derive(Debug)]
    #[project = GuardedIoProj]
    pub(crate) struct GuardedIo<T> {
        #[pin]
        io: T,
        // Boxed so the socket stays `Unpin`, as hyper wants it.
        deadline: Pin<Box<Sleep>>,
        phase: Phase,
        // The connection's record: what the service says is under way on it.
        client: Arc<Downstream>,
        // Milliseconds, as every deadline here: the socket is part of every idle connection's
        // state for its whole life.
        header_timeout: Millis,
        idle_timeout: Millis,
        // Armed while a write waits for the client to make room.
        send_stall: Stall,
        // `Activity::begun` when this socket last looked.
        seen: u32,
        body_timeout: Millis,
        // A read for the request body is waiting (the body deadline runs).
        body_waiting: bool,
        // The first bytes have come, and said whether this is HTTP/2.
        seen_bytes: bool,
        h2: bool,
    }
}

impl<T> GuardedIo<T> {
    pub fn new(
        io: T,
        client: Arc<Downstream>,
        header_timeout: Duration,
        idle_timeout: Duration,
        send_timeout: Duration,
        body_timeout: Duration,
    ) -> Self {
        GuardedIo {
            io,
            deadline: Box::pin(tokio::time::sleep(header_timeout)),
            phase: Phase::Head,
            client,
            header_timeout: Millis::from(header_timeout),
            idle_timeout: Millis::from(idle_timeout),
            send_stall: Stall::new(send_timeout),
            seen: 0,
            body_timeout: Millis::from(body_timeout),
            body_waiting: false,
            seen_bytes: false,
            h2: false,
        }
    }
}

/// A duration of a week or less (as every setting is: turnout-config refuses longer ones) in
/// four bytes; longer ones are cut to about 49 days.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Millis(u32);

impl Millis {
    pub fn get(self) -> Duration {
        Duration::from_millis(u64::from(self.0))
    }
}

impl From<Duration> for Millis {
    fn from(d: Duration) -> Millis {
        Millis(u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
    }
}

/// A deadline on waiting with no progress (a client that reads nothing of what is written to
/// it, an upstream body that sends nothing): the timer is made at the first wait, so what
/// never waits never pays for it, restarted when a new wait begins, and disarmed by progress.
#[derive(Debug)]
pub(crate) struct Stall {
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    // Kept small: every response's body holds one.
    after: Millis,
}

impl Stall {
    pub fn new(after: Duration) -> Stall {
        Stall {
            sleep: None,
            waiting: false,
            after: Millis::from(after),
        }
    }

    /// How long a wait may last.
    pub fn after(&self) -> Duration {
        self.after.get()
    }

    /// Something moved: the next wait starts a new deadline.
    pub fn progress(&mut self) {
        self.waiting = false;
    }

    /// Ready once the current wait has lasted [`Stall::after`] with no progress.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let after = self.after();
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        if !self.waiting {
            self.waiting = true;
            sleep.as_mut().reset(Instant::now() + after);
        }
        sleep.as_mut().poll(cx)
    }
}

/// The error a deadline ends the connection with; the serving task tells them apart for its log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Deadline {
    #[error("no complete request head within {0:?}")]
    Header(Duration),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("the client read nothing of its response for {0:?}")]
    Send(Duration),
    #[error("no byte of the request body for {0:?} (client_body_timeout)")]
    Body(Duration),
}

impl<T: AsyncRead> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let activity = &this.client.activity;
        if *this.phase == Phase::Closing || activity.is_upgraded() {
            return this.io.poll_read(cx, buf);
        }
        if activity.in_flight() {
            if *this.h2 {
                // Streams in flight; the h2 layer reads for all of them.
                *this.phase = Phase::Busy;
                return this.io.poll_read(cx, buf);
            }
            // HTTP/1 with half-close on: hyper reads now only for the request's body, and
            // the body must keep coming.
            if *this.phase != Phase::Body {
                *this.phase = Phase::Body;
                *this.body_waiting = false;
            }
            let before = buf.filled().len();
            return match this.io.poll_read(cx, buf) {
                Poll::Ready(r) => {
                    if buf.filled().len() > before {
                        *this.body_waiting = false;
                    }
                    Poll::Ready(r)
                }
                Poll::Pending => {
                    if !*this.body_waiting {
                        *this.body_waiting = true;
                        this.deadline
                            .as_mut()
                            .reset(Instant::now() + this.body_timeout.get());
                    }
                    match this.deadline.as_mut().poll(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            Deadline::Body(this.body_timeout.get()),
                        ))),
                    }
                }
            };
        }
        let begun = activity.begun();
        if matches!(*this.phase, Phase::Busy | Phase::Body) || begun != *this.seen {
            // The last response just ended: the connection is idle from now.
            *this.seen = begun;
            *this.phase = Phase::Idle;
            this.deadline
                .as_mut()
                .reset(Instant::now() + this.idle_timeout.get());
        }
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if !fresh.is_empty() {
                    if !*this.seen_bytes {
                        // HTTP/2 opens with its preface ("PRI * HTTP/2.0..."); no HTTP/1 method
                        // is PRI.
                        *this.seen_bytes = true;
                        *this.h2 = fresh.starts_with(b"PRI");
                    }
                    // Bytes between HTTP/2 requests (pings, window updates) are no request
                    // head and start nothing: a drain's GOAWAY settles any stream that races
                    // them.
                    if !*this.h2 {
                        activity.head_started();
                        // The first bytes of a new HTTP/1 request: its head must be complete
                        // in time.
                        if *this.phase == Phase::Idle {
                            *this.phase = Phase::Head;
                            this.deadline
                                .as_mut()
                                .reset(Instant::now() + this.header_timeout.get());
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) if *this.phase == Phase::Idle && *this.h2 => {
                    // An idle HTTP/2 connection is closed with GOAWAY, not cut: the serving
                    // task is asked to shut it down gracefully, and reads go on meanwhile.
                    *this.phase = Phase::Closing;
                    activity.ask_idle_close();
                    // The serving task (this one) looks at the request when polled again.
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Ready(()) => {
                    let why = match this.phase {
                        Phase::Idle => Deadline::Idle(this.idle_timeout.get()),
                        _ => Deadline::Header(this.header_timeout.get()),
                    };
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
                }
            },
        }
    }
}

impl<T> GuardedIo<T> {
    /// Keeps the send deadline: disarmed by any progress, armed by the first wait, an error
    /// once it passes with no progress.
    fn send_progress<R>(
        this: GuardedIoProj<'_, T>,
        cx: &mut Context<'_>,
        written: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if written.is_ready() {
            this.send_stall.progress();
            return written;
        }
        match this.send_stall.poll_expired(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                Deadline::Send(this.send_stall.after()),
            ))),
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        let written = this.io.as_mut().poll_write(cx, buf);
        Self::send_progress(this, cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        let written = this.io.as_mut().poll_write_vectored(cx, bufs);
        Self::send_progress(this, cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let flushed = this.io.as_mut().poll_flush(cx);
        Self::send_progress(this, cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// The deadline that ended a connection, if one did (found in hyper's error chain).
pub(crate) fn deadline_of<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Deadline> {
    // The error's chain of sources, walked here rather than with `error::chain`: the socket
    // layer stays below the error types built on it.
    std::iter::successors(Some(e), |err| err.source()).find_map(|err| {
        err.downcast_ref::<io::Error>()?
            .get_ref()?
            .downcast_ref::<Deadline>()
    })
}

#[cfg(test)]
mod tests {
    //! Each deadline in paused time, over an in-memory duplex pipe: the client side of the
    //! pipe is the test, the other is turnout's guarded socket.

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const HEADER: Duration = Duration::from_millis(300);
    const IDLE: Duration = Duration::from_secs(5);
    const SEND: Duration = Duration::from_secs(2);
    const BODY: Duration = Duration::from_secs(60);

    fn guarded(buffer: usize) -> (GuardedIo<DuplexStream>, DuplexStream, Arc<Downstream>) {
        let (server, client) = tokio::io::duplex(buffer);
        let down = Arc::new(Downstream::new(
            "127.0.0.1:1".parse().expect("an address"),
            false,
        ));
        let io = GuardedIo::new(server, Arc::clone(&down), HEADER, IDLE, SEND, BODY);
        (io, client, down)
    }

    /// Reads until an error; the deadline it names and how long it took.
    async fn read_until_cut(io: &mut GuardedIo<DuplexStream>) -> (String, Duration) {
        let started = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match io.read(&mut buf).await {
                Ok(0) => panic!("the pipe ended instead"),
                Ok(_) => continue,
                Err(e) => {
                    let what = deadline_of(&e).map(ToString::to_string);
                    return (what.unwrap_or_else(|| e.to_string()), started.elapsed());
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_send_its_head_within_the_header_timeout() {
        let (mut io, mut client, _activity) = guarded(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .expect("write");
        let (why, took) = read_until_cut(&mut io).await;
        assert_eq!(why, "no complete request head within 300ms");
        assert_eq!(took, HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_idle_timeout_applies_then_the_header_one_again() {
        let (mut io, client, activity) = guarded(1024);
        // A request came and went.
        drop(activity.begin());
        let (why, took) = read_until_cut(&mut io).await;
        assert_eq!(why, "idle for 5s", "not the header timeout");
        assert_eq!(took, IDLE);

        let (mut io, mut client2, activity) = guarded(1024);
        drop(activity.begin());
        // Idle for 4 s, then the first bytes of the next request: from them, the head has
        // the header timeout.
        let reader = tokio::spawn(async move { read_until_cut(&mut io).await });
        tokio::time::sleep(Duration::from_secs(4)).await;
        client2.write_all(b"GET / HT").await.expect("write");
        let (why, took) = reader.await.expect("join");
        assert_eq!(why, "no complete request head within 300ms");
        assert_eq!(took, Duration::from_secs(4) + HEADER);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_body_that_stops_is_cut_after_the_body_timeout_not_before() {
        let (mut io, mut client, activity) = guarded(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut head = [0u8; 18];
        io.read_exact(&mut head).await.expect("the head");
        // In flight: reads are for the body now, and it must keep coming.
        let _busy = activity.begin();
        let reader = tokio::spawn(async move { read_until_cut(&mut io).await });
        // A byte every 50 s keeps it alive past the body timeout.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            client.write_all(b"x").await.expect("write");
        }
        let (why, took) = reader.await.expect("join");
        assert_eq!(
            why,
            "no byte of the request body for 60s (client_body_timeout)"
        );
        assert_eq!(took, Duration::from_secs(100) + BODY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_cut_after_the_send_timeout() {
        let (mut io, client, _activity) = guarded(64);
        let started = Instant::now();
        let e = io
            .write_all(&[0u8; 4096])
            .await
            .expect_err("the pipe is full and nobody reads");
        assert_eq!(
            deadline_of(&e).map(ToString::to_string).as_deref(),
            Some("the client read nothing of its response for 2s")
        );
        assert_eq!(started.elapsed(), SEND);
        // A client that reads a little at a time keeps it going.
        let (mut io, mut slow, _activity) = guarded(64);
        let writer = tokio::spawn(async move { io.write_all(&[0u8; 512]).await });
        let mut got = 0;
        let mut buf = [0u8; 64];
        while got < 512 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            got += slow.read(&mut buf).await.expect("read");
        }
        writer.await.expect("join").expect("written in full");
        drop(client);
    }
}
