//! The HTTP/1.1 fast codec: requests forwarded by the request's own task,
//! bytes in and bytes out, through the one pipeline
//! (`super::pipeline::process_request`).
//!
//! hyper serves HTTP/1 as two full state machines (the client connection
//! and the upstream connection, each with its own task, header map and
//! encoder) joined by a channel. An edge proxy needs much less: parse the
//! head once ([`request`]), let the policy decide, write the upstream head
//! from the parsed one ([`outgoing`]) with the body bytes already read,
//! stream the rest of the body ([`body`]), read the response head and
//! rewrite it into the client's in one pass ([`response`]), and relay the
//! response body with its framing untouched ([`relay`]). Upstream
//! connections are the backend's own ([`upstream`]), so no task or channel
//! sits in between. Chunked bodies in both directions are checked by one
//! strict scanner ([`chunked`]).
//!
//! WebSocket upgrades, HTTP/1.0, `CONNECT`, `OPTIONS *` and HTTP/2 are
//! handed to hyper together with the bytes already read
//! ([`super::rewind::Rewind`]); the connection stays with hyper from then
//! on. A connection keeps the fast path after requests with bodies.

pub mod body;
pub mod buffers;
pub mod chunked;
pub mod outgoing;
pub mod relay;
pub mod request;
pub mod response;
pub mod upstream;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use super::body::ProxyBody;
use super::metrics::Outcome;
use super::pipeline::{Codec, ConnInfo, Exchanged, ProxyShared, Target, process_request, refused};
use super::retry::{self, AttemptError};
use super::state::ListenerState;
use super::{Drain, HEADER_READ_TIMEOUT};

/// How long a connection accepted before a drain (or during it) may take
/// to start its first request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);
use crate::http::state::ListenerHandle;
use crate::policy::RequestView;
use crate::pool::outlier::Failure;
use body::{BodyState, Upload};
use buffers::Buffers;
use relay::RelayError;
use request::{BodyFraming, Parsed, RequestHead};
use response::{Framing, ResponseMeta, Rewrite};
use upstream::{Exchange, NoBody};

/// One client connection on the fast path.
pub struct ClientConnection<IO> {
    io: IO,
    conn: ConnInfo,
    /// Lent by the worker's pool while the connection works; empty while
    /// it is idle ([`buffers`]).
    bufs: Buffers,
    /// Bounds the wait for a request head ([`HEADER_READ_TIMEOUT`]), then
    /// the wait for its response head (the pool's `response_timeout`):
    /// one timer, since the two waits never overlap.
    timer: Pin<Box<Sleep>>,
}

