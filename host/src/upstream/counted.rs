//! A client's request body on its way to a backend through hyper's
//! client ([`CountedBody`]), counting its data bytes as they pass when
//! someone reads the count (the access log's `bytes_in` of a body without
//! `Content-Length`, e.g. an HTTP/2 upload). The count goes to the
//! upstream connection that carries the body ([`ConnectionState`]), which
//! the response body holds too: no allocation. Counting costs one relaxed
//! atomic add per frame; without it, nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::ConnectionState;

/// A request body that counts the data bytes it yields, when asked to.
#[derive(Debug)]
pub struct CountedBody {
    body: Incoming,
    /// Whether its bytes are counted.
    counted: bool,
    /// Where they are counted: the connection carrying it.
    into: Option<Arc<ConnectionState>>,
}

impl CountedBody {
    /// Streams `body`; `counted`: its data bytes are counted into the
    /// connection it goes on.
    pub fn new(body: Incoming, counted: bool) -> CountedBody {
        CountedBody {
            body,
            counted,
            into: None,
        }
    }

    /// The body goes on the connection of `state`: its count starts there
    /// from zero (when the body is counted).
    pub fn count_into(&mut self, state: &Arc<ConnectionState>) {
        if self.counted {
            state.request_bytes.store(0, Ordering::Relaxed);
            self.into = Some(Arc::clone(state));
        }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(into)) = (&frame, &this.into)
            && let Some(data) = frame.data_ref()
        {
            let bytes = &into.request_bytes;
            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
