//! A real gRPC server (tonic) on `127.0.0.1:0` that names itself in every answer: unary,
//! server-streaming and bidirectional calls, a chosen status on request, a trailer of its own;
//! and a client for it. HTTP/2 only, as gRPC servers are. It serves the gRPC health-checking
//! protocol too (tonic-health: the service `turnout.test.Echo` and "" SERVING until told).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The generated messages, server and client of proto/echo.proto.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod proto {
    tonic::include_proto!("turnout.test");
}

pub use proto::echo_client::EchoClient;
pub use proto::{EchoReply, EchoRequest};

/// The trailer every answer of the server carries beside `grpc-status`: its name.
pub const SERVED_BY: &str = "x-served-by";

/// A running gRPC server; stopped when dropped.
#[derive(Debug)]
pub struct GrpcUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    name: &'static str,
    calls: Arc<AtomicU64>,
    fail_percent: Arc<AtomicU64>,
    /// What its health service answers for `turnout.test.Echo`: SERVING or NOT_SERVING.
    serving: Arc<std::sync::atomic::AtomicBool>,
    health: tonic_health::server::HealthReporter,
    /// Its certificate chain and key (PEM), when it speaks TLS.
    tls: Option<(String, String)>,
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GrpcUpstream {
    /// Starts a server named `name` on `127.0.0.1:0`. It also answers turnout's health checks:
    /// a plain HTTP/2 `GET /health` gets 200 (tonic's router serves it beside the service).
    pub async fn start(name: &'static str) -> GrpcUpstream {
        Self::start_at(
            name,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::default(),
            Arc::default(),
            Arc::new(true.into()),
            None,
        )
        .await
    }

    /// A server named `name` on `addr` (a loopback address), for the benches.
    pub async fn start_on(name: &'static str, addr: SocketAddr) -> GrpcUpstream {
        Self::start_at(
            name,
            addr,
            Arc::default(),
            Arc::default(),
            Arc::new(true.into()),
            None,
        )
        .await
    }

    /// The same over TLS (ALPN `h2`), with the certificate chain and key given (PEM).
    pub async fn start_tls(name: &'static str, chain: &str, key: &str) -> GrpcUpstream {
        Self::start_at(
            name,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::default(),
            Arc::default(),
            Arc::new(true.into()),
            Some((chain.to_owned(), key.to_owned())),
        )
        .await
    }

    async fn start_at(
        name: &'static str,
        addr: SocketAddr,
        calls: Arc<AtomicU64>,
        fail_percent: Arc<AtomicU64>,
        serving: Arc<std::sync::atomic::AtomicBool>,
        tls: Option<(String, String)>,
    ) -> GrpcUpstream {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local addr");
        let service = proto::echo_server::EchoServer::new(Echo {
            name,
            calls: Arc::clone(&calls),
            fail_percent: Arc::clone(&fail_percent),
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, serving.load(Ordering::Relaxed)).await;
        let router = tonic::service::Routes::new(service)
            .add_service(health_service)
            .into_axum_router()
            .merge(axum_health());
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        if let Some((chain, key)) = &tls {
            let identity = tonic::transport::Identity::from_pem(chain, key);
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .expect("the test certificate");
        }
        let task = tokio::spawn(async move {
            let _ = builder
                .add_routes(router.into())
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        GrpcUpstream {
            addr,
            name,
            calls,
            fail_percent,
            serving,
            health,
            tls,
            task,
            stop: Some(stop),
        }
    }

    /// What its gRPC health service says of `turnout.test.Echo` (and of ""): SERVING or
    /// NOT_SERVING. Kept across a restart.
    pub async fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
        set_health(&self.health, serving).await;
    }

    /// Restarts it as an app server restarts: a graceful stop (GOAWAY: calls under way finish,
    /// new ones go elsewhere), its port closed for `down`, then a new server on the same
    /// address. The call count carries on.
    pub async fn restart(&mut self, down: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        tokio::time::sleep(down).await;
        *self = Self::start_at(
            self.name,
            self.addr,
            Arc::clone(&self.calls),
            Arc::clone(&self.fail_percent),
            Arc::clone(&self.serving),
            self.tls.clone(),
        )
        .await;
    }

    /// `127.0.0.1:PORT`, as a pool's server entry.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    /// Calls it has taken (every kind).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Answers this share (in percent) of its unary calls with UNAVAILABLE, spread evenly
    /// (every call whose number modulo 100 is under it).
    pub fn set_fail_percent(&self, percent: u64) {
        self.fail_percent.store(percent, Ordering::Relaxed);
    }

    /// Stops it at once: its listener and every connection close.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The service name turnout's gRPC checks ask about in the tests.
pub const SERVICE: &str = "turnout.test.Echo";

async fn set_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic_health::ServingStatus;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in [SERVICE, ""] {
        reporter.set_service_status(service, status).await;
    }
}

fn axum_health() -> tonic::service::AxumRouter {
    tonic::service::AxumRouter::new().route("/health", axum::routing::get(|| async { "ok\n" }))
}

struct Echo {
    name: &'static str,
    calls: Arc<AtomicU64>,
    fail_percent: Arc<AtomicU64>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

impl Echo {
    fn reply(&self, message: String, index: u32) -> EchoReply {
        EchoReply {
            server: self.name.to_owned(),
            message,
            index,
        }
    }

    fn served<T>(&self, body: T) -> Response<T> {
        let mut resp = Response::new(body);
        resp.metadata_mut()
            .insert(SERVED_BY, self.name.parse().expect("a name is ASCII"));
        resp
    }
}

#[tonic::async_trait]
impl proto::echo_server::Echo for Echo {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if n % 100 < self.fail_percent.load(Ordering::Relaxed) {
            return Err(Status::unavailable(format!("{} is failing", self.name)));
        }
        let req = req.into_inner();
        if let Some(rest) = req.message.strip_prefix("fail:") {
            let (code, text) = rest.split_once(':').unwrap_or((rest, ""));
            let code = tonic::Code::from_i32(code.parse().unwrap_or(2));
            return Err(Status::new(code, text.to_owned()));
        }
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms.into())).await;
        }
        Ok(self.served(self.reply(req.message, 0)))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let req = req.into_inner();
        let name = self.name;
        let delay = Duration::from_millis(req.delay_ms.into());
        let stream = async_stream(req.count, move |i| {
            let message = req.message.clone();
            async move {
                if i > 0 {
                    tokio::time::sleep(delay).await;
                }
                Ok(EchoReply {
                    server: name.to_owned(),
                    message,
                    index: i,
                })
            }
        });
        Ok(self.served(Box::pin(stream) as ReplyStream))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let name = self.name;
        let mut index = 0;
        let stream = req.into_inner().map(move |item| {
            let item = item?;
            index += 1;
            Ok(EchoReply {
                server: name.to_owned(),
                message: item.message,
                index: index - 1,
            })
        });
        Ok(self.served(Box::pin(stream) as ReplyStream))
    }
}

/// `count` items made one after another by `make(i)`.
fn async_stream<F, Fut>(count: u32, make: F) -> impl Stream<Item = Result<EchoReply, Status>>
where
    F: Fn(u32) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<EchoReply, Status>> + Send,
{
    tokio_stream::iter(0..count).then(make)
}

/// A client of the Echo service through `addr` (turnout's proxy port, or the server itself),
/// over cleartext HTTP/2 with prior knowledge.
pub async fn client(addr: SocketAddr) -> EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("an endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the gRPC endpoint");
    EchoClient::new(channel)
}

/// `req` as one gRPC message on the wire (not compressed, its length first), for tests that
/// send a call by hand.
pub fn frame(req: &EchoRequest) -> bytes::Bytes {
    use prost::Message;
    let body = req.encode_to_vec();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(body.len())
            .expect("a small message")
            .to_be_bytes(),
    );
    out.extend_from_slice(&body);
    out.into()
}
