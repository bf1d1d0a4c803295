//! The one retry rule every path uses (proxied requests and cache fills alike): how an attempt
//! at an upstream ended ([`Attempt`]), whether it may be tried again on another server
//! ([`retryable`]), whether the client's own body was at fault ([`client_body_fault`]), and
//! what a retry needs to send the request again ([`RetryCopy`]).

use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use turnout_core::{Pool, Upstream};

use super::conns::Failure;
use crate::body::{Returned, UpstreamBody};
use crate::error::ProxyError;

/// What a retry needs to send the request again: kept only for pools with more than one
/// server, where a retry is possible at all (a single-server pool pays nothing for it).
pub(super) struct RetryCopy {
    pub method: Method,
    pub headers: http::HeaderMap,
    pub idempotent: bool,
    /// The body comes back here if the first attempt never read it (or, with `replay`, read
    /// no more than [`crate::body::REPLAY_LIMIT`] of it); `None` for a request without one.
    pub reclaim: Option<tokio::sync::oneshot::Receiver<Returned>>,
    /// The body is kept as it is sent, to be sent again: the pool speaks HTTP/2, whose apps
    /// may refuse a stream they did not process after its body went out.
    pub replay: bool,
}

/// The longest a retry waits for the failed attempt to let go of the request's body (the
/// connection's task drops it as the attempt ends; this is only an upper bound).
const RECLAIM_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

impl RetryCopy {
    /// The request again, for `upstream`, if it can still be sent: its body was never read,
    /// it was kept whole enough to send again, or it had none.
    pub async fn take_request(&mut self, path: &PathAndQuery) -> Option<Request<UpstreamBody>> {
        let body = match &mut self.reclaim {
            Some(reclaim) => {
                let returned = tokio::time::timeout(RECLAIM_WAIT, &mut *reclaim)
                    .await
                    .ok()?
                    .ok()?;
                // Reclaimable again: a hold may need it back once more.
                let (body, rx) = UpstreamBody::reclaimable(returned, self.replay);
                *reclaim = rx;
                body
            }
            None => UpstreamBody::Empty,
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = Uri::from(path.clone());
        // A copy: a hold may send it more than once (retries are rare; the first try moved).
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }
}

/// The attempt failed because the client's request body did (the client went away mid-upload,
/// stalled, or sent a malformed chunk), not the upstream: hyper reports that as a "user body"
/// error whose cause is the error of the body turnout was passing through.
pub(super) fn client_body_fault(e: &hyper::Error) -> Option<crate::error::ClientFault> {
    use crate::body::ClientBodyError;
    use crate::error::ClientFault;
    let user = crate::error::chain(e)
        .filter_map(|err| err.downcast_ref::<hyper::Error>())
        .find(|h| h.is_user())?;
    let client = match std::error::Error::source(user)?.downcast_ref::<ClientBodyError>()? {
        ClientBodyError::TooLarge { .. } => return Some(ClientFault::TooLarge),
        ClientBodyError::Read(client) => client,
    };
    Some(
        if matches!(
            crate::deadlines::deadline_of(client),
            Some(crate::deadlines::Deadline::Body(_))
        ) {
            ClientFault::Stalled
        } else if client.is_incomplete_message() || client.is_closed() || ended_early(client) {
            ClientFault::Gone
        } else {
            ClientFault::Malformed
        },
    )
}

/// The body's connection ended before the body did ("end of file before message length
/// reached", a reset).
fn ended_early(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    crate::error::chain(e)
        .find_map(|err| err.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
            )
        })
}

/// How one attempt at an upstream ended.
pub(super) enum Attempt {
    Answered(Response<Incoming>),
    Failed(Failure),
    TimedOut,
}

impl Attempt {
    /// An HTTP/2 app refused the stream unprocessed.
    pub fn is_refused(&self) -> bool {
        matches!(self, Attempt::Failed(Failure::Refused(_)))
    }

    /// The answer, or the failure as the error that names the pool and the server.
    /// `uploading`: the client was still sending the request body (a timeout is then its
    /// slowness, not the server's).
    pub fn into_result(
        self,
        pool: &Pool,
        upstream: &Upstream,
        timeout: std::time::Duration,
        uploading: bool,
    ) -> Result<Response<Incoming>, ProxyError> {
        // Named only on failure: an answer pays for no strings.
        let (p, u) = (|| pool.name().to_string(), || upstream.addr.to_string());
        match self {
            Attempt::Answered(resp) => Ok(resp),
            Attempt::Failed(Failure::Connect(source)) => Err(ProxyError::Connect {
                pool: p(),
                upstream: u(),
                source,
            }),
            Attempt::Failed(
                Failure::NeverSent(source) | Failure::Exchange(source) | Failure::Refused(source),
            ) => match client_body_fault(&source) {
                Some(why) => Err(ProxyError::ClientBody { why, source }),
                None => Err(ProxyError::Upstream {
                    pool: p(),
                    upstream: u(),
                    source,
                }),
            },
            Attempt::TimedOut if uploading => Err(ProxyError::SlowUpload {
                pool: p(),
                upstream: u(),
                after: timeout,
            }),
            Attempt::TimedOut => Err(ProxyError::Timeout {
                pool: p(),
                upstream: u(),
                after: timeout,
            }),
        }
    }
}

