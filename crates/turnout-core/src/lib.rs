#![warn(missing_docs)]
//! turnout's routing state, shared by the data plane and the admin API and owned by neither.
//!
//! # Layout
//! - [`pool`]: a pool of upstream servers, its round-robin pick and its in-flight counters.
//! - [`health`]: one server's health flags (active verdict, passive ejection).
//! - [`metrics`]: the Prometheus registry and the per-pool counter handles.
//! - [`snapshot`]: the immutable [`RoutingSnapshot`] and the [`Router`] that holds the one
//!   `ArcSwap` the data plane loads once per request.
//! - [`split`]: the weights that share new clients between pools.
//! - [`decide`]: the routing decision's parts: settings, rules, shares, the answer; `routing.rs`
//!   puts them to work on a snapshot (preview, rules, fleet mark, stickiness, weighted draw).
//! - [`command`]: the changes an operator can make, applied to a snapshot to build the next one.
//! - [`control`]: the single writer: apply, persist, swap, audit-log; the freeze an upgrade
//!   holds. Named services over it: the two-phase switch (`control::two_phase`,
//!   [`Control::two_phase`]) and the guarded rollouts ([`Control::rollouts`]).
//! - [`state`]: the crash-safe state file.
//! - [`events`]: the recent events (routing and health changes) the dashboard lists.
//! - [`stats`]: each pool's last minutes, a point a second, for the dashboard.
//! - [`path`]: request paths normalised for prefix lists, matched on segment boundaries.
//! - [`process`]: which generation of the process serves (1, plus one per in-place upgrade).
//! - [`rollout`]: the guarded rollout: windows of a pool's own counters, the verdict on a step,
//!   and the book of rollouts (`rollout::book`); [`rollouts`]: the steps run through `Control` by
//!   [`Rollouts`], which owns the marker file and is given the [`StepCheck`] that runs a step's
//!   `check_cmd`.
//! - [`fleet`]: what this instance knows of the fleet it follows: the health path's hold while
//!   it has not joined or is behind, and the generations applied and seen.
//! - [`handles`]: what `Control` administers beside the routing: the cache and the certificates.
//!
//! No hyper, no sockets and no processes here: the data plane and the admin API both see only
//! this crate; what starts a process (a step's `check_cmd`) is handed in by the binary.

pub mod command;
pub mod control;
pub mod decide;
mod error;
pub mod events;
pub mod fleet;
pub mod handles;
pub mod health;
pub mod metrics;
pub mod path;
pub mod pause;
pub mod pool;
pub mod process;
pub mod reload;
pub mod rollout;
pub mod rollouts;
mod routing;
pub mod snapshot;
pub mod split;
pub mod state;
pub mod stats;
pub mod status;

pub use command::{Command, MaintenanceSpec, MirrorSpec};
pub use control::{
    CacheAdmin, CacheStats, CertInfo, Control, Handles, Prepared, TlsAdmin, TlsReloadError,
};
pub use decide::{Decision, Reason, Refusal, RequestInfo};
pub use error::{CoreError, StateError};
pub use health::ServerHealth;
pub use metrics::{Metrics, PoolMetrics};
pub use pool::{InFlight, Pool, PoolCookies, PoolSettings, PoolStats, TunnelGuard, Upstream};
pub use rollouts::{RolloutReport, RolloutRequest, Rollouts, StepCheck, StepReport};
pub use snapshot::{Env, FleetMark, Router, RoutingSnapshot, MARK_COOKIE};
pub use split::Weights;
pub use state::StateFile;
pub use turnout_config::file::HumanDuration;
pub use turnout_config::parse_duration;
pub use turnout_config::rollout::{RolloutOverrides, RolloutPolicy};
pub use turnout_config::{Backend, Balance, PoolName, Rule, RuleSpec, ServerAddr, ServerEntry};
