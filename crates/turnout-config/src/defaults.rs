//! Every default, named, with its unit. `config/turnout.toml` shows the same values.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The port the load balancer talks to.
pub fn listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080))
}

/// The admin API: loopback only unless configured otherwise.
pub fn admin() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9901))
}

/// The path the load balancer's health check asks for (the ALB's in the seed documents).
pub const HEALTH_PATH: &str = "/health-check";

/// How long the health path answers 503 before the listener closes, so the load balancer
/// notices and stops sending new connections (an ALB checks every 5 to 30 s; tune to match).
pub const SHUTDOWN_DELAY: Duration = Duration::from_secs(5);

/// How long requests and tunnels in flight may take to finish at shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Client connections held at once; further ones wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 50_000;

/// A TCP connect to an upstream slower than this answers 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An upstream that sends no response head within this answers 504.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle keep-alive connections to upstreams are closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle keep-alive connections kept per upstream server.
pub const MAX_IDLE_PER_SERVER: usize = 256;
