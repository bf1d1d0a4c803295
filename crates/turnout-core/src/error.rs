//! The errors of this crate: [`CoreError`] for a refused or failed change (the admin API picks
//! the status from the variant), [`StateError`] for a state file that cannot be trusted at start.

use std::path::PathBuf;

/// Why the routing state refused a change; the admin API picks the status by the variant.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The caller named a pool that does not exist.
    #[error("unknown pool {name:?} (pools: {known})")]
    UnknownPool {
        /// The name asked for.
        name: String,
        /// The pools there are.
        known: String,
    },
    /// A rollback with nothing to roll back to.
    #[error("no previous pool to roll back to")]
    NoPrevious,
    /// A switch to a pool that has no server to send requests to.
    #[error("pool {name:?} has no servers; register them first with PUT /v1/pools/{name}")]
    EmptyPool {
        /// The pool.
        name: String,
    },
    /// Replacing a serving pool's servers with none would take its clients down.
    #[error("pool {name:?} cannot be left without servers: {why}; switch away (or change the split and rules) first")]
    PoolInUse {
        /// The pool.
        name: String,
        /// What it serves (the split, a rule).
        why: String,
    },
    /// The health gate: a fresh probe of the target pool found no healthy server.
    #[error("pool {pool:?} has no healthy server ({}); nothing was changed. Send \"force\": true to switch anyway", failures.join("; "))]
    Unhealthy {
        /// The pool.
        pool: String,
        /// Why each server failed.
        failures: Vec<String>,
    },
    /// The health gate: some servers passed, fewer than the pool's `gate` asks for.
    #[error("pool {pool:?} did not pass its health gate: {passed} of {total} servers passed, the gate ({gate}) needs {needed} ({}); nothing was changed. Send \"force\": true to switch anyway", failures.join("; "))]
    GateNotMet {
        /// The pool.
        pool: String,
        /// The gate, as configured.
        gate: String,
        /// Servers that passed.
        passed: usize,
        /// Servers probed.
        total: usize,
        /// Servers the gate needs.
        needed: usize,
        /// Why each failed.
        failures: Vec<String>,
    },
    /// A commit or abort whose token names no pending prepared switch (never issued, already
    /// used or aborted, or expired).
    #[error("no prepared switch {token:?} is pending (unknown, already committed or aborted, or expired); nothing was changed")]
    NotPrepared {
        /// The token named.
        token: String,
    },
    /// A commit after the routing changed since its prepare.
    #[error("the routing changed since switch {token:?} was prepared (generation {prepared}, now {now}); nothing was changed, prepare again")]
    Moved {
        /// The prepare's token.
        token: String,
        /// The generation it was prepared at.
        prepared: u64,
        /// The generation now.
        now: u64,
    },
    /// A prepare while another prepared switch is pending.
    #[error("{change} is already prepared as {token:?} (expires in {expires_in_ms} ms); commit or abort it first")]
    AlreadyPrepared {
        /// The pending prepare's token.
        token: String,
        /// What it would do.
        change: String,
        /// When it expires.
        expires_in_ms: u64,
    },
    /// A change while turnout hands its sockets and its state file to a new process: the old
    /// one writes no more, the new one takes changes as soon as it serves.
    #[error("turnout is upgrading itself ({detail}): the routing cannot change for a moment; retry, and the new process takes it")]
    Upgrading {
        /// What the upgrade is doing.
        detail: String,
    },
    /// A rollout while another is under way.
    #[error("rollout {id} of pool {target:?} is under way ({percent}% now); abort it first with POST /v1/rollout/abort")]
    RolloutRunning {
        /// The rollout under way.
        id: u64,
        /// Its pool.
        target: String,
        /// Its share now, in percent.
        percent: u32,
    },
    /// An abort with no rollout under way.
    #[error("no rollout is under way")]
    NoRollout,
    /// A malformed pool name or server address from the caller.
    #[error("{0}")]
    Invalid(String),
    /// The new state could not be written; nothing was changed.
    #[error("could not write the state file {path}: {source}; nothing was changed")]
    Persist {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a state file cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It cannot be read.
    #[error("cannot read state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It is not a state file turnout can read (not JSON, or values that do not fit).
    #[error(
        "state file {path} is corrupt: {detail}. It records which pool is live; fix it by hand, or \
         move it aside to start from the config's [routing] active"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        detail: String,
    },
    /// It cannot be written.
    #[error("cannot write state file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
