//! `[maintenance]`: who still gets through while maintenance mode is on (allow-lists of IPs,
//! paths, a header), what the others are told, and whether the health path fails meanwhile.

use std::path::Path;
use std::time::Duration;

use crate::error::ConfigError;
use crate::routing::TrustedProxies;
use crate::span::spanned_error;
use crate::{defaults, file};

/// `[maintenance]`: who still gets through while maintenance mode is on, and what the others
/// are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenancePolicy {
    /// The message when `turnout maintenance on` gives none.
    pub message: String,
    /// The `Retry-After` the maintenance answer carries.
    pub retry_after: Duration,
    /// Path prefixes that still reach the app.
    pub allow_paths: Vec<String>,
    /// Clients (the address `trusted_proxies` resolves to) that still reach the app.
    pub allow_ips: TrustedProxies,
    /// The health path fails during maintenance (the load balancer takes the instance out);
    /// by default it passes, so the load balancer keeps sending clients to the page.
    pub health_fails: bool,
}

impl Default for MaintenancePolicy {
    fn default() -> Self {
        MaintenancePolicy {
            message: defaults::MAINTENANCE_MESSAGE.to_owned(),
            retry_after: defaults::MAINTENANCE_RETRY_AFTER,
            allow_paths: Vec::new(),
            allow_ips: TrustedProxies::default(),
            health_fails: false,
        }
    }
}

pub(crate) fn resolve_maintenance(
    file: file::FileMaintenance,
    text: &str,
    path: &Path,
) -> Result<MaintenancePolicy, ConfigError> {
    let invalid = spanned_error(text, path, "maintenance");
    let mut policy = MaintenancePolicy::default();
    if let Some(m) = file.message {
        policy.message = m;
    }
    if let Some(d) = file.retry_after {
        policy.retry_after = d.0;
    }
    for p in file.allow_paths.unwrap_or_default() {
        if !p.get_ref().starts_with('/') {
            return Err(invalid(
                p.span(),
                "allow_paths",
                format!("{:?} must start with '/'", p.get_ref()),
            ));
        }
        policy.allow_paths.push(p.into_inner());
    }
    if let Some(ips) = file.allow_ips {
        let span = ips.first().map_or(0..0, toml::Spanned::span);
        policy.allow_ips = TrustedProxies::parse(ips.iter().map(|s| s.get_ref().as_str()))
            .map_err(|m| invalid(span, "allow_ips", m))?;
    }
    if let Some(h) = file.health {
        policy.health_fails = match h.get_ref().as_str() {
            "pass" => false,
            "fail" => true,
            other => {
                return Err(invalid(
                    h.span(),
                    "health",
                    format!(
                    "{other:?}: write \"pass\" (the load balancer keeps the instance) or \"fail\""
                ),
                ))
            }
        };
    }
    Ok(policy)
}
