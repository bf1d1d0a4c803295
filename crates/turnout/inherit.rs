//! Listening sockets turnout is handed at start rather than binding them itself: systemd's
//! (socket activation, `LISTEN_FDS`) or those of the turnout it takes over from, each used for
//! the listener configured at its address.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Listening sockets handed to turnout at start (systemd socket activation: `LISTEN_FDS`, read
/// by the listenfd crate; or the turnout it takes over from), each used for the listener
/// configured at its address. A listener configured at port 0 ("any") takes the socket of the
/// same key (`[server] listen`...) at the same IP: after an upgrade, the port it had.
#[derive(Debug)]
pub struct Inherited {
    /// Address, the key it served (sockets from a turnout), socket.
    pub sockets: Vec<(SocketAddr, Option<String>, std::net::TcpListener)>,
    /// Where they came from, for the log.
    pub from: &'static str,
}

impl Inherited {
    /// Nothing handed over: every listener is bound.
    pub fn none() -> Inherited {
        Inherited {
            sockets: Vec::new(),
            from: "nowhere",
        }
    }

    /// The sockets of the turnout taken over from, each with the key it served.
    pub fn from_takeover(listeners: Vec<(String, SocketAddr, std::net::TcpListener)>) -> Inherited {
        Inherited {
            sockets: listeners
                .into_iter()
                .map(|(key, addr, listener)| (addr, Some(key), listener))
                .collect(),
            from: "the turnout taken over from",
        }
    }

    /// The sockets systemd passed (`LISTEN_FDS`), if any.
    pub fn from_env() -> Result<Inherited, String> {
        let mut fds = listenfd::ListenFd::from_env();
        let mut sockets = Vec::new();
        for i in 0..fds.len() {
            let listener = fds.take_tcp_listener(i).map_err(|e| {
                format!(
                    "LISTEN_FDS: socket {} is no TCP listener turnout can use: {e}",
                    i + 3
                )
            })?;
            if let Some(listener) = listener {
                let addr = listener
                    .local_addr()
                    .map_err(|e| format!("LISTEN_FDS: socket {}: {e}", i + 3))?;
                sockets.push((addr, None, listener));
            }
        }
        Ok(Inherited {
            sockets,
            from: "LISTEN_FDS",
        })
    }

    /// The inherited socket at `addr`, or a new one bound there.
    pub async fn bind(&mut self, addr: SocketAddr, key: &str) -> Result<TcpListener, String> {
        let from = self.from;
        let same_key = |a: &SocketAddr, k: &Option<String>| {
            addr.port() == 0 && a.ip() == addr.ip() && k.as_deref() == Some(key)
        };
        let at = (self.sockets.iter().position(|(a, _, _)| *a == addr))
            .or_else(|| self.sockets.iter().position(|(a, k, _)| same_key(a, k)));
        if let Some(at) = at {
            let (addr, _, listener) = self.sockets.swap_remove(at);
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("the socket for {addr} ({key}) from {from}: {e}"))?;
            tracing::info!(%addr, key, from, "listening on a socket handed over at start");
            return TcpListener::from_std(listener)
                .map_err(|e| format!("the socket for {addr} ({key}) from {from}: {e}"));
        }
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} ({key}): {e}"))
    }

    /// Sockets handed over that no listener is configured at: said, and closed.
    pub fn warn_unused(self) {
        for (addr, _, _) in self.sockets {
            tracing::warn!(%addr, from = self.from, "a socket handed over matches no configured listener ([server] listen, admin, [tls] listen); closed");
        }
    }
}
