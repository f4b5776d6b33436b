//! The HTTP/1.1 fast path: bodiless requests forwarded by the request's
//! own task, bytes in and bytes out.
//!
//! hyper serves HTTP/1 as two full state machines (the client connection
//! and the upstream connection, each with its own task, header map and
//! encoder) joined by a channel. An edge proxy's common request, a `GET`
//! without a body on a keep-alive connection, needs much less: parse the
//! head once ([`request`]), let the policy decide, write the upstream head
//! from the parsed one ([`outgoing`]), read the response head and rewrite
//! it into the client's in one pass ([`response`]), and relay the body with
//! its framing untouched ([`relay`]). Upstream connections are the
//! backend's own ([`upstream`]), so no task or channel sits in between.
//!
//! Everything else (request bodies, `Expect`, upgrades, HTTP/1.0,
//! `CONNECT`, absolute-form targets, HTTP/2) is handed to hyper together
//! with the bytes already read ([`super::rewind::Rewind`]); the connection
//! stays with hyper from then on. The decision, retry and on-error rules
//! are the same as hyper's path (`super::proxy`).

pub mod outgoing;
pub mod relay;
pub mod request;
pub mod response;
pub mod upstream;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use super::body::ProxyBody;
use super::proxy::{ConnInfo, ProxyShared, Route, decide_route, unavailable};
use super::retry::AttemptError;
use super::{Drain, HEADER_READ_TIMEOUT};
use crate::health::passive::Failure;
use crate::listener::ListenerHandle;
use crate::policy::{HeaderEdit, RequestView};
use crate::pool::Backend;
use relay::RelayError;
use request::{Parsed, RequestHead};
use response::{Framing, Rewrite};

/// Initial size of a client connection's read buffer.
const READ_BUFFER: usize = 8 * 1024;

/// One client connection on the fast path.
pub struct ClientConnection<IO> {
    io: IO,
    conn: ConnInfo,
    /// Bytes read from the client and not parsed yet.
    input: BytesMut,
    /// The client's next response head (and the first body bytes).
    output: Vec<u8>,
    /// The upstream request head being sent.
    upstream_head: Vec<u8>,
    /// Where the request head being parsed lies.
    scratch: request::Scratch,
    /// Bounds the wait for a request head ([`HEADER_READ_TIMEOUT`]).
    head_timer: Pin<Box<Sleep>>,
    /// Bounds the wait for a response head (the pool's
    /// `response_timeout`).
    response_timer: Pin<Box<Sleep>>,
}

/// What the connection does after a request.
enum After {
    KeepAlive,
    Close,
}

/// Where the next request comes from.
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per request; boxing would allocate per request"
)]
enum Next {
    Request(RequestHead),
    Handoff,
    Invalid(StatusCode),
    Closed,
}