/// The one retry rule, for every path: one retry, on another server, after a failed connect,
/// a request that never went out (its pooled connection had closed first) or one an HTTP/2 app
/// refused unprocessed (REFUSED_STREAM, or above its GOAWAY's last stream) whatever the
/// method, and after any other failure before the response began for an idempotent method.
/// Never after a response timeout (the server may still be working on the request, and the
/// client has already waited the whole timeout), never for a failure of the client's own body,
/// and only while the body was not read (checked when the copy is taken).
pub(super) fn retryable(attempt: &Attempt, idempotent: bool) -> bool {
    match attempt {
        Attempt::Failed(Failure::Connect(_) | Failure::NeverSent(_) | Failure::Refused(_)) => true,
        Attempt::Failed(Failure::Exchange(e)) => client_body_fault(e).is_none() && idempotent,
        Attempt::Answered(_) | Attempt::TimedOut => false,
    }
}

#[cfg(test)]
mod tests {
    //! Each kind of failure, made for real against servers on loopback in this process.

    use std::net::SocketAddr;

    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::body::ClientBody;
    use crate::error::ClientFault;

    /// An upstream that reads a request's first bytes and closes without an answer.
    async fn closing_upstream() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
            }
        });
        addr
    }

    /// An upstream that reads every body to its end and answers 200.
    async fn reading_upstream() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(Response::new(UpstreamBody::Empty))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), service),
                );
            }
        });
        addr
    }

    /// One request to `addr` on a connection of its own, as the forwarder sends it.
    async fn send(
        addr: SocketAddr,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        tx.send_request(req).await
    }

    async fn closed_before_answering() -> hyper::Error {
        let addr = closing_upstream().await;
        let req = Request::get("/")
            .body(UpstreamBody::Empty)
            .expect("request");
        send(addr, req).await.expect_err("no answer comes")
    }

    #[tokio::test]
    async fn a_refused_connect_is_retried_whatever_the_method() {
        let refused = || {
            Attempt::Failed(Failure::Connect(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))))
        };
        assert!(retryable(&refused(), true));
        assert!(retryable(&refused(), false));
    }

    #[tokio::test]
    async fn a_request_that_never_went_out_is_retried_whatever_the_method() {
        let unsent = Attempt::Failed(Failure::NeverSent(closed_before_answering().await));
        assert!(retryable(&unsent, false));
    }

    #[tokio::test]
    async fn a_response_timeout_is_never_retried() {
        assert!(!retryable(&Attempt::TimedOut, true));
        assert!(!retryable(&Attempt::TimedOut, false));
    }

    #[tokio::test]
    async fn an_app_gone_before_its_answer_is_retried_for_idempotent_methods_only() {
        let e = closed_before_answering().await;
        assert!(client_body_fault(&e).is_none(), "the app's doing: {e:?}");
        assert!(retryable(&Attempt::Failed(Failure::Exchange(e)), true));
        let e = closed_before_answering().await;
        assert!(!retryable(&Attempt::Failed(Failure::Exchange(e)), false));
    }

    /// A request body over `max_request_body` on its way to the app: the client's fault, never
    /// retried, never the app's. The body is a real client's, read by a real server.
    #[tokio::test]
    async fn a_failure_of_the_clients_own_body_is_never_retried() {
        let upstream = reading_upstream().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let front_addr = front.local_addr().expect("addr");
        tokio::spawn(async move {
            let (s, _) = front.accept().await.expect("accept");
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let tx = tx.lock().expect("lock").take();
                async move {
                    let body = ClientBody::new(req.into_body()).limited(Some(4));
                    let out = Request::post("/")
                        .body(UpstreamBody::Incoming(body))
                        .expect("request");
                    let failed = send(upstream, out).await.err();
                    if let (Some(tx), Some(e)) = (tx, failed) {
                        let _ = tx.send(e);
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(UpstreamBody::Empty))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), service)
                .await;
        });
        let client = tokio::spawn(async move {
            let req = Request::post("/")
                .body(UpstreamBody::Full(Some(bytes::Bytes::from(vec![
                    b'x';
                    100
                ]))))
                .expect("request");
            let _ = send(front_addr, req).await;
        });
        let e = rx.await.expect("the forward failed");
        client.abort();
        assert_eq!(client_body_fault(&e), Some(ClientFault::TooLarge), "{e:?}");
        assert!(!retryable(&Attempt::Failed(Failure::Exchange(e)), true));
    }
}
