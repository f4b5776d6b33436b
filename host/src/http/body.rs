//! The response body type of the proxy: either the upstream's body streamed
//! through untouched, or a small local body. An enum rather than a boxed
//! trait object, so a proxied response costs no extra allocation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::pool::ActiveRequest;

/// A response body sent to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from a backend. The guard keeps the backend's request
    /// counted as active until the body is finished or the client goes away.
    Upstream {
        /// The backend's body.
        body: Incoming,
        /// Counts the request as in flight while it lives.
        guard: ActiveRequest,
    },
    /// A body produced by the proxy or a policy.
    Local(Option<Bytes>),
}

impl ProxyBody {
    /// A local body.
    pub fn local(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Local(Some(bytes.into()))
    }
    /// An empty body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Local(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
            ProxyBody::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
