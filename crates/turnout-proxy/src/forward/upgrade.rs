//! Tunnels for HTTP/1.1 upgrades (WebSocket, or what `upgrade_protocols` allows): once both
//! sides have switched protocols, bytes are copied both ways. The tunnel holds its pool's
//! [`TunnelGuard`], so it stays on the pool it started on and is counted there.
//!
//! When the app closes its side, the client is told (its side is shut for writing) and has
//! [`CLOSE_GRACE`] to close too; then the tunnel ends whatever the client does, so a client that
//! never closes cannot hold a tunnel (and a shutdown's drain) open for ever. A client that closes
//! first is the usual WebSocket ending: the app's remaining bytes still go through until the app
//! closes.
//!
//! A switch's `close_tunnels_after` asks the old pool's tunnels to close ([`TunnelGuard::closing`]):
//! a WebSocket tunnel waits until neither direction is inside a frame, sends each side a close
//! frame with status 1001 (Going Away), gives them [`CLOSE_GRACE`] to close, and ends; a tunnel
//! of another protocol is cut.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::task::TaskTracker;
use turnout_core::TunnelGuard;

/// How long a client has to close its side of a tunnel after the app closed its own (and each
/// side, after a close frame from turnout).
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The close frame turnout sends the client: a server's frames are unmasked. Status 1001.
const CLOSE_TO_CLIENT: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

pub(crate) fn spawn_tunnel(
    tunnels: &TaskTracker,
    client: OnUpgrade,
    upstream: OnUpgrade,
    guard: TunnelGuard,
    websocket: bool,
) {
    tunnels.spawn(async move {
        let pool = guard.pool().name().clone();
        // Watched from before the upgrade completes: a close asked meanwhile still counts.
        let (closing_up, closing_down) = (guard.closing(), guard.closing());
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(%pool, error = %e, "upgrade did not complete");
                return;
            }
        };
        let (mut client_rx, mut client_tx) = tokio::io::split(TokioIo::new(client));
        let (mut upstream_rx, mut upstream_tx) = tokio::io::split(TokioIo::new(upstream));
        let outcome = {
            let up = pump(&mut client_rx, &mut upstream_tx, closing_up, websocket);
            let down = pump(&mut upstream_rx, &mut client_tx, closing_down, websocket);
            tokio::pin!(up, down);
            tokio::select! {
                up = &mut up => match up {
                    Ok(Ended::Stopped) => Outcome::Closing(
                        tokio::time::timeout(CLOSE_GRACE, down).await.ok(),
                    ),
                    up => Outcome::Ended(up, down.await),
                },
                down = &mut down => match down {
                    Ok(Ended::Stopped) => Outcome::Closing(
                        tokio::time::timeout(CLOSE_GRACE, up).await.ok(),
                    ),
                    // The app closed: the client gets the grace to close its side, no more.
                    down => Outcome::Ended(
                        tokio::time::timeout(CLOSE_GRACE, up)
                            .await
                            .unwrap_or(Ok(Ended::Eof(0))),
                        down,
                    ),
                },
            }
        };
        match outcome {
            Outcome::Closing(other) => {
                // Both directions between frames: a clean WebSocket close each way. Else (a
                // frame never finished within the grace, another protocol): cut.
                tracing::debug!(%pool, "tunnel closing: its pool's tunnels were asked to close");
                if websocket && matches!(other, Some(Ok(Ended::Stopped))) {
                    going_away(
                        &mut client_rx,
                        &mut client_tx,
                        &mut upstream_rx,
                        &mut upstream_tx,
                        guard,
                    )
                    .await;
                }
                return;
            }
            Outcome::Ended(Ok(up), Ok(down)) => {
                tracing::debug!(%pool, bytes_up = up.bytes(), bytes_down = down.bytes(), "tunnel closed")
            }
            Outcome::Ended(Err(e), _) | Outcome::Ended(_, Err(e)) => {
                tracing::debug!(%pool, error = %e, "tunnel ended with an error")
            }
        }
        drop(guard);
    });
}

