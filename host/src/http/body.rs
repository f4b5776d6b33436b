//! The response body type of the proxy: either the upstream's body streamed
//! through untouched, or a small local body. An enum rather than a boxed
//! trait object, so a proxied response costs no extra allocation.
//!
//! An upstream body enforces the pool's `idle_timeout`: the longest the
//! backend may pause between two frames of the body. Its timer is
//! allocated the first time the body has to wait (a response that arrives
//! with its head costs no timer) and the clock is read only when it waits
//! again after a frame. Past the timeout the body ends with an error (the
//! client sees the response cut off) and the backend gets a passive-health
//! failure.
//!
//! An upstream body holds its connection: read to the end, the body gives
//! it back to the backend's idle pool (`super::client`) when it is
//! dropped; a body dropped before its end (the client went away) closes
//! it, since the rest of the response would still be on the wire.
//!
//! The listener's `send_timeout` holds too. A client that stops reading
//! (its HTTP/2 window stays shut, its socket full) stops hyper polling
//! the body, so two watches that run without it keep time: the upstream
//! connection's (`crate::upstream::SendStall`) and the client
//! connection's (`super::send_watch`). The body tells both of each poll,
//! and hands data out at most [`MAX_HANDED`] bytes at a time, so a client
//! that reads slowly still takes something well within the timeout. When
//! a client takes nothing for the timeout, the upstream connection is
//! closed, and the client connection too when nothing on it moves. Not
//! the backend's fault: no passive-health failure.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::metrics::PendingOutcome;
use super::send_watch::ClientWatch;
use crate::pool::ActiveRequest;
use crate::pool::outlier::Failure;
use crate::upstream::Connection;

