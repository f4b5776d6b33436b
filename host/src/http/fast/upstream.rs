//! One exchange of the fast codec with a backend, on the backend's pooled
//! byte streams (`crate::upstream::Connections::raw`).
//!
//! [`exchange`] writes a request head (with the body bytes already read),
//! streams the rest of the body ([`RequestBody`]) and reads until the
//! response head is complete, in the request's own task (no connection
//! task, no channel). A pooled connection the backend closed while it was
//! idle yields nothing at all: an idempotent bodiless request then goes on
//! the next connection, so that race never costs a retry or a
//! passive-health failure. Any other request probes the connection first
//! ([`Reusable::probe_closed`]: one `recv`), as does the idle sweeper; the
//! common request pays no system call for the check.

use std::pin::Pin;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;

use crate::http::retry::AttemptError;
use crate::pool::Backend;
use crate::upstream::{Addresses, RawConnection, Reusable, error_chain};

/// Largest response head accepted from a backend, in bytes: past it the
/// response is a 502, not a buffer that grows with what the backend sends.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Stale pooled connections tried before a new one is opened.
const STALE_TRIES: usize = 4;

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

/// The body of the request being sent, after its head.
#[expect(
    async_fn_in_trait,
    reason = "implemented and called with concrete types only, whose futures are Send"
)]
pub trait RequestBody {
    /// Whether the request can go again on another connection when a
    /// pooled one turns out closed (idempotent, and nothing of a body
    /// would be lost).
    fn replayable(&self) -> bool;

    /// Appends to `head` the body bytes that can go in the same write
    /// (those already read from the client); called once a connection is
    /// there, right before the head is written.
    fn prefill(&mut self, head: &mut Vec<u8>);

    /// Sends the rest of the body on `connection`. A response that
    /// arrives before the body has all been sent ends the upload (its
    /// bytes are in the connection's buffer).
    async fn send_rest(&mut self, connection: &mut RawConnection) -> Result<(), AttemptError>;
}

/// A request without a body.
pub struct NoBody {
    /// The method is idempotent.
    pub idempotent: bool,
}

impl RequestBody for NoBody {
    fn replayable(&self) -> bool {
        self.idempotent
    }

    fn prefill(&mut self, _: &mut Vec<u8>) {}

    async fn send_rest(&mut self, _: &mut RawConnection) -> Result<(), AttemptError> {
        Ok(())
    }
}

/// What a round trip needs besides the connection and the request.
pub struct Exchange<'a, P> {
    /// The backend's pool's `response_timeout`.
    pub timeout: std::time::Duration,
    /// The connection's response timer: reset to `timeout` once the
    /// request is sent (a slow upload does not eat into it).
    pub timer: Pin<&'a mut Sleep>,
    /// The response head parser.
    pub parse: P,
    /// The client connection's endpoints, for a PROXY protocol header.
    pub client: Addresses,
}

/// Sends `head` and `body` to `backend` on a pooled connection or a new
/// one and reads until the parser finds the final response head; returns
/// the connection with the head consumed from its buffer (body bytes that
/// came with it stay there). Nothing of the body is read from the client
/// before a connection is there, so a connect failure leaves the request
/// whole for another backend.
pub async fn exchange<T, P: FnMut(&[u8]) -> HeadProgress<T>>(
    backend: &Backend,
    head: &mut Vec<u8>,
    body: &mut impl RequestBody,
    mut how: Exchange<'_, P>,
) -> Result<(RawConnection, T), AttemptError> {
    let replayable = body.replayable();
    if !replayable {
        // Nothing else may go in the same write when a retry on a stale
        // connection is possible; here it is not.
        let mut connection = checkout(backend, replayable, how.client).await?;
        body.prefill(head);
        return match round_trip(&mut connection, head, body, &mut how).await {
            Ok(value) => Ok((connection, value)),
            Err(trip) => Err(trip.into_error()),
        };
    }
    for _ in 0..STALE_TRIES {
        let Some(mut connection) = backend.conns.raw.take() else {
            break;
        };
        match round_trip(&mut connection, head, body, &mut how).await {
            Ok(value) => return Ok((connection, value)),
            Err(Trip::Silent(_)) => continue,
            Err(trip) => return Err(trip.into_error()),
        }
    }
    let mut connection = connect(backend, how.client).await?;
    match round_trip(&mut connection, head, body, &mut how).await {
        Ok(value) => Ok((connection, value)),
        Err(trip) => Err(trip.into_error()),
    }
}

