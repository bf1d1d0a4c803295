//! Test support for turnout, used only as a dev-dependency.
//!
//! - [`upstream`]: a real HTTP/1.1 + WebSocket app server on `127.0.0.1:0` that names itself in
//!   every answer, with slow, streaming, upload, download and header-echo endpoints.
//! - [`process`]: runs the real `turnout` binary with a config, finds its ports in its log, and
//!   keeps its log for failure messages.
//! - [`etcd`]: a real etcd (one member or a cluster of three) on loopback, for the fleet.
//! - [`grpc`]: a real gRPC server (tonic) and its client, for HTTP/2 upstreams.
//! - [`client`]: small HTTP clients for tests (keep-alive pooled, admin JSON calls).
//!
//! Everything binds loopback only, and every wait is bounded.

pub mod client;
pub mod etcd;
pub mod grpc;
pub mod process;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

/// Runs `fut`, failing the test with `what` if it takes longer than `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// Polls `check` every 10 ms until it returns true, for at most `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(secs, what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The byte at `offset` of the deterministic test stream used by uploads and downloads.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 13)) as u8
}

/// FNV-1a over a byte stream, to check that a body crossed the proxy intact.
#[derive(Debug, Clone, Copy)]
pub struct Checksum(pub u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Fills `buf` with the test pattern starting at `offset`.
pub fn fill_pattern(buf: &mut [u8], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + i as u64);
    }
}
