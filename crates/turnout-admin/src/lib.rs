#![warn(missing_docs)]
//! turnout's admin API: JSON over HTTP on its own port, built with axum.
//!
//! | call | does |
//! |---|---|
//! | `GET /v1/status` | the routing state and each pool's servers and in-flight counts |
//! | `POST /v1/switch` `{"to":"green"}` | makes `green` the active pool |
//! | `POST /v1/rollback` | back to the previous pool |
//! | `POST /v1/prepare` `{"to":"green","ttl":"30s"}` | probes green now and holds the switch under a token |
//! | `POST /v1/commit` `{"token":"..."}` | applies a prepared switch at once |
//! | `POST /v1/abort` `{"token":"..."}` | drops a prepared switch |
//! | `PUT /v1/pools/{name}` `{"servers":["127.0.0.1:4001"]}` | creates a pool or replaces its servers |
//! | `POST /v1/pools/{name}/probe` | checks every server of the pool now, as a switch would; changes nothing else |
//! | `GET /` | the dashboard (the `ui` module); `GET /v1/stats` and `GET /v1/events` feed it |
//! | `POST /v1/upgrade` `{"binary":"/usr/local/bin/turnout"}` | hands the sockets to a new turnout process (see [`upgrade`]) |
//! | `POST /v1/reload` | checks the config file, then upgrades to the same binary, which reads it |
//!
//! Every error body is `{"error": "..."}`. The API changes routing only through
//! [`turnout_core::Control`]; it has no handle on connections.

mod error;
mod routes;
mod ui;
pub mod upgrade;

pub use error::ApiError;
pub use routes::{router, AdminPolicy};
pub use upgrade::{UpgradeError, UpgradeReport, Upgrader};

use std::future::Future;

use tokio::net::TcpListener;
use turnout_core::Control;

/// Serves the admin API on `listener` until `shutdown` completes; `POST /v1/upgrade` with an
/// `upgrader`.
pub async fn serve(
    listener: TcpListener,
    control: Control,
    policy: AdminPolicy,
    upgrader: Option<std::sync::Arc<dyn Upgrader>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(control, policy, upgrader))
        .with_graceful_shutdown(shutdown)
        .await
}
