//! The upstream side of the proxy: HTTP/1.1 connections to backends, kept
//! alive and pooled per backend.
//!
//! Each [`Backend`] owns its idle connections ([`IdleConnections`], a
//! lock-free queue): a request pops one, its response body gives it back
//! when it has been read to the end (see `super::body`). No lock, no
//! hashing and no lookup by address on the request path; a backend that
//! a reload replaces takes its idle connections with it.
//!
//! A new connection is bounded by the pool's `connect_timeout` (TCP plus,
//! for pools with `[pools.tls]`, the TLS handshake) and served by one
//! spawned task (hyper's connection driver, with upgrades so WebSocket
//! tunnels work). A pooled connection that the backend closed while it was
//! idle hands the request back unsent; it then goes on a new connection,
//! so a keep-alive race never reaches the client or the retry budget.
//!
//! Idle connections live at most [`IDLE_TIMEOUT`]: a checkout skips older
//! ones and the pool's sweeper task ([`IdleConnections::sweep`]) closes
//! them when there is no traffic. At most [`MAX_IDLE`] are kept per
//! backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_queue::SegQueue;
use http::{Request, Response};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::retry::{AttemptError, ClientFault};
use crate::pool::{Backend, BackendPool};
use crate::tls::upstream::{MaybeTls, tls_for_address};

/// The body of an upstream request: the client's body, streamed, or
/// nothing (a bodiless request, which a retry can send again).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// The sending half of one upstream connection.
pub type Connection = http1::SendRequest<UpstreamBody>;

/// How long a connection may stay idle in a backend's pool.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most idle connections kept per backend; more are closed.
pub const MAX_IDLE: usize = 1024;

/// A connection that can wait in an [`IdleConnections`] queue.
pub trait Reusable {
    /// Whether it is known to be unusable, checked without blocking or a
    /// system call (on every checkout and return).
    fn is_closed(&mut self) -> bool;

    /// [`is_closed`](Self::is_closed), and whether the peer closed it,
    /// at the cost of a system call (by the idle sweeper).
    fn probe_closed(&mut self) -> bool {
        self.is_closed()
    }
}

impl Reusable for Connection {
    fn is_closed(&mut self) -> bool {
        http1::SendRequest::is_closed(self)
    }
}

struct Idle<C> {
    connection: C,
    since: Instant,
}

/// The idle keep-alive connections of one backend, of one kind: hyper's
/// ([`Connection`]) or the fast path's (`super::fast::upstream`).
pub struct IdleConnections<C> {
    queue: SegQueue<Idle<C>>,
    len: AtomicUsize,
}

impl<C> Default for IdleConnections<C> {
    fn default() -> Self {
        IdleConnections {
            queue: SegQueue::new(),
            len: AtomicUsize::new(0),
        }
    }
}

impl<C> std::fmt::Debug for IdleConnections<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConnections")
            .field("len", &self.len.load(Ordering::Relaxed))
            .finish()
    }
}

impl<C: Reusable> IdleConnections<C> {
    /// The oldest idle connection that is still open and fresh.
    pub fn take(&self) -> Option<C> {
        while let Some(mut idle) = self.pop() {
            if idle.usable() {
                return Some(idle.connection);
            }
        }
        None
    }

    /// Keeps `connection` for the next request (closes it when the pool
    /// is full or the backend closed it). The cap is checked without a
    /// lock, so racing workers may overshoot it by a few.
    pub fn put(&self, mut connection: C) {
        if !connection.is_closed() && self.len() < MAX_IDLE {
            self.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`] or
    /// closed by the backend; keeps the others, in order.
    pub fn sweep(&self) {
        for _ in 0..self.len() {
            match self.pop() {
                Some(mut idle) => {
                    if idle.usable() && !idle.connection.probe_closed() {
                        self.push(idle);
                    }
                }
                None => return,
            }
        }
    }

    fn pop(&self) -> Option<Idle<C>> {
        let idle = self.queue.pop()?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(idle)
    }

    fn push(&self, idle: Idle<C>) {
        self.len.fetch_add(1, Ordering::Relaxed);
        self.queue.push(idle);
    }

    /// How many connections are idle.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<C: Reusable> Idle<C> {
    fn usable(&mut self) -> bool {
        !self.connection.is_closed() && self.since.elapsed() < IDLE_TIMEOUT
    }
}

/// Closes the stale idle connections of `pool`'s backends every quarter
/// of [`IDLE_TIMEOUT`], forever (the pool's tasks abort it).
pub async fn close_idle_connections(pool: Arc<BackendPool>) {
    let mut ticks = tokio::time::interval(IDLE_TIMEOUT / 4);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for backend in &pool.backends {
            backend.connections.sweep();
            backend.streams.sweep();
        }
    }
}

/// Sends `request` to `backend` on a pooled connection, or a new one, and
/// returns the response head with the connection, to be given back to
/// [`IdleConnections::put`] once the response body has been read. On a
/// failure, the request comes back when nothing of it was sent (no
/// connection could be made).
pub async fn send(
    backend: &Backend,
    mut request: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, Connection), (AttemptError, Option<Request<UpstreamBody>>)> {
    while let Some(mut connection) = backend.connections.take() {
        if connection.ready().await.is_err() {
            continue;
        }
        match connection.try_send_request(request).await {
            Ok(response) => return Ok((response, connection)),
            Err(mut error) => match error.take_message() {
                // Closed before the request was written: try another.
                Some(unsent) => request = unsent,
                None => return Err((failure(error.error()), None)),
            },
        }
    }
    let mut connection = match connect(backend).await {
        Ok(connection) => connection,
        Err(error) => return Err((error, Some(request))),
    };
    match connection.try_send_request(request).await {
        Ok(response) => Ok((response, connection)),
        Err(mut error) => {
            let text = error_chain(error.error());
            match error.take_message() {
                Some(unsent) => Err((AttemptError::Connect(text), Some(unsent))),
                None => Err((failure(error.error()), None)),
            }
        }
    }
}

/// Whose fault a failed exchange is: an error of the client's body
/// (hyper's "user" errors: the client aborted its upload) is the client's.
fn failure(error: &hyper::Error) -> AttemptError {
    match error.is_user() {
        true => AttemptError::Client(ClientFault::Aborted),
        false => AttemptError::Broken(error_chain(error)),
    }
}

/// Opens a new connection to `backend` within its pool's connect timeout.
async fn connect(backend: &Backend) -> Result<Connection, AttemptError> {
    let timeout = backend.upstream.connect_timeout;
    let io = match tokio::time::timeout(timeout, open(backend)).await {
        Ok(Ok(io)) => io,
        Ok(Err(error)) => return Err(AttemptError::connect(&error, error.to_string())),
        Err(_) => {
            return Err(AttemptError::Connect(format!(
                "connect timed out after {timeout:?}"
            )));
        }
    };
    let (connection, driver) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|error| AttemptError::Connect(error_chain(&error)))?;
    let address = backend.address;
    tokio::spawn(async move {
        if let Err(error) = driver.with_upgrades().await {
            tracing::debug!(backend = %address, %error, "upstream connection ended with an error");
        }
    });
    Ok(connection)
}

/// TCP (no Nagle), then TLS when the backend's pool has `[pools.tls]`.
pub async fn open(backend: &Backend) -> std::io::Result<MaybeTls> {
    let tcp = TcpStream::connect(backend.address).await?;
    tcp.set_nodelay(true)?;
    match tls_for_address(backend.address) {
        None => Ok(MaybeTls::Plain(tcp)),
        Some(tls) => tls.connect(tcp).await,
    }
}

/// An error with its sources, one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
