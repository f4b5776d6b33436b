//! The fast path's upstream connections: a byte stream (TCP, or TLS for
//! pools with `[pools.tls]`) and its read buffer, pooled per backend in
//! [`Backend::streams`](crate::pool::Backend::streams) like hyper's.
//!
//! [`exchange`] writes a request head and reads until the response head
//! is complete, in the request's own task (no connection task, no
//! channel). A pooled connection the backend closed while it was idle
//! yields nothing at all: an idempotent request then goes on the next
//! connection, so that race never costs a retry or a passive-health
//! failure. A non-idempotent request probes the connection first
//! ([`Reusable::probe_closed`]: one `recv`), as does the idle sweeper; the
//! common request pays no system call for the check.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use crate::http::client::{Reusable, SendError, error_chain, open};
use crate::pool::Backend;
use crate::tls::upstream::MaybeTls;

/// Read buffer of an upstream connection.
const BUFFER: usize = 16 * 1024;

/// Stale pooled connections tried before a new one is opened.
const STALE_TRIES: usize = 4;

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

/// How far a response head has arrived, as told by the caller's parser.
pub enum HeadProgress<T> {
    /// More bytes are needed.
    Partial,
    /// An informational (1xx) head of this many bytes: dropped, the final
    /// head follows.
    Skip(usize),
    /// The final head, `len` bytes, with what the parser made of it.
    Done {
        /// Length of the head in the buffer.
        len: usize,
        /// The parser's result.
        value: T,
    },
    /// Not a valid response head.
    Invalid(String),
}

/// Sends `head` to `backend` on a pooled connection or a new one and reads
/// until `parse` finds the final response head; returns the connection
/// with the head consumed from its buffer (body bytes that came with it
/// stay there). `idempotent`: the request may go again on another
/// connection when a pooled one turns out closed.
pub async fn exchange<T>(
    backend: &Backend,
    head: &[u8],
    idempotent: bool,
    mut parse: impl FnMut(&[u8]) -> HeadProgress<T>,
) -> Result<(RawConnection, T), SendError> {
    for _ in 0..STALE_TRIES {
        let Some(mut connection) = backend.streams.take() else {
            break;
        };
        // A request that must not go twice checks first that the backend
        // has not closed the connection (one system call).
        if !idempotent && connection.probe_closed() {
            continue;
        }
        match round_trip(&mut connection, head, &mut parse).await {
            Ok(value) => return Ok((connection, value)),
            Err(Trip::Silent(_)) if idempotent => continue,
            Err(trip) => return Err(SendError::Broken(trip.into_text())),
        }
    }
    let mut connection = connect(backend).await?;
    match round_trip(&mut connection, head, &mut parse).await {
        Ok(value) => Ok((connection, value)),
        Err(trip) => Err(SendError::Broken(trip.into_text())),
    }
}

/// Why a round trip failed.
enum Trip {
    /// The connection ended (or failed) before a single response byte.
    Silent(String),
    /// It failed after some bytes, or sent an invalid head.
    Failed(String),
}

impl Trip {
    fn into_text(self) -> String {
        match self {
            Trip::Silent(text) => text,
            Trip::Failed(text) => text,
        }
    }
}

async fn round_trip<T>(
    connection: &mut RawConnection,
    head: &[u8],
    parse: &mut impl FnMut(&[u8]) -> HeadProgress<T>,
) -> Result<T, Trip> {
    let stream = &mut connection.stream;
    let written = async {
        stream.write_all(head).await?;
        stream.flush().await
    };
    if let Err(error) = written.await {
        return Err(Trip::Silent(error.to_string()));
    }
    let buffer = &mut connection.buffer;
    let mut received = false;
    loop {
        match parse(buffer) {
            HeadProgress::Done { len, value } => {
                let _ = buffer.split_to(len);
                return Ok(value);
            }
            HeadProgress::Skip(len) => {
                let _ = buffer.split_to(len);
                continue;
            }
            HeadProgress::Invalid(reason) => return Err(Trip::Failed(reason)),
            HeadProgress::Partial => {}
        }
        if buffer.capacity() - buffer.len() < 1024 {
            buffer.reserve(BUFFER);
        }
        match connection.stream.read_buf(buffer).await {
            Ok(0) if received => {
                return Err(Trip::Failed(
                    "connection closed in the response head".into(),
                ));
            }
            Ok(0) => return Err(Trip::Silent("connection closed before a response".into())),
            Ok(_) => received = true,
            Err(error) if received => return Err(Trip::Failed(error.to_string())),
            Err(error) => return Err(Trip::Silent(error.to_string())),
        }
    }
}

/// A new connection within the pool's connect timeout.
async fn connect(backend: &Backend) -> Result<RawConnection, SendError> {
    let timeout = backend.upstream.connect_timeout;
    match tokio::time::timeout(timeout, open(backend)).await {
        Ok(Ok(stream)) => Ok(RawConnection {
            stream,
            buffer: BytesMut::with_capacity(BUFFER),
        }),
        Ok(Err(error)) => Err(SendError::Connect(error_chain(&error))),
        Err(_) => Err(SendError::Connect(format!(
            "connect timed out after {timeout:?}"
        ))),
    }
}
