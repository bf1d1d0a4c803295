#![warn(missing_docs)]
//! turnout's data plane: the port the load balancer talks to.
//!
//! # Layout
//! [`DataPlane`] (`plane`) is the handle the binary holds: it builds the one shared value,
//! `proxy::Proxy`, which owns each phase's state (`local::Local`, the `cache::Cache`, the
//! `forward::Forwarder` with its upstream connections and tunnels, the pages) beside the
//! router and the [`ProxySettings`]. Nothing below `proxy` knows it: each phase is a type of
//! its own, and only `request` and `route` (above it) act on the whole.
//!
//! One request meets these in order; each is a module of its own.
//! - [`listener`]: the accept loop (bounded, never dies on an accept error) and the drain at
//!   shutdown.
//! - [`tls`]: the HTTPS listener's handshake (ClientHello first, then a slot) and certificates
//!   (SNI, reload); the trust settings of `https://` upstreams.
//! - `serve`: one client connection: hyper over the socket, its deadlines (`deadlines`), what
//!   the request path knows of the client (`downstream`), the drain's close, cut-off logs.
//! - `request`: one request's path, phase by phase, top to bottom: start here.
//! - `local`: what turnout answers itself: the https redirect, `[[static]]` files
//!   (`local::files`), the pages of its own answers (`local::pages`: maintenance, 502/503/504,
//!   JSON for clients that ask); the health path is `proxy::Proxy::health`.
//! - `route`: one snapshot load, one decision: the pool, the cookies to set, and what holds
//!   the request first (maintenance mode, a pause); version-skew protection's pool and fallback.
//! - [`cache`]: the in-memory cache (moka, bounded in bytes) and its lookup: a hit, or one
//!   coalesced fetch per key through the forwarder.
//! - `forward`: the one forwarder (and its one retry rule) every path sends through, the upstream
//!   connections kept alive per worker thread (`forward::conns`, dialled through
//!   `forward::clients`), the upstream's answer turned into the client's response, upgrades
//!   tunneled (`forward::upgrade`).
//! - `access`: the access line, begun with the request and written once, with the answer to
//!   a failure (`Access::fail`).
//!
//! Beside the request path: [`checker`] (active health checks), `headers` (hop-by-hop,
//! `X-Forwarded-*`, Host), `body` (the response body, which holds the request's in-flight guard
//! to its last byte), `error` (what can fail, and the status each failure answers).

mod access;
mod auth;
mod body;
pub mod cache;
pub mod checker;
mod compress;
mod deadlines;
mod downstream;
mod error;
mod forward;
mod grpc;
pub mod headers;
mod limits;
pub mod listener;
mod local;
mod plane;
mod proxy;
mod request;
mod route;
mod serve;
mod settings;
pub mod tls;

pub use access::{set_access_sink, AccessSink};
pub use body::{ProxyBody, UpstreamBody};
pub use checker::{spawn_health_checks, HttpProber};
pub use error::{DisplayChain, ProxyError};
pub use listener::{Drained, TlsListener};
pub use plane::DataPlane;
pub use settings::ProxySettings;
pub use tls::{CertStore, TlsError, UpstreamTls};

#[cfg(test)]
mod fuzz;
