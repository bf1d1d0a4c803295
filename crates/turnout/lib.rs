#![warn(missing_docs)]
//! turnout as a library: [`run`] serves a config on listeners the caller bound until a
//! shutdown future completes (mini-redis's `server::run` shape), so tests start the whole of
//! turnout in-process; and the commands of the `turnout` binary (serving, the admin client,
//! the fleet coordinator, the in-place upgrade), which `main.rs` only dispatches to.

pub mod app;
pub mod check_cmd;
pub mod client;
pub mod demo;
pub mod deploy;
pub mod exit;
pub mod fleet;
pub mod hash_password;
pub mod inherit;
pub mod logbuf;
pub mod member;
pub mod rollout;
pub mod signals;
pub mod upgrade;

pub use app::{run, Bound, Listeners};
pub use exit::StartError;
