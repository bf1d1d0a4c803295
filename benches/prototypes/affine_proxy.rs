//! A measured prototype, not part of turnout: the least a hyper-based HTTP/1.1 proxy can do per
//! request, to size the next step of issue 16. Each client connection gets one upstream
//! connection of its own, driven with `hyper::client::conn::http1` (no shared pool, no
//! dispatch through hyper-util's legacy client, no per-request task); no routing, no headers
//! rewritten, no deadlines, no log.
//!
//!   cargo build --release --example affine_proxy
//!   benches/cpu-per-request.sh target/release/turnout target/release/examples/affine_proxy
//!
//! It takes turnout's command line as `benches/pinned.sh` gives it (`serve --config FILE`) and
//! reads `listen` and the first server from that file. Loopback only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// `listen = "..."` and the first `servers = ["..."]` entry of a turnout config.
fn addresses(config: &str) -> (SocketAddr, SocketAddr) {
    let value = |key: &str| {
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|rest| rest.split('"').nth(1))
            .unwrap_or_else(|| panic!("no {key} in the config"))
            .parse()
            .expect("an address")
    };
    (value("listen"), value("servers"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("--config FILE");
    let (listen, upstream) = addresses(&std::fs::read_to_string(file).expect("config"));
    assert!(
        listen.ip().is_loopback() && upstream.ip().is_loopback(),
        "loopback only"
    );
    let listener = TcpListener::bind(listen).await.expect("bind");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(up) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = up.set_nodelay(true);
            let Ok((sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(up)).await
            else {
                return;
            };
            tokio::spawn(conn);
            // HTTP/1.1 answers one request at a time per connection, so this lock is never
            // contended; it is held only to hand the request to the upstream connection.
            let sender = Arc::new(Mutex::new(sender));
            let service = service_fn(move |req: Request<Incoming>| {
                let sent = sender.lock().expect("lock").send_request(req);
                async move {
                    Ok::<_, Infallible>(match sent.await {
                        Ok(resp) => resp.map(BodyExt::boxed),
                        Err(_) => {
                            let mut bad =
                                Response::new(Empty::new().map_err(|n| match n {}).boxed());
                            *bad.status_mut() = StatusCode::BAD_GATEWAY;
                            bad
                        }
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(client), service)
                .await;
        });
    }
}
