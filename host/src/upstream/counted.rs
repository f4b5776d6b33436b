//! A client's request body on its way to a backend through hyper's
//! client ([`CountedBody`]), counting its data bytes as they pass when
//! someone reads the count (the access log's `bytes_in` of a body without
//! `Content-Length`, e.g. an HTTP/2 upload). Counting costs one relaxed
//! atomic add per frame; without a counter, nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request body that adds the data bytes it yields to `counter`.
#[derive(Debug)]
pub struct CountedBody {
    body: Incoming,
    counter: Option<Arc<AtomicU64>>,
}

impl CountedBody {
    /// Streams `body`, adding its data bytes to `counter` when there is one.
    pub fn new(body: Incoming, counter: Option<Arc<AtomicU64>>) -> CountedBody {
        CountedBody { body, counter }
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
        if let (Poll::Ready(Some(Ok(frame))), Some(counter)) = (&frame, &this.counter)
            && let Some(data) = frame.data_ref()
        {
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
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
