//! The buffers of a client connection, lent by a per-worker pool while
//! the connection has something to do and given back while it is idle.
//!
//! An idle keep-alive connection is the common state at the edge (most
//! connections wait most of the time), so it holds no buffer at all: a
//! read on an idle connection borrows a set from the worker thread's pool
//! for each poll and gives it back when nothing was read
//! ([`read_idle`]); a read that gets bytes keeps the set until the
//! connection is idle again. Polls of one thread never overlap, so one set
//! serves every idle connection of the worker that is woken in turn. No
//! lock: the pool is thread-local, at most [`POOL_MAX`] sets are kept per
//! thread, and a set that grew past [`KEEP_MAX`] bytes is dropped rather
//! than kept.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::pin;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::request::Scratch;

/// Initial size of a client connection's read buffer.
pub const READ_BUFFER: usize = 8 * 1024;

/// Most buffer sets kept per worker thread. Enough to absorb the ebb and
/// flow of busy connections; the sets a burst needed beyond it go back to
/// the allocator (with 256, a burst of 500 busy connections left 2.6 MiB
/// of spare sets for good: 0.5 KiB per connection of 5,000 idle ones).
pub const POOL_MAX: usize = 64;

/// Largest read buffer given back to the pool (one that grew past it, for
/// a large head or a streamed body, is freed).
pub const KEEP_MAX: usize = 64 * 1024;

/// What a client connection needs while it works.
#[derive(Default)]
pub struct Buffers {
    /// Bytes read from the client and not parsed yet.
    pub input: BytesMut,
    /// The client's next response head (and the first body bytes).
    pub output: Vec<u8>,
    /// The upstream request head being sent.
    pub upstream_head: Vec<u8>,
    /// Where the request head being parsed lies.
    pub scratch: Scratch,
}

impl Buffers {
    fn allocated() -> Buffers {
        Buffers {
            input: BytesMut::with_capacity(READ_BUFFER),
            output: Vec::with_capacity(1024),
            upstream_head: Vec::with_capacity(1024),
            scratch: Scratch::default(),
        }
    }

    /// Whether these are the empty placeholders of an idle connection.
    pub fn lent(&self) -> bool {
        self.input.capacity() != 0
    }
}

thread_local! {
    static POOL: RefCell<Vec<Buffers>> = const { RefCell::new(Vec::new()) };
}

/// A set from this thread's pool, or a new one.
fn take() -> Buffers {
    POOL.with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(Buffers::allocated)
}

/// Gives `buffers` back to this thread's pool (their contents are gone).
fn give(mut buffers: Buffers) {
    if buffers.input.capacity() > KEEP_MAX || !buffers.input.is_empty() {
        return;
    }
    buffers.output.clear();
    buffers.upstream_head.clear();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(buffers);
        }
    });
}

/// Gives the connection's buffers back while it is idle (its read buffer
/// is empty), leaving empty placeholders.
pub fn release(slot: &mut Buffers) {
    if slot.lent() && slot.input.is_empty() {
        give(std::mem::take(slot));
    }
}

/// Reads the client's next bytes on an idle connection: each poll borrows
/// a set from the pool and gives it back if nothing was read, so waiting
/// holds no buffer. Once bytes arrive the set stays in `slot`.
pub async fn read_idle<IO: AsyncRead + Unpin>(
    io: &mut IO,
    slot: &mut Buffers,
) -> std::io::Result<usize> {
    poll_fn(|cx| {
        let mut buffers = take();
        let polled = pin!(io.read_buf(&mut buffers.input)).poll(cx);
        match polled {
            Poll::Pending => {
                give(buffers);
                Poll::Pending
            }
            Poll::Ready(read) => {
                *slot = buffers;
                Poll::Ready(read)
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn an_idle_read_holds_no_buffer_until_bytes_arrive() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut slot = Buffers::default();
        let mut read = Box::pin(read_idle(&mut server, &mut slot));
        assert!(futures_poll_once(read.as_mut()).await.is_none());
        client.write_all(b"GET").await.unwrap();
        let n = read.await.unwrap();
        assert_eq!(n, 3);
        assert!(slot.lent());
        assert_eq!(&slot.input[..], b"GET");
        slot.input.clear();
        release(&mut slot);
        assert!(!slot.lent(), "an idle connection gives its buffers back");
        assert!(POOL.with(|p| !p.borrow().is_empty()));
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }
}
