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

/// Runtime threads: one per core.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

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

/// The health path answers 503 while the active pool has no healthy server.
pub const HEALTH_REFLECTS_POOL: bool = true;

/// A client must send a request head within this (slowloris protection).
pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle keep-alive client connections close after this. Above the AWS ALB's default idle
/// timeout (60 s), so the balancer, not turnout, closes idle connections: no 502 race.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Request headers: at most this many (more answers 431)...
pub const MAX_HEADER_COUNT: usize = 100;

/// ...and at most this many bytes for the request line and headers together (more answers 431).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Active checks: `GET` this path on every server of every pool.
pub const CHECK_PATH: &str = "/";

/// How often each server is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A check that takes longer fails.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Passing checks in a row that bring a server back.
pub const HEALTHY_THRESHOLD: u32 = 2;

/// Failing checks in a row that take a server out.
pub const UNHEALTHY_THRESHOLD: u32 = 2;

/// Consecutive failed requests (connect errors, resets, 502/503/504) that eject a server.
pub const PASSIVE_FAILURES: u32 = 5;

/// The first ejection's length; it doubles with each ejection in a row...
pub const EJECTION: Duration = Duration::from_secs(5);

/// ...up to this.
pub const MAX_EJECTION: Duration = Duration::from_secs(60);

/// The cookie that keeps a client on its pool while a split is in force.
pub const STICKY_COOKIE: &str = "turnout-pool";

/// The cookie that keeps a browser on a previewed pool.
pub const PREVIEW_COOKIE: &str = "turnout-preview";

/// The cache's bound on bytes held.
pub const CACHE_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Responses and files above this stream instead of being held in memory.
pub const CACHE_MAX_OBJECT: u64 = 8 * 1024 * 1024;

/// The HTTPS listener, when `[tls]` is present.
pub fn tls_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 443))
}

/// A TLS client must finish its handshake within this, or the connection is closed.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once; further connections wait (within their handshake
/// timeout) for one to finish, so a flood of slow handshakes cannot take every core.
pub const TLS_MAX_HANDSHAKES: usize = 1024;

/// How often `[tls] watch = true` looks at the certificate files for a change.
pub const TLS_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A client that reads none of its response for this long is cut off (nginx's `send_timeout`).
pub const CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTP/1 request body with no byte for this long is given up on (nginx's
/// `client_body_timeout`).
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// An upstream body with no byte for this long after its head is given up on (nginx's
/// `proxy_read_timeout`). A stream of server-sent events needs a heartbeat more often.
pub const UPSTREAM_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a client may upgrade a connection to, unless `server.upgrade_protocols` says more.
pub const UPGRADE_PROTOCOL: &str = "websocket";

/// What a client is told while maintenance mode is on, unless the call or `[maintenance]` says.
pub const MAINTENANCE_MESSAGE: &str = "This site is down for maintenance and will be back shortly.";
/// `Retry-After` of a maintenance answer.
pub const MAINTENANCE_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest a paused request is held before it gets 503.
pub const PAUSE_MAX_HOLD: Duration = Duration::from_secs(30);
/// The most requests a pause holds at once; past it the oldest gets 503.
pub const PAUSE_MAX_REQUESTS: usize = 10_000;
/// The most bytes of held requests' heads a pause keeps; past it the oldest gets 503.
pub const PAUSE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// `[fleet] lease_ttl`: a member that stops renewing leaves the fleet's roster after this.
pub const FLEET_LEASE_TTL: Duration = Duration::from_secs(5);
/// `[fleet] join_timeout`: how long a start waits to join its fleet before serving anyway.
pub const FLEET_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `[compression] min_size`: shorter bodies gain less than compressing them costs.
pub const COMPRESSION_MIN_SIZE: u64 = 1024;

/// `[[auth]] timeout` (kind = "forward"): the most an auth service may take to answer.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
