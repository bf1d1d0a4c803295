//! The gRPC side of `benches/grpc-vs-nginx.sh`: the app (tonic's Echo server) and a tonic
//! client sending unary calls as fast as the proxy in front answers them.
//!
//!     grpc-load serve 127.0.0.1:PORT
//!     grpc-load call 127.0.0.1:PORT CONNECTIONS CONCURRENCY SECONDS
//!
//! `call` keeps CONCURRENCY calls in flight, spread over CONNECTIONS HTTP/2 connections, for
//! SECONDS (at most 600), and prints `calls N failed F seconds S`. Loopback addresses only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnout_testkit::grpc::{EchoClient, EchoRequest, GrpcUpstream};

fn usage() -> ! {
    eprintln!("usage: grpc-load serve ADDR | grpc-load call ADDR CONNECTIONS CONCURRENCY SECONDS");
    std::process::exit(2)
}

fn loopback(arg: Option<String>) -> SocketAddr {
    let addr: SocketAddr = arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| usage());
    if !addr.ip().is_loopback() {
        eprintln!("grpc-load: {addr} is not a loopback address");
        std::process::exit(2)
    }
    addr
}

fn number(arg: Option<String>, max: u64) -> u64 {
    arg.and_then(|a| a.parse().ok())
        .filter(|n| (1..=max).contains(n))
        .unwrap_or_else(|| usage())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("serve") => {
            let addr = loopback(args.next());
            let _server = GrpcUpstream::start_on("blue", addr).await;
            std::future::pending::<()>().await;
        }
        Some("call") => {
            let addr = loopback(args.next());
            let connections = number(args.next(), 64);
            let concurrency = number(args.next(), 10_000);
            let seconds = number(args.next(), 600);
            call(addr, connections as usize, concurrency, seconds).await;
        }
        _ => usage(),
    }
}

async fn call(addr: SocketAddr, connections: usize, concurrency: u64, seconds: u64) {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("an address")
            .connect()
            .await
            .unwrap_or_else(|e| {
                eprintln!("grpc-load: cannot connect to {addr}: {e}");
                std::process::exit(1)
            });
        clients.push(EchoClient::new(channel));
    }
    let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency as usize)
        .map(|i| {
            let mut client = clients[i % connections].clone();
            let (calls, failed, stop) = (calls.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let req = EchoRequest {
                    message: "hello".into(),
                    count: 0,
                    delay_ms: 0,
                };
                while !stop.load(Ordering::Relaxed) {
                    match client.unary(req.clone()).await {
                        Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    println!(
        "calls {} failed {} seconds {elapsed:.3}",
        calls.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
}
