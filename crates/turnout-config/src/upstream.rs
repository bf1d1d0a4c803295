//! `[upstream]`: how turnout talks to the app servers: timeouts, idle connections, and
//! holding requests while a pool has no server able to take one.

use std::time::Duration;

use crate::defaults;
use crate::file::FileUpstream;

/// `[upstream]`: how turnout talks to the app servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// A connection to a server must be made within this.
    pub connect_timeout: Duration,
    /// A server must send its response head within this.
    pub response_timeout: Duration,
    /// An idle connection to a server is closed after this.
    pub idle_timeout: Duration,
    /// Idle connections kept per server (per worker thread).
    pub max_idle_per_server: usize,
    /// An upstream body with no byte for this long after its head is given up on.
    pub body_timeout: Duration,
    /// A request whose pool has no server able to take it (an app restarting) waits up to this
    /// long for one instead of an immediate 503/502; `None`: no wait.
    pub hold_when_unavailable: Option<Duration>,
}

impl FileUpstream {
    /// `[upstream]` over the defaults. Its durations are bounded where they are read
    /// (`HumanDuration`); a `hold_when_unavailable` of zero means no wait.
    pub(crate) fn resolve(self) -> Upstream {
        Upstream {
            connect_timeout: self
                .connect_timeout
                .map_or(defaults::CONNECT_TIMEOUT, |d| d.0),
            response_timeout: self
                .response_timeout
                .map_or(defaults::RESPONSE_TIMEOUT, |d| d.0),
            idle_timeout: self.idle_timeout.map_or(defaults::IDLE_TIMEOUT, |d| d.0),
            max_idle_per_server: self
                .max_idle_per_server
                .unwrap_or(defaults::MAX_IDLE_PER_SERVER),
            body_timeout: self
                .body_timeout
                .map_or(defaults::UPSTREAM_BODY_TIMEOUT, |d| d.0),
            hold_when_unavailable: self
                .hold_when_unavailable
                .map(|d| d.0)
                .filter(|d| !d.is_zero()),
        }
    }
}
