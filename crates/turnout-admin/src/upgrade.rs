//! `POST /v1/upgrade`: this turnout hands its listening sockets and its state file to a new
//! turnout process and drains. The binary owns processes, so it does the work behind
//! [`Upgrader`]; this crate only takes the call and answers it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::Serialize;

/// Starts a new turnout (this binary, or `binary`), hands it the sockets and answers once it
/// serves, or once it failed (this process serving on as before).
pub trait Upgrader: Send + Sync + std::fmt::Debug + 'static {
    /// Upgrades to `binary` (`None`: the binary this process was started from).
    fn upgrade(
        &self,
        binary: Option<PathBuf>,
    ) -> Pin<Box<dyn Future<Output = Result<UpgradeReport, UpgradeError>> + Send + 'static>>;

    /// Reloads the config file: checks it as `turnout check` does (a file that fails leaves
    /// this process untouched: [`UpgradeError::Invalid`]), then upgrades in place to this
    /// process's own binary, which reads it.
    fn reload(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<UpgradeReport, UpgradeError>> + Send + 'static>>;
}

/// What the new process is.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeReport {
    /// The process that handed over (this one, draining now).
    pub from_pid: u32,
    /// The process serving now.
    pub pid: u32,
    /// Its version (`turnout --version`).
    pub version: String,
    /// Its process generation (this one's plus one).
    pub generation: u64,
    /// The binary it runs.
    pub binary: String,
    /// From the start of the upgrade until the new process served.
    pub took_ms: u64,
}

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The binary named may not be started from here (not the running one, not listed in
    /// `[server] upgrade_binaries`, writable by others, or named without an admin token): 403,
    /// and nothing ran.
    #[error("{0}")]
    Forbidden(String),
    /// Not now, or not here: another upgrade is under way, a pause or a rollout would be cut in
    /// two, there is no state file to hand over (409).
    #[error("{0}")]
    Refused(String),
    /// A reload's config file fails its check: nothing was started, this process serves on
    /// untouched (422). The message is the check's, naming the file, the line and the key.
    #[error(
        "the config file fails its check; nothing was started and this turnout serves on: {0}"
    )]
    Invalid(String),
    /// The new process did not take over (bad binary, bad config, a state file it refused): it
    /// is gone and this one serves on. The message is the new process's own error (500).
    #[error("the upgrade failed and this turnout (pid {pid}) serves on: {message}")]
    Failed {
        /// This process, which serves on.
        pid: u32,
        /// The new process's own error.
        message: String,
    },
}
