//! The body every response of the data plane carries: an upstream's body streamed through, or a
//! short synthetic one. The upstream variant holds the request's [`InFlight`] guard and drops it
//! at the body's last frame, so a pool counts a request in flight until its response has fully
//! left, and a streaming response keeps its pool alive however many switches happen meanwhile.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use turnout_core::InFlight;

pin_project_lite::pin_project! {
    #[derive(Debug)]
    #[project = Proj]
    pub enum ProxyBody {
        Upstream {
            #[pin]
            body: Incoming,
            guard: Option<InFlight>,
        },
        Full {
            data: Option<Bytes>,
        },
    }
}

impl ProxyBody {
    pub fn upstream(body: Incoming, guard: InFlight) -> ProxyBody {
        ProxyBody::Upstream {
            body,
            guard: Some(guard),
        }
    }

    pub fn from_static(text: &'static str) -> ProxyBody {
        ProxyBody::Full {
            data: Some(Bytes::from_static(text.as_bytes())),
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full { data: None }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            Proj::Upstream { body, guard } => {
                let frame = ready!(body.poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) {
                    // The end, or an error that ends it: the request is no longer in flight.
                    guard.take();
                }
                Poll::Ready(frame)
            }
            Proj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
