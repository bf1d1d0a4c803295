//! How `turnout` ends when it cannot serve: the exit codes (sysexits.h's, as systemd and
//! shells read them), the error a start fails with ([`StartError`], its kind choosing the
//! code), and that error kept for the turnout this process was to take over from (an in-place
//! upgrade tells it why).

use std::process::ExitCode;

/// A config or command line that cannot be used.
pub const EX_USAGE: u8 = 64;
/// A state file or certificate that cannot be used.
pub const EX_DATAERR: u8 = 65;
/// A file or socket turnout must create and cannot (the state directory, the upgrade socket).
pub const EX_CANTCREAT: u8 = 73;

/// Why turnout did not start; the variant is whose fault it is, and chooses the exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config (or the environment standing in for it): exit 64.
    #[error("{0}")]
    Config(String),
    /// A file the config names, read and found wrong (state file, certificate, CA): exit 65.
    #[error("{0}")]
    Data(String),
    /// A file or socket turnout must write and cannot: exit 73.
    #[error("{0}")]
    CantCreate(String),
    /// Anything else: a port in use, a hand-over that broke off: exit 1.
    #[error("{0}")]
    Other(String),
}

impl StartError {
    /// The process's exit code for this error.
    pub fn code(&self) -> u8 {
        match self {
            StartError::Config(_) => EX_USAGE,
            StartError::Data(_) => EX_DATAERR,
            StartError::CantCreate(_) => EX_CANTCREAT,
            StartError::Other(_) => 1,
        }
    }

    /// Says the error on stderr (and keeps it, see [`last_error`]) and gives the exit code.
    pub fn exit(&self) -> ExitCode {
        fail(self.code(), self)
    }
}

/// Prints `error` to stderr and returns `code`. The error is kept for [`last_error`].
pub fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("turnout: error: {error}");
    remember(error);
    ExitCode::from(code)
}

/// Keeps `error` for [`last_error`].
pub fn remember(error: &dyn std::fmt::Display) {
    *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
}

static LAST_ERROR: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The error the start failed with, for the turnout this process was to take over from.
pub fn last_error() -> Option<String> {
    LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_exit_code_and_is_kept_for_a_hand_over() {
        let cases = [
            (StartError::Config("[server] listen".into()), 64),
            (StartError::Data("state.json".into()), 65),
            (StartError::CantCreate("/var/lib/turnout".into()), 73),
            (StartError::Other("port in use".into()), 1),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error:?}");
            let _ = error.exit();
            assert_eq!(last_error().as_deref(), Some(error.to_string().as_str()));
        }
    }
}
