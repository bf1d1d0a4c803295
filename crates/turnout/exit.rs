//! How `turnout` ends when it cannot serve: the exit codes (sysexits.h's, as systemd and
//! shells read them), and the error a start failed with, kept for the turnout this process was
//! to take over from (an in-place upgrade tells it why).

use std::process::ExitCode;

/// A config or command line that cannot be used.
pub const EX_USAGE: u8 = 64;
/// A state file or certificate that cannot be used.
pub const EX_DATAERR: u8 = 65;
/// A file or socket turnout must create and cannot (the state directory, the upgrade socket).
pub const EX_CANTCREAT: u8 = 73;

/// Prints `error` to stderr and returns `code`. The error is kept for [`last_error`].
pub fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("turnout: error: {error}");
    *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    ExitCode::from(code)
}

static LAST_ERROR: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The error the start failed with, for the turnout this process was to take over from.
pub fn last_error() -> Option<String> {
    LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