/// A pooled connection that a probe finds open (a request that must not
/// go twice checks first that the backend has not closed it: one system
/// call), or a new one.
async fn checkout(
    backend: &Backend,
    replayable: bool,
    client: Addresses,
) -> Result<RawConnection, AttemptError> {
    for _ in 0..STALE_TRIES {
        let Some(mut connection) = backend.conns.raw.take() else {
            break;
        };
        if replayable || !connection.probe_closed() {
            return Ok(connection);
        }
    }
    connect(backend, client).await
}

/// Why a round trip failed.
enum Trip {
    /// The connection ended (or failed) before a single response byte.
    Silent(String),
    /// It failed after some bytes.
    Failed(String),
    /// The response head was invalid or too large.
    Invalid(String),
    /// The request body failed on the client's side.
    Body(AttemptError),
    /// No response head within the response timeout.
    Timeout(std::time::Duration),
}

impl Trip {
    fn into_error(self) -> AttemptError {
        match self {
            Trip::Silent(text) | Trip::Failed(text) => AttemptError::Broken(text),
            Trip::Invalid(text) => AttemptError::BadResponse(text),
            Trip::Body(error) => error,
            Trip::Timeout(timeout) => AttemptError::Timeout(timeout),
        }
    }
}

async fn round_trip<T, P: FnMut(&[u8]) -> HeadProgress<T>>(
    connection: &mut RawConnection,
    head: &[u8],
    body: &mut impl RequestBody,
    how: &mut Exchange<'_, P>,
) -> Result<T, Trip> {
    connection.unpark();
    // Let every request that became ready in this tick reach this point
    // first, so their writes go out back to back: a peer woken by the
    // first write is still awake for the next, instead of being woken
    // (an inter-processor interrupt when it sleeps on another CPU) once
    // per request. Measured: fewer wake-ups and higher throughput under
    // peers.sh's load; costs one task poll per request.
    tokio::task::yield_now().await;
    let stream = &mut connection.stream;
    let written = async {
        stream.write_all(head).await?;
        stream.flush().await
    };
    if let Err(error) = written.await {
        return Err(Trip::Silent(error.to_string()));
    }
    let sent = body.send_rest(connection).await;
    let deadline = tokio::time::Instant::now() + how.timeout;
    how.timer.as_mut().reset(deadline);
    let buffer = &mut connection.buffer;
    let mut received = false;
    loop {
        match (how.parse)(buffer) {
            HeadProgress::Done { len, value } => {
                let _ = buffer.split_to(len);
                return Ok(value);
            }
            HeadProgress::Skip(len) => {
                let _ = buffer.split_to(len);
                continue;
            }
            HeadProgress::Invalid(reason) => return Err(Trip::Invalid(reason)),
            HeadProgress::Partial if buffer.len() > MAX_RESPONSE_HEAD => {
                return Err(Trip::Invalid("response head too large".into()));
            }
            HeadProgress::Partial => {}
        }
        // A body that did not go out: the client's fault ends the attempt;
        // a backend that stopped reading it may still have answered (413),
        // so its response is read as usual.
        if let Err(AttemptError::Client(fault)) = &sent {
            return Err(Trip::Body(AttemptError::Client(*fault)));
        }
        if buffer.capacity() - buffer.len() < 1024 {
            buffer.reserve(crate::upstream::raw::BUFFER);
        }
        let read = tokio::select! {
            biased;
            read = connection.stream.read_buf(buffer) => read,
            () = how.timer.as_mut() => return Err(Trip::Timeout(how.timeout)),
        };
        match read {
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

/// A new connection for the client connection `client` within the pool's
/// connect timeout.
///
/// Boxed, as connecting is the rare path (a pooled connection is the
/// common one): its future (about 1.6 KB, TLS included) would otherwise
/// size every exchange, and so every request's state.
fn connect(
    backend: &Backend,
    client: Addresses,
) -> Pin<Box<impl Future<Output = Result<RawConnection, AttemptError>> + '_>> {
    Box::pin(async move {
        let timeout = backend.upstream.connect_timeout;
        match tokio::time::timeout(timeout, backend.conns.open_for(client)).await {
            Ok(Ok(stream)) => Ok(RawConnection::new(stream)),
            Ok(Err(error)) => Err(AttemptError::connect(&error, error_chain(&error))),
            Err(_) => Err(AttemptError::Connect(format!(
                "connect timed out after {timeout:?}"
            ))),
        }
    })
}