/// How one direction of a tunnel ended.
enum Ended {
    /// Its source ended, after this many bytes.
    Eof(u64),
    /// Asked to close, it stopped between two frames.
    Stopped,
}

impl Ended {
    fn bytes(&self) -> u64 {
        match self {
            Ended::Eof(n) => *n,
            Ended::Stopped => 0,
        }
    }
}

enum Outcome {
    /// Asked to close; the other direction's end, if it came within the grace.
    Closing(Option<std::io::Result<Ended>>),
    Ended(std::io::Result<Ended>, std::io::Result<Ended>),
}

/// Copies `rx` to `tx` until `rx` ends (then shuts `tx` for writing), or, once `closing`
/// changes, until the stream stands between two WebSocket frames (any byte, for another
/// protocol). A read not yet completed when it stops has taken nothing.
async fn pump<R, W>(
    rx: &mut R,
    tx: &mut W,
    mut closing: tokio::sync::watch::Receiver<u64>,
    websocket: bool,
) -> std::io::Result<Ended>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // As tokio::io::copy's buffer.
    let mut buf = vec![0u8; 8 * 1024];
    let mut frames = Frames::default();
    let (mut total, mut stopping, mut watching) = (0u64, false, true);
    loop {
        let read = tokio::select! {
            changed = closing.changed(), if watching => {
                watching = false;
                // A dropped sender (the pool is gone) closes nothing.
                stopping = changed.is_ok();
                if stopping && (!websocket || frames.at_boundary()) {
                    return Ok(Ended::Stopped);
                }
                continue;
            }
            read = rx.read(&mut buf) => read?,
        };
        if read == 0 {
            let _ = tx.shutdown().await;
            return Ok(Ended::Eof(total));
        }
        tx.write_all(&buf[..read]).await?;
        if websocket {
            frames.feed(&buf[..read]);
        }
        total += read as u64;
        if stopping && (!websocket || frames.at_boundary()) {
            return Ok(Ended::Stopped);
        }
    }
}

/// Sends each side a close frame 1001, then reads (and drops) what each sends back until its
/// own close frame (the close handshake is then complete, RFC 6455 7.1.1: the server closes
/// the TCP connection first, so turnout does, at once) or the end of its stream, for at most
/// [`CLOSE_GRACE`]. The tunnel stops counting on its pool (`guard`) once
/// the app's side has closed: the old app can stop then, whatever the client still does.
async fn going_away<CR, CW, UR, UW>(
    client_rx: &mut CR,
    client_tx: &mut CW,
    upstream_rx: &mut UR,
    upstream_tx: &mut UW,
    guard: TunnelGuard,
) where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let key: [u8; 4] = fastrand::u32(..).to_be_bytes();
    // A client's frames are masked: the app gets the close as if the client had sent it.
    let to_app = [
        0x88,
        0x82,
        key[0],
        key[1],
        key[2],
        key[3],
        0x03 ^ key[0],
        0xE9 ^ key[1],
    ];
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = tokio::join!(
            async {
                let _ = client_tx.write_all(&CLOSE_TO_CLIENT).await;
                let _ = client_tx.flush().await;
                until_close(client_rx).await;
                let _ = client_tx.shutdown().await;
            },
            async {
                let _ = upstream_tx.write_all(&to_app).await;
                let _ = upstream_tx.flush().await;
                until_close(upstream_rx).await;
                let _ = upstream_tx.shutdown().await;
                drop(guard);
            },
        );
    })
    .await;
}

/// Reads and drops frames until a whole close frame has come, or the stream ends (or fails).
/// Called at a frame boundary.
async fn until_close<R: AsyncRead + Unpin>(rx: &mut R) {
    let mut buf = [0u8; 1024];
    let mut frames = Frames::default();
    while let Ok(n @ 1..) = rx.read(&mut buf).await {
        frames.feed(&buf[..n]);
        if frames.closed {
            return;
        }
    }
}

