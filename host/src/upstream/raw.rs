//! The fast codec's upstream connection: a byte stream to the backend and
//! its read buffer.
//!
//! An idle pooled connection holds no read buffer: [`RawConnection::park`]
//! gives an empty one to the worker thread's pool before the connection
//! waits, and [`RawConnection::unpark`] takes one when a request uses it
//! (no lock: thread-local, at most [`POOL_MAX`] kept per thread).

use std::cell::RefCell;
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

/// Size of a read buffer.
pub const BUFFER: usize = 16 * 1024;

/// Most spare read buffers kept per worker thread: enough for the ebb and
/// flow of busy connections; a burst's extra buffers go back to the
/// allocator (with 256, a burst of 500 requests left 4 MiB of spares).
pub const POOL_MAX: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

impl RawConnection {
    /// A new connection over `stream`, with a read buffer.
    pub fn new(stream: MaybeTls) -> RawConnection {
        let mut connection = RawConnection {
            stream,
            buffer: BytesMut::new(),
        };
        connection.unpark();
        connection
    }

    /// Gives the (empty) read buffer back before the connection idles.
    pub fn park(&mut self) {
        if self.buffer.is_empty() && self.buffer.capacity() <= 4 * BUFFER {
            let buffer = std::mem::take(&mut self.buffer);
            SPARE.with(|spare| {
                let mut spare = spare.borrow_mut();
                if spare.len() < POOL_MAX && buffer.capacity() > 0 {
                    spare.push(buffer);
                }
            });
        }
    }

    /// Makes sure the connection has a read buffer.
    pub fn unpark(&mut self) {
        if self.buffer.capacity() == 0 {
            self.buffer = SPARE
                .with(|spare| spare.borrow_mut().pop())
                .unwrap_or_else(|| BytesMut::with_capacity(BUFFER));
        }
    }
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
