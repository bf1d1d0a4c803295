//! The fleet's one error type: which side failed decides what the command line says and its
//! exit code (the store unreachable, the fleet busy, a change refused, a record corrupt).

use thiserror::Error;

/// What went wrong with a fleet operation.
#[derive(Debug, Clone, Error)]
pub enum FleetError {
    /// The store did not answer (or refused the credentials).
    #[error("cannot reach etcd at {endpoints}: {detail}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The client's error.
        detail: String,
    },
    /// Another coordinator holds the fleet's lock.
    #[error("fleet {fleet} is busy: {holder} is changing it (its lock ends when it does, or when its lease runs out)")]
    Busy {
        /// The fleet.
        fleet: String,
        /// Who holds the lock.
        holder: String,
    },
    /// The fleet has no desired state yet.
    #[error("fleet {fleet} has no desired state in etcd yet: start an instance with [fleet] name = \"{fleet}\" first (it seeds the fleet from its routing)")]
    Empty {
        /// The fleet.
        fleet: String,
    },
    /// The change is not valid for this fleet.
    #[error("{0}")]
    Invalid(String),
    /// The change would change nothing.
    #[error("{0}")]
    Unchanged(String),
    /// Members refused the prepare, or did not answer it in time: nothing changed.
    #[error("refused, nothing changed: {0}")]
    Refused(String),
    /// A key under the fleet holds something turnout did not write.
    #[error("the record at {key} is not one turnout wrote: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The coordinator lost its lock (its lease ran out) before the commit: nothing changed.
    #[error("the fleet lock was lost before the commit (the store was unreachable for longer than the lock's lease): nothing changed")]
    LockLost,
    /// The commit's answer was lost and a re-read could not tell whether it happened.
    #[error("the commit's outcome is unknown: {0}; run turnout fleet status")]
    Unknown(String),
}

impl FleetError {
    /// The command line's exit code: 1 refused or unreachable with nothing changed, 2 a bad
    /// argument, 4 the outcome is unknown.
    pub fn exit_code(&self) -> u8 {
        match self {
            FleetError::Invalid(_) => 2,
            FleetError::Unknown(_) => 4,
            _ => 1,
        }
    }
}
