//! The fast codec's upstream connection: a byte stream to the backend and
//! its read buffer.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

use super::{MaybeTls, Reusable};

/// One upstream HTTP/1.1 connection of the fast path.
pub struct RawConnection {
    /// The stream to the backend.
    pub stream: MaybeTls,
    /// Bytes read from the backend and not consumed yet.
    pub buffer: BytesMut,
}

impl Reusable for RawConnection {
    /// Bytes left over from the last response: the backend broke the
    /// protocol, the connection cannot carry another request.
    fn is_closed(&mut self) -> bool {
        !self.buffer.is_empty()
    }

    /// Polls a read once with a no-op waker: pending means open and quiet;
    /// end of stream, an error or unexpected bytes mean it cannot carry
    /// another request.
    fn probe_closed(&mut self) -> bool {
        if self.is_closed() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        !matches!(
            Pin::new(&mut self.stream).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }
}
