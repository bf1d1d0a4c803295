//! `[pause]`: how long a paused request is held at most, and how many are held (in all, and
//! per client).

use std::path::Path;
use std::time::Duration;

use crate::error::ConfigError;
use crate::span::{invalid_key, spanned_error};
use crate::{defaults, file};

/// `[pause]`: how long and how many requests a pause holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PausePolicy {
    /// The longest a request is held before it gets 503.
    pub max_hold: Duration,
    /// The most requests held at once.
    pub max_requests: usize,
    /// The bound on held requests' heads, in bytes.
    pub max_bytes: u64,
    /// Held requests one client address may have; past it that client's own oldest is shed.
    pub max_per_client: usize,
}

impl Default for PausePolicy {
    fn default() -> Self {
        PausePolicy {
            max_hold: defaults::PAUSE_MAX_HOLD,
            max_requests: defaults::PAUSE_MAX_REQUESTS,
            max_bytes: defaults::PAUSE_MAX_BYTES,
            max_per_client: (defaults::PAUSE_MAX_REQUESTS * 3).div_ceil(4),
        }
    }
}

pub(crate) fn resolve_pause(
    file: file::FilePause,
    text: &str,
    path: &Path,
) -> Result<PausePolicy, ConfigError> {
    let invalid = spanned_error(text, path, "pause");
    let mut policy = PausePolicy::default();
    if let Some(d) = file.max_hold {
        if d.0.is_zero() {
            return Err(invalid_key(
                text,
                path,
                "pause.max_hold",
                "must be more than zero",
            ));
        }
        policy.max_hold = d.0;
    }
    if let Some(n) = file.max_requests {
        if *n.get_ref() == 0 {
            return Err(invalid(
                n.span(),
                "max_requests",
                "must be at least 1".into(),
            ));
        }
        policy.max_requests = n.into_inner();
        policy.max_per_client = (policy.max_requests * 3).div_ceil(4);
    }
    if let Some(n) = file.max_per_client {
        if *n.get_ref() == 0 {
            return Err(invalid(
                n.span(),
                "max_per_client",
                "must be at least 1".into(),
            ));
        }
        policy.max_per_client = n.into_inner().min(policy.max_requests);
    }
    if let Some(b) = file.max_bytes {
        policy.max_bytes = b
            .get_ref()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                invalid(
                    b.span(),
                    "max_bytes",
                    format!("invalid size {:?}: write it like \"64MiB\"", b.get_ref()),
                )
            })?;
    }
    Ok(policy)
}