/// Serves a client connection: the fast path while its requests allow,
/// then hyper (`super::serve_with_hyper`) if one does not.
pub async fn serve<IO>(
    io: IO,
    conn: ConnInfo,
    listener: Arc<ListenerHandle>,
    shared: Arc<ProxyShared>,
    builder: &auto::Builder<TokioExecutor>,
    mut drain: Drain,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut client = ClientConnection {
        io,
        conn,
        input: BytesMut::with_capacity(READ_BUFFER),
        output: Vec::with_capacity(1024),
        upstream_head: Vec::with_capacity(1024),
        scratch: request::Scratch::default(),
        head_timer: Box::pin(tokio::time::sleep(HEADER_READ_TIMEOUT)),
        response_timer: Box::pin(tokio::time::sleep(HEADER_READ_TIMEOUT)),
    };
    loop {
        match client.next_request(&mut drain).await {
            Next::Request(head) => {
                if let After::Close = client.serve_request(head, &listener, &shared).await {
                    let _ = client.io.shutdown().await;
                    return;
                }
            }
            Next::Handoff => {
                let ClientConnection {
                    io, conn, input, ..
                } = client;
                let io = super::rewind::Rewind::new(input.freeze(), io);
                let graceful = drain.graceful;
                return super::serve_with_hyper(io, conn, listener, shared, builder, graceful)
                    .await;
            }
            Next::Invalid(status) => {
                tracing::debug!(peer = %client.conn.peer, %status, "malformed request head");
                let response = super::proxy::local(status, "bad request\n");
                let _ = client.write_local(response, false, true).await;
                let _ = client.io.shutdown().await;
                return;
            }
            Next::Closed => return,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ClientConnection<IO> {
    /// Reads until a whole request head is buffered (at most
    /// [`HEADER_READ_TIMEOUT`]); between requests, a drain closes the
    /// connection.
    async fn next_request(&mut self, drain: &mut Drain) -> Next {
        let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
        // Each connection keeps its timers: moving a registered timer's
        // deadline later costs no timer-wheel work, a new one per request
        // did.
        self.head_timer.as_mut().reset(deadline);
        loop {
            match request::parse(&mut self.input, &mut self.scratch) {
                Parsed::Ready(head) => return Next::Request(head),
                Parsed::Handoff => return Next::Handoff,
                Parsed::Invalid(status) => return Next::Invalid(status),
                Parsed::Partial => {}
            }
            if self.input.capacity() - self.input.len() < 1024 {
                self.input.reserve(READ_BUFFER);
            }
            let idle = self.input.is_empty();
            if idle && drain.draining() {
                return Next::Closed;
            }
            let read = tokio::select! {
                biased;
                read = self.io.read_buf(&mut self.input) => read,
                () = self.head_timer.as_mut() => {
                    tracing::debug!(peer = %self.conn.peer, "request head timeout");
                    return Next::Closed;
                }
                () = drain.started(), if idle => return Next::Closed,
            };
            match read {
                Ok(0) | Err(_) => return Next::Closed,
                Ok(_) => {}
            }
        }
    }

    /// Decides and forwards one request, retrying like hyper's path.
    async fn serve_request(
        &mut self,
        head: RequestHead,
        listener: &ListenerHandle,
        shared: &ProxyShared,
    ) -> After {
        let state = listener.state();
        let close = head.close;
        let bodiless = head.parts.method == http::Method::HEAD;
        let conn = &self.conn;
        let mut view = RequestView::new(
            head.parts,
            conn.peer.ip(),
            conn.tls,
            conn.server_name.clone(),
        );
        let mut budget: Option<u32> = None;
        let mut last_error: Option<AttemptError> = None;
        loop {
            let route;
            (view, route) = decide_route(listener, &state, shared, view);
            let (target, backend, edits) = match route {
                Route::Local(response) => return self.write_local(response, bodiless, close).await,
                Route::Exhausted => {
                    let response = last_error.map_or_else(
                        || unavailable("no healthy backend\n"),
                        |error| error.response(),
                    );
                    return self.write_local(response, bodiless, close).await;
                }
                Route::Forward {
                    target,
                    backend,
                    request_edits,
                    response_edits,
                } => (target, backend, (request_edits, response_edits)),
            };
            let retries = *budget.get_or_insert(backend.upstream.retries);
            let error = match self.forward(&view, &backend, edits, close).await {
                Ok(after) => return after,
                Err(error) => error,
            };
            if (view.tried.len() as u32) < retries && error.retryable(&view.head.method) {
                tracing::debug!(backend = %backend.address, attempt = view.tried.len() + 1, "retrying on another backend");
                view.tried.push(target);
                last_error = Some(error);
                continue;
            }
            return self.write_local(error.response(), bodiless, close).await;
        }
    }

    /// One attempt on `backend`: the request head goes out, the response
    /// comes back to the client. `Err` only when nothing was sent to the
    /// client yet.
    async fn forward(
        &mut self,
        view: &RequestView,
        backend: &Arc<Backend>,
        (request_edits, response_edits): (Vec<HeaderEdit>, Vec<HeaderEdit>),
        close: bool,
    ) -> Result<After, AttemptError> {
        let head = &view.head;
        outgoing::write_head(
            &mut self.upstream_head,
            head,
            &self.conn,
            backend,
            &request_edits,
        );
        let rewrite = Rewrite {
            method: &head.method,
            load_header: &backend.load_header,
            edits: &response_edits,
            close,
        };
        let output = &mut self.output;
        let idempotent = super::retry::is_idempotent(&head.method);
        let guard = backend.start_request();
        let started = Instant::now();
        let timeout = backend.upstream.response_timeout;
        let exchange = upstream::exchange(backend, &self.upstream_head, idempotent, |bytes| {
            response::rewrite(bytes, &rewrite, output)
        });
        let deadline = tokio::time::Instant::from_std(started) + timeout;
        self.response_timer.as_mut().reset(deadline);
        let exchanged = tokio::select! {
            biased;
            exchanged = exchange => Some(exchanged),
            () = self.response_timer.as_mut() => None,
        };
        let (mut connection, meta) = super::retry::settle(exchanged, &guard, timeout)?;
        guard.record_response(started.elapsed(), meta.status);
        if let Some(load) = meta.load {
            super::proxy::record_load_report(&load, backend);
        }
        let idle = backend.upstream.idle_timeout;
        let relayed = relay::relay(&mut self.io, output, &mut connection, meta.framing, idle).await;
        match relayed {
            Ok(()) => {
                if meta.reusable {
                    backend.streams.put(connection);
                }
                Ok(match close || meta.framing == Framing::Eof {
                    true => After::Close,
                    false => After::KeepAlive,
                })
            }
            Err(RelayError::Idle(timeout)) => {
                tracing::warn!(backend = %backend.address, ?timeout, "backend response body idle timeout");
                guard.record_late_failure(Failure::Idle);
                Ok(After::Close)
            }
            Err(RelayError::Backend(reason)) => {
                tracing::debug!(backend = %backend.address, %reason, "backend response body failed");
                Ok(After::Close)
            }
            Err(RelayError::Client) => Ok(After::Close),
        }
    }

    /// Writes a response the proxy or a policy made (`bodiless`: the head
    /// only, for a HEAD request).
    async fn write_local(
        &mut self,
        response: Response<ProxyBody>,
        bodiless: bool,
        close: bool,
    ) -> After {
        let (parts, body) = response.into_parts();
        let body = match body {
            ProxyBody::Local(bytes) => bytes.unwrap_or_default(),
            ProxyBody::Upstream(_) => Bytes::new(),
        };
        let out = &mut self.output;
        out.clear();
        use std::io::Write as _;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n",
            parts.status.as_str(),
            parts.status.canonical_reason().unwrap_or("")
        );
        for (name, value) in &parts.headers {
            if name != http::header::CONTENT_LENGTH {
                response::put_line(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        let _ = write!(out, "content-length: {}\r\n", body.len());
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !bodiless {
            out.extend_from_slice(&body);
        }
        let written = async {
            self.io.write_all(&self.output).await?;
            self.io.flush().await
        };
        match (written.await, close) {
            (Ok(()), false) => After::KeepAlive,
            _ => After::Close,
        }
    }
}