/// The error type of [`ProxyBody`].
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The backend paused its response body past `idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the backend's response body was idle for more than {0:?}")]
pub struct IdleTimeout(pub std::time::Duration);

/// The most of a backend's data frame handed to hyper at once: what the
/// client must take within `send_timeout` for the response to go on (the
/// fast path's bound is one read buffer, about as much). A larger frame
/// is handed out in pieces.
pub const MAX_HANDED: usize = 16 * 1024;

/// The client took no frame of the response for the listener's
/// `send_timeout` (see `super::send_watch`).
#[derive(Debug, thiserror::Error)]
#[error("the client did not read the response for more than {0:?}")]
pub struct SendTimeout(pub std::time::Duration);

/// The idle timer of an upstream body; see the module docs.
#[derive(Debug, Default)]
pub struct IdleTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    /// Called when the body has to wait: true when the wait is over the
    /// timeout.
    fn poll_expired(&mut self, timeout: std::time::Duration, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let deadline = Instant::now() + timeout;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }
}

/// A response body sent to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from a backend.
    Upstream(UpstreamResponse),
    /// A body produced by the proxy or a policy.
    Local(Option<Bytes>),
}

/// A backend's response body on its way to the client.
pub struct UpstreamResponse {
    body: Incoming,
    /// Counts the request as in flight while it lives.
    guard: ActiveRequest,
    idle: IdleTimer,
    /// Given back to the backend's pool once the body has ended.
    connection: Option<Connection>,
    ended: bool,
    /// The client connection's send watch.
    client: Arc<ClientWatch>,
    /// A frame was handed out and hyper has not polled again since.
    waiting: bool,
    /// Polls that changed something, for the upstream connection's watch.
    sequence: u64,
    /// What is left of a data frame larger than [`MAX_HANDED`].
    rest: Bytes,
    /// The request's outcome, recorded when the body is dropped.
    outcome: Option<PendingOutcome>,
    /// The request body's bytes were counted as they streamed (a body
    /// without `Content-Length`), on the connection: the outcome reads
    /// the count.
    counted: bool,
    /// Data bytes passed on to the client so far.
    sent: u64,
}

impl UpstreamResponse {
    /// Streams `body` to a client connection watched by `client`;
    /// `connection` (`None` for an upgraded one) goes back to the pool of
    /// `guard`'s backend when the body ends, and watches the client's
    /// progress until then.
    pub fn new(
        body: Incoming,
        guard: ActiveRequest,
        connection: Option<Connection>,
        client: &Arc<ClientWatch>,
    ) -> Self {
        let sequence = connection
            .as_ref()
            .map_or(0, |c| c.state.stall.watch(client.timeout));
        UpstreamResponse {
            body,
            guard,
            idle: IdleTimer::default(),
            connection,
            ended: false,
            client: Arc::clone(client),
            waiting: false,
            sequence,
            rest: Bytes::new(),
            outcome: None,
            counted: false,
            sent: 0,
        }
    }

    /// Records `outcome` when this body ends (is dropped: read to its end,
    /// cut off, or abandoned by the client); `counted`: with the request
    /// body bytes the connection counted by then.
    pub fn record_at_end(&mut self, outcome: PendingOutcome, counted: bool) {
        self.outcome = Some(outcome);
        self.counted = counted;
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if !self.rest.is_empty() {
            let piece = self.piece_of_rest();
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => {
                self.hand_out(false);
                let timeout = self.guard.backend().upstream.idle_timeout;
                if !self.idle.poll_expired(timeout, cx) {
                    return Poll::Pending;
                }
                tracing::warn!(backend = %self.guard.backend().address, ?timeout, "backend response body idle timeout");
                self.guard.record_late_failure(Failure::Idle);
                self.discard_connection();
                Poll::Ready(Some(Err(Box::new(IdleTimeout(timeout)))))
            }
            Poll::Ready(_)
                if self
                    .connection
                    .as_ref()
                    .is_some_and(|c| c.state.stall.is_cut()) =>
            {
                // The client stalled: the connection was closed under
                // this body, whose end must not look complete. The
                // client's fault, not the backend's.
                self.hand_out(false);
                self.discard_connection();
                Poll::Ready(Some(Err(Box::new(SendTimeout(self.client.timeout)))))
            }
            Poll::Ready(frame) => {
                self.idle.armed = false;
                self.ended = frame.is_none();
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    other => {
                        self.hand_out(false);
                        return Poll::Ready(other.map(|f| f.map_err(Into::into)));
                    }
                };
                match frame.into_data() {
                    Ok(bytes) => {
                        self.rest = bytes;
                        Poll::Ready(Some(Ok(Frame::data(self.piece_of_rest()))))
                    }
                    Err(frame) => {
                        self.hand_out(false);
                        Poll::Ready(Some(Ok(frame)))
                    }
                }
            }
        }
    }

    /// The next piece of `rest` to hand out, at most
    /// [`MAX_HANDED`] bytes (a reference-counted slice, not a copy).
    fn piece_of_rest(&mut self) -> Bytes {
        let len = self.rest.len().min(MAX_HANDED);
        let piece = self.rest.split_to(len);
        self.sent += len as u64;
        self.hand_out(true);
        piece
    }

    /// Tells both watches that hyper polled: whatever was handed out is
    /// taken, and `data`: a frame is handed out now.
    fn hand_out(&mut self, data: bool) {
        if !(self.waiting || data) {
            return;
        }
        self.client.polled(self.waiting, data);
        self.waiting = data;
        self.sequence += 1;
        if let Some(connection) = &self.connection {
            connection.state.stall.progress(self.sequence, data);
        }
    }

    /// The connection cannot carry another request: its driver ends now
    /// (the connection is kept for its counts, never pooled again).
    fn discard_connection(&mut self) {
        if let Some(connection) = &self.connection {
            connection.state.stall.abandon();
        }
    }
}

impl Drop for UpstreamResponse {
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome.take() {
            let state = self.connection.as_ref().map(|c| &c.state);
            let received = state.filter(|_| self.counted);
            outcome.record(
                self.sent,
                received.map(|s| s.request_bytes.load(Ordering::Relaxed)),
            );
        }
        self.client.dropped(self.waiting);
        let Some(connection) = self.connection.take() else {
            return;
        };
        let stall = &connection.state.stall;
        match (self.ended || self.body.is_end_stream()) && !stall.is_cut() {
            true => {
                stall.unwatch(self.sequence + 1);
                self.guard.backend().conns.hyper.put(connection);
            }
            // The rest of the response is still on the wire.
            false => stall.abandon(),
        }
    }
}

impl std::fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("backend", &self.guard.backend().address)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ProxyBody {
    /// A local body.
    pub fn local(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Local(Some(bytes.into()))
    }
    /// An empty body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Local(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(upstream) => upstream.poll_frame(cx),
            ProxyBody::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(upstream) => {
                upstream.rest.is_empty() && upstream.body.is_end_stream()
            }
            ProxyBody::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(upstream) => {
                let rest = upstream.rest.len() as u64;
                let hint = upstream.body.size_hint();
                let mut with_rest = SizeHint::new();
                if let Some(upper) = hint.upper() {
                    with_rest.set_upper(upper + rest);
                }
                with_rest.set_lower(hint.lower() + rest);
                with_rest
            }
            ProxyBody::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