/// What the connection does after a request.
pub enum After {
    /// Read the next request.
    KeepAlive,
    /// Close the connection.
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
    Invalid(StatusCode, &'static str),
    Closed,
}

/// Serves a client connection: the fast path while its requests allow,
/// then hyper (`super::serve_with_hyper`) if one does not.
///
/// Not an `async fn`: the connection's state is built here and moved into
/// [`ClientConnection::run`] once, so the task stores it once, not a copy
/// per level of `async` nesting (an idle connection costs what its task
/// holds).
pub fn serve<IO>(
    io: IO,
    conn: ConnInfo,
    listener: Arc<ListenerHandle>,
    shared: Arc<ProxyShared>,
    drain: Drain,
) -> impl Future<Output = ()> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = ClientConnection {
        io,
        conn,
        bufs: Buffers::default(),
        timer: Box::pin(tokio::time::sleep(HEADER_READ_TIMEOUT)),
    };
    client.run(listener, shared, drain)
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientConnection<IO> {
    /// The connection's request loop.
    async fn run(
        mut self,
        listener: Arc<ListenerHandle>,
        shared: Arc<ProxyShared>,
        mut drain: Drain,
    ) {
        let mut fresh = true;
        loop {
            let head = match self.next_request(&mut drain, fresh).await {
                Next::Request(head) => head,
                other => return Box::pin(self.end(other, listener, shared, drain)).await,
            };
            fresh = false;
            // Boxed: an idle connection's task keeps only what waiting for
            // the next request needs, not the pipeline's state (about
            // 3.2 KB; the rare paths inside it, a new upstream connection
            // and a local answer, box their own futures so as not to size
            // it).
            let served = Box::pin(self.serve_request(head, &listener, &shared, &drain));
            if let After::Close = served.await {
                let _ = self.io.shutdown().await;
                return;
            }
        }
    }

    /// How a connection that leaves the fast path ends (boxed by the
    /// caller, once per connection: none of this weighs on an idle task).
    async fn end(
        mut self,
        next: Next,
        listener: Arc<ListenerHandle>,
        shared: Arc<ProxyShared>,
        drain: Drain,
    ) {
        match next {
            Next::Handoff => {
                let ClientConnection { io, conn, bufs, .. } = self;
                let io = super::rewind::Rewind::new(bufs.input.freeze(), io);
                super::serve_with_hyper(io, conn, listener, shared, drain).await;
            }
            Next::Invalid(status, reason) => {
                tracing::debug!(peer = %self.conn.peer, %status, reason, "request refused");
                let send_timeout = listener.send_timeout();
                let response = refused(status, reason);
                let _ = self.write_local(response, false, true, send_timeout).await;
                let _ = self.io.shutdown().await;
            }
            // `Next::Request` never comes here. Returning
            // `Result<RequestHead, Ending>` from `next_request` instead
            // made every idle connection's task 248 bytes larger
            // (measured), so the arm stays.
            Next::Request(_) | Next::Closed => {}
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ClientConnection<IO> {
    /// Reads until a whole request head is buffered (at most
    /// [`HEADER_READ_TIMEOUT`]); between requests, a drain closes the
    /// connection. A `fresh` connection (accepted, no request yet) is not
    /// idle: its client has connected to send a request, so a drain gives
    /// it [`FIRST_REQUEST_GRACE`] to start sending one (it is answered
    /// with `connection: close`).
    async fn next_request(&mut self, drain: &mut Drain, fresh: bool) -> Next {
        let now = tokio::time::Instant::now();
        let mut deadline = now + HEADER_READ_TIMEOUT;
        if fresh && drain.draining() {
            deadline = deadline.min(now + FIRST_REQUEST_GRACE);
        }
        let mut watch_drain = !drain.draining();
        // One timer per connection: moving a registered timer's deadline
        // later costs no timer-wheel work, a new one per request did.
        self.timer.as_mut().reset(deadline);
        loop {
            let bufs = &mut self.bufs;
            match request::parse(&mut bufs.input, &mut bufs.scratch) {
                Parsed::Ready(head) => return Next::Request(head),
                Parsed::Handoff => return Next::Handoff,
                Parsed::Invalid(status, reason) => return Next::Invalid(status, reason),
                Parsed::Partial => {}
            }
            let idle = bufs.input.is_empty();
            if idle && !fresh && drain.draining() {
                return Next::Closed;
            }
            if idle {
                // Nothing to hold on to: the buffers go back to the pool.
                buffers::release(bufs);
            } else if bufs.input.capacity() - bufs.input.len() < 1024 {
                bufs.input.reserve(buffers::READ_BUFFER);
            }
            let read = tokio::select! {
                biased;
                read = read_some(&mut self.io, bufs, idle) => read,
                () = self.timer.as_mut() => {
                    tracing::debug!(peer = %self.conn.peer, "request head timeout");
                    return Next::Closed;
                }
                () = drain.started(), if idle && watch_drain => {
                    if !fresh {
                        return Next::Closed;
                    }
                    watch_drain = false;
                    let grace = tokio::time::Instant::now() + FIRST_REQUEST_GRACE;
                    self.timer.as_mut().reset(grace.min(deadline));
                    continue;
                }
            };
            match read {
                Ok(0) | Err(_) => return Next::Closed,
                Ok(_) => {}
            }
        }
    }

    /// Serves one request through the pipeline.
    async fn serve_request(
        &mut self,
        head: RequestHead,
        listener: &ListenerHandle,
        shared: &ProxyShared,
        drain: &Drain,
    ) -> After {
        let RequestHead {
            parts,
            close,
            body,
            expect_continue,
        } = head;
        let conn = &self.conn;
        let view = RequestView::new(parts, conn.peer.ip(), conn.tls, conn.server_name.clone());
        let mut codec = FastCodec {
            head_only: view.head.method == http::Method::HEAD,
            close,
            body: BodyState::new(body, expect_continue),
            client: self,
            drain,
            status: 0,
            bytes_out: 0,
            upstream_time: None,
            send_timeout: listener.send_timeout(),
        };
        process_request(&mut codec, listener, shared, view).await
    }

    /// Writes a response the proxy or a policy made (`head_only`: the
    /// head only, for a HEAD request).
    async fn write_local(
        &mut self,
        response: Response<ProxyBody>,
        head_only: bool,
        close: bool,
        send_timeout: Duration,
    ) -> After {
        let (parts, body) = response.into_parts();
        let body = match body {
            ProxyBody::Local(bytes) => bytes.unwrap_or_default(),
            ProxyBody::Upstream(_) => Bytes::new(),
        };
        let out = &mut self.bufs.output;
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
        if !head_only {
            out.extend_from_slice(&body);
        }
        let written = async {
            self.io.write_all(&self.bufs.output).await?;
            self.io.flush().await
        };
        match (tokio::time::timeout(send_timeout, written).await, close) {
            (Ok(Ok(())), false) => After::KeepAlive,
            _ => After::Close,
        }
    }
}

/// One request on the fast path.
struct FastCodec<'c, IO> {
    client: &'c mut ClientConnection<IO>,
    /// The client asked to close after this request.
    close: bool,
    /// A HEAD request: responses have no body.
    head_only: bool,
    /// The request body's progress (`None`: no body).
    body: Option<BodyState>,
    /// The listener's drain: a response sent while draining closes the
    /// connection (and says so).
    drain: &'c Drain,
    /// The status of the backend's response being relayed.
    status: u16,
    /// Response body bytes written to the client.
    bytes_out: u64,
    /// To the response head of the last attempt, when it got one.
    upstream_time: Option<Duration>,
    /// The longest a write to the client may wait (the listener's as this
    /// request started; not held by the idle connection).
    send_timeout: Duration,
}

impl<IO> FastCodec<'_, IO> {
    /// The client asked to close, or the listener is draining: the
    /// response says `connection: close` and the connection closes.
    fn closing(&mut self) -> bool {
        self.close |= self.drain.draining();
        self.close
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Codec for FastCodec<'_, IO> {
    type Done = After;

    async fn attempt(
        &mut self,
        view: &mut RequestView,
        target: Target,
        _last: bool,
    ) -> Result<After, AttemptError> {
        self.upstream_time = None;
        self.forward(view, target).await
    }

    async fn respond(&mut self, response: Response<ProxyBody>) -> After {
        // A body left unread cannot be skipped safely: close after.
        let close = self.closing() || self.body.as_ref().is_some_and(|b| !b.done);
        if let (ProxyBody::Local(Some(body)), false) = (response.body(), self.head_only) {
            self.bytes_out = body.len() as u64;
        }
        self.client
            .write_local(response, self.head_only, close, self.send_timeout)
            .await
    }

    fn body_sent(&self) -> bool {
        self.body.as_ref().is_some_and(|b| b.sent)
    }

    fn relayed_status(&self, _done: &After) -> u16 {
        self.status
    }

    fn conn(&self) -> &ConnInfo {
        &self.client.conn
    }

    fn exchanged(&self) -> Exchanged {
        Exchanged {
            bytes_in: self.body.as_ref().map_or(0, |b| b.received),
            bytes_out: self.bytes_out,
            upstream_time: self.upstream_time,
        }
    }

    fn finish(&mut self, _done: &mut After, outcome: Outcome, state: &Arc<ListenerState>) {
        // The response is written: its last byte is out.
        outcome.record(state);
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> FastCodec<'_, IO> {
    /// One attempt on the target: the request goes out, the response
    /// comes back to the client. `Err` only when nothing was sent to the
    /// client yet.
    async fn forward(&mut self, view: &RequestView, target: Target) -> Result<After, AttemptError> {
        let close = self.closing();
        let backend = &target.backend;
        let client = &mut *self.client;
        let bufs = &mut client.bufs;
        let head = &view.head;
        outgoing::write_head(
            &mut bufs.upstream_head,
            head,
            &client.conn,
            backend,
            &target.request_edits,
            self.body
                .as_ref()
                .map_or(BodyFraming::None, BodyState::framing),
        );
        let rewrite = Rewrite {
            method: &head.method,
            load_header: &backend.load_header,
            edits: &target.response_edits,
            close,
        };
        let output = &mut bufs.output;
        let how = Exchange {
            timeout: backend.upstream.response_timeout,
            timer: client.timer.as_mut(),
            parse: |bytes: &[u8]| response::rewrite(bytes, &rewrite, output),
            client: client.conn.addresses(),
        };
        let guard = backend.start_request();
        let started = view.decided_at.unwrap_or_else(Instant::now);
        let head_bytes = &mut bufs.upstream_head;
        let exchanged = match &mut self.body {
            None => {
                let mut none = NoBody {
                    idempotent: retry::is_idempotent(&head.method),
                };
                upstream::exchange(backend, head_bytes, &mut none, how).await
            }
            Some(state) => {
                let mut upload = Upload {
                    client: &mut client.io,
                    input: &mut bufs.input,
                    state,
                    idle: backend.upstream.idle_timeout,
                };
                upstream::exchange(backend, head_bytes, &mut upload, how).await
            }
        };
        let timeout = backend.upstream.response_timeout;
        let (mut connection, meta) = retry::settle(Some(exchanged), &guard, timeout)?;
        self.status = meta.status.as_u16();
        let upstream_time = started.elapsed();
        self.upstream_time = Some(upstream_time);
        guard.record_response(upstream_time, meta.status);
        if let Some(load) = &meta.load {
            super::pipeline::record_load_report(load, backend);
        }
        // A backend that answered before the body was all sent leaves the
        // rest of it unread: the client connection closes after.
        let cut = self.body.as_ref().is_some_and(|b| !b.done);
        if cut && !self.close && meta.framing != Framing::Eof {
            close_in_head(&mut client.bufs.output);
        }
        let close = self.close || cut;
        let limits = (backend.upstream.idle_timeout, self.send_timeout);
        let output = &mut client.bufs.output;
        let relayed = relay::relay(
            &mut client.io,
            output,
            &mut connection,
            meta.framing,
            limits,
            &mut self.bytes_out,
        );
        // on_down = "close-connections": the response ends (both
        // connections closed) when the check marks the backend down.
        // Other pools await the relay alone: no select per response.
        let relayed = match backend.close_on_down {
            false => relayed.await,
            true => {
                let mut down = backend.stats.cut.watch();
                tokio::select! {
                    biased;
                    relayed = relayed => relayed,
                    () = down.cut() => {
                        tracing::debug!(backend = %backend.address, "backend marked down: response cut");
                        return Ok(After::Close);
                    }
                }
            }
        };
        match relayed {
            Ok(()) => {
                if meta.reusable && !cut {
                    connection.park();
                    backend.conns.raw.put(connection);
                }
                Ok(after(close, &meta))
            }
            Err(RelayError::Invalid(reason)) => {
                guard.record_late_failure(Failure::Broken);
                Err(AttemptError::BadResponse(reason.into()))
            }
            Err(RelayError::Idle(timeout)) => {
                tracing::warn!(backend = %backend.address, ?timeout, "backend response body idle timeout");
                guard.record_late_failure(Failure::Idle);
                Ok(After::Close)
            }
            Err(RelayError::Backend(reason)) => {
                tracing::debug!(backend = %backend.address, %reason, "backend response body failed");
                guard.record_late_failure(Failure::Broken);
                Ok(After::Close)
            }
            Err(RelayError::Client) => Ok(After::Close),
        }
    }
}

/// Reads from the client: into the connection's buffers when it has
/// some, else through the pool ([`buffers::read_idle`]).
async fn read_some<IO: AsyncRead + Unpin>(
    io: &mut IO,
    bufs: &mut Buffers,
    idle: bool,
) -> std::io::Result<usize> {
    match idle {
        true => buffers::read_idle(io, bufs).await,
        false => io.read_buf(&mut bufs.input).await,
    }
}

/// Whether the connection stays open after a relayed response.
fn after(close: bool, meta: &ResponseMeta) -> After {
    match close || meta.framing == Framing::Eof {
        true => After::Close,
        false => After::KeepAlive,
    }
}

/// Adds `connection: close` to the client's response head in `out`
/// (which ends with the head's blank line).
fn close_in_head(out: &mut Vec<u8>) {
    out.truncate(out.len() - 2);
    out.extend_from_slice(b"connection: close\r\n\r\n");
}
