//! What `Control` administers beside the routing state, as the admin API sees it: the data
//! plane's cache and the HTTPS listener's certificates, each a trait the data plane implements.
//! A leaf: the counters (`metrics.rs`) and the status read these types without knowing `Control`.

use std::future::Future;
use std::pin::Pin;

/// The data plane's cache, as the admin API sees it (the data plane implements it; the admin API
/// reaches it only through [`crate::control::Control`]).
pub trait CacheAdmin: Send + Sync + std::fmt::Debug + 'static {
    /// Drops cached upstream assets of `pool` and/or under `prefix` (every entry, static files
    /// included, when both are `None`). Answers how many entries were dropped.
    fn purge<'a>(
        &'a self,
        pool: Option<&'a str>,
        prefix: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = u64> + Send + 'a>>;
    /// What it holds now, and its hits and misses.
    fn stats(&self) -> Pin<Box<dyn Future<Output = CacheStats> + Send + '_>>;
}

/// What the cache holds and how it did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CacheStats {
    /// Bytes held.
    pub bytes: u64,
    /// The bound on the bytes held (`[cache] max_bytes`).
    pub max_bytes: u64,
    /// Entries held.
    pub entries: u64,
    /// Lookups served from memory since start-up.
    pub hits: u64,
    /// Lookups that went upstream since start-up.
    pub misses: u64,
}

/// The HTTPS listener's certificates, as the admin API sees them (the data plane implements it).
pub trait TlsAdmin: Send + Sync + std::fmt::Debug + 'static {
    /// Reads every certificate and key again; on failure the set in use stays.
    fn reload(&self) -> Result<Vec<CertInfo>, TlsReloadError>;
    /// The certificates being served.
    fn certs(&self) -> Vec<CertInfo>;
}

/// One certificate being served.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CertInfo {
    /// The certificate file, as configured.
    pub cert: String,
    /// The key file, as configured.
    pub key: String,
    /// Its DNS names (subject alternative names, else the common name).
    pub names: Vec<String>,
    /// Hex, as `openssl x509 -serial` prints it (with colons).
    pub serial: String,
    /// RFC 3339.
    pub not_after: String,
    /// `not_after`, in seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// Whole days until it expires (negative once it has).
    pub days_left: i64,
}

/// Why a reload was refused.
#[derive(Debug, Clone)]
pub struct TlsReloadError {
    /// Names the file and what is wrong with it.
    pub message: String,
    /// The file could not be read at all (the host's fault), rather than read and found bad.
    pub io: bool,
}
