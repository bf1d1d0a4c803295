//! What one accepted connection knows about its client: its address (and the header value
//! made of it once), and whether it came in over HTTPS. Every phase of a request reads it.

use std::net::SocketAddr;

use http::HeaderValue;

/// What one accepted connection knows about its client.
#[derive(Debug, Clone)]
pub(crate) struct Downstream {
    pub peer: SocketAddr,
    /// The client's IP, formatted once per connection for `X-Forwarded-For`.
    pub ip_header: HeaderValue,
    /// Came in over the HTTPS listener.
    pub https: bool,
}

impl Downstream {
    pub fn new(peer: SocketAddr, https: bool) -> Downstream {
        let ip_header = HeaderValue::try_from(peer.ip().to_string())
            .expect("an IP address is a valid header value");
        Downstream {
            peer,
            ip_header,
            https,
        }
    }

    /// `X-Forwarded-Proto`.
    pub fn proto(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}