/// Where a byte stream of WebSocket frames stands: inside a frame's header (the bytes of it
/// seen so far), or inside its payload (the bytes left). Written by hand: a WebSocket library
/// would parse and re-encode every frame, where a transparent tunnel needs only to know
/// whether the next byte begins a frame.
#[derive(Debug, Default)]
struct Frames {
    header: [u8; 14],
    /// Header bytes seen of the frame being read; 0 at a boundary (with `payload` 0).
    seen: usize,
    /// Payload bytes still to come.
    payload: u64,
    /// The frame being read is a close frame (opcode 8).
    closing: bool,
    /// A whole close frame has passed.
    closed: bool,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.seen == 0 && self.payload == 0
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload > 0 {
                let n = (bytes.len() as u64).min(self.payload);
                self.payload -= n;
                bytes = &bytes[n as usize..];
                self.closed |= self.closing && self.payload == 0;
                continue;
            }
            self.header[self.seen] = bytes[0];
            self.seen += 1;
            bytes = &bytes[1..];
            if let Some((len, payload)) = self.header_done() {
                debug_assert_eq!(len, self.seen);
                self.seen = 0;
                self.payload = payload;
                self.closing = self.header[0] & 0x0F == 0x8;
                self.closed |= self.closing && payload == 0;
            }
        }
    }

    /// The header's length and its payload's, once every byte of the header is in.
    fn header_done(&self) -> Option<(usize, u64)> {
        if self.seen < 2 {
            return None;
        }
        let masked = self.header[1] & 0x80 != 0;
        let short = self.header[1] & 0x7F;
        let ext = match short {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let len = 2 + ext + if masked { 4 } else { 0 };
        if self.seen < len {
            return None;
        }
        let payload = match short {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().expect("8 bytes")),
            n => u64::from(n),
        };
        Some((len, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    /// Feeds `stream` cut into chunks of every size, calling `check(frames, cut, at)` after each
    /// chunk (`at`: bytes fed so far).
    fn each_cut(stream: &[u8], mut check: impl FnMut(&Frames, usize, usize)) {
        for cut in 1..=stream.len() {
            let mut f = Frames::default();
            let mut at = 0;
            for chunk in stream.chunks(cut) {
                f.feed(chunk);
                at += chunk.len();
                check(&f, cut, at);
            }
        }
    }

    #[test]
    fn frame_boundaries_are_found_however_the_bytes_are_cut() {
        // A masked text frame of 5 bytes, a 300-byte binary frame (16-bit length), a close.
        let mut stream = vec![0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        stream.extend([0x82, 0x7E, 0x01, 0x2C]);
        stream.extend(std::iter::repeat_n(7u8, 300));
        let boundaries = [11usize, 11 + 4 + 300];
        stream.extend([0x88, 0x00]);
        each_cut(&stream, |f, cut, at| {
            let expect = boundaries.contains(&at) || at == stream.len();
            assert_eq!(f.at_boundary(), expect, "chunks of {cut}, at {at}");
        });
        let mut f = Frames::default();
        f.feed(&[0x82, 0x7F, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(f.payload, 1 << 32, "64-bit lengths");
    }

    #[test]
    fn a_close_frame_is_seen_once_whole() {
        // A masked text frame, then a masked close with status 1001, cut everywhere.
        let mut stream = vec![0x81, 0x82, 1, 2, 3, 4, b'h', b'i'];
        let close_at = stream.len() + 8;
        stream.extend([0x88, 0x82, 9, 9, 9, 9, 0x03 ^ 9, 0xE9 ^ 9]);
        each_cut(&stream, |f, cut, at| {
            assert_eq!(f.closed, at >= close_at, "chunks of {cut}, at {at}");
        });
        let mut f = Frames::default();
        f.feed(&[0x88, 0x00]);
        assert!(f.closed, "an empty close frame");
        let mut f = Frames::default();
        f.feed(&[0x89, 0x00, 0x8A, 0x00]);
        assert!(!f.closed, "ping and pong are no close");
    }
}
