//! `[grpc]`: which gRPC statuses count as the server's failure (an error in a pool's figures,
//! which the guarded rollout and the dashboard read) rather than the caller's.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::span::spanned_error;

/// `[grpc]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGrpc {
    /// Status names, such as `["UNAVAILABLE", "INTERNAL"]`.
    pub error_codes: Option<Spanned<Vec<Spanned<String>>>>,
}

/// gRPC's status codes by name, in code order (0 to 16).
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A set of gRPC status codes (0 to 16), one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcCodes(u32);

impl GrpcCodes {
    /// The codes that say the server failed: UNKNOWN, DEADLINE_EXCEEDED, INTERNAL,
    /// UNAVAILABLE, DATA_LOSS. The others (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, ...)
    /// are the caller's.
    pub const SERVER_FAULTS: GrpcCodes = GrpcCodes(1 << 2 | 1 << 4 | 1 << 13 | 1 << 14 | 1 << 15);

    /// Whether `code` is in the set.
    pub fn contains(self, code: u16) -> bool {
        code < 17 && self.0 & (1 << code) != 0
    }

    /// The set's names, in code order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        CODE_NAMES
            .iter()
            .enumerate()
            .filter(move |(code, _)| self.0 & (1 << code) != 0)
            .map(|(_, name)| *name)
    }
}

impl Default for GrpcCodes {
    fn default() -> Self {
        GrpcCodes::SERVER_FAULTS
    }
}

/// `[grpc]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grpc {
    /// `[grpc] error_codes`: the statuses counted as errors of the pool.
    pub error_codes: GrpcCodes,
}

pub(crate) fn resolve_grpc(file: FileGrpc, text: &str, path: &Path) -> Result<Grpc, ConfigError> {
    let invalid = spanned_error(text, path, "grpc");
    let Some(list) = file.error_codes else {
        return Ok(Grpc::default());
    };
    let mut codes = 0u32;
    for name in list.get_ref() {
        let wanted = name.get_ref().trim();
        let Some(code) = CODE_NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(wanted))
        else {
            return Err(invalid(
                name.span(),
                "error_codes",
                format!(
                    "{:?} is not a gRPC status: one of {}",
                    wanted.chars().take(64).collect::<String>(),
                    CODE_NAMES.join(", ")
                ),
            ));
        };
        if code == 0 {
            return Err(invalid(
                name.span(),
                "error_codes",
                "OK is a success, never an error".into(),
            ));
        }
        codes |= 1 << code;
    }
    Ok(Grpc {
        error_codes: GrpcCodes(codes),
    })
}
