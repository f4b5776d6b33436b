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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::metrics::PendingOutcome;
use crate::pool::ActiveRequest;
use crate::pool::outlier::Failure;
use crate::upstream::Connection;

/// The error type of [`ProxyBody`].
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The backend paused its response body past `idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the backend's response body was idle for more than {0:?}")]
pub struct IdleTimeout(pub std::time::Duration);

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
    /// The request's outcome, recorded when the body is dropped.
    outcome: Option<PendingOutcome>,
    /// The request body's bytes, counted as they streamed (a body without
    /// `Content-Length`), read when the outcome is recorded.
    received: Option<Arc<AtomicU64>>,
    /// Data bytes passed on to the client so far.
    sent: u64,
}

impl UpstreamResponse {
    /// Streams `body`; `connection` (`None` for an upgraded one) goes back
    /// to the pool of `guard`'s backend when the body ends.
    pub fn new(body: Incoming, guard: ActiveRequest, connection: Option<Connection>) -> Self {
        UpstreamResponse {
            body,
            guard,
            idle: IdleTimer::default(),
            connection,
            ended: false,
            outcome: None,
            received: None,
            sent: 0,
        }
    }

    /// Records `outcome` when this body ends (is dropped: read to its end,
    /// cut off, or abandoned by the client), with the request body bytes
    /// `received` has counted by then, when there is a count.
    pub fn record_at_end(&mut self, outcome: PendingOutcome, received: Option<Arc<AtomicU64>>) {
        self.outcome = Some(outcome);
        self.received = received;
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => {
                let timeout = self.guard.backend().upstream.idle_timeout;
                if !self.idle.poll_expired(timeout, cx) {
                    return Poll::Pending;
                }
                tracing::warn!(backend = %self.guard.backend().address, ?timeout, "backend response body idle timeout");
                self.guard.record_late_failure(Failure::Idle);
                self.connection = None;
                Poll::Ready(Some(Err(Box::new(IdleTimeout(timeout)))))
            }
            Poll::Ready(frame) => {
                self.idle.armed = false;
                self.ended = frame.is_none();
                if let Some(Ok(frame)) = &frame
                    && let Some(data) = frame.data_ref()
                {
                    self.sent += data.len() as u64;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }
}

impl Drop for UpstreamResponse {
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome.take() {
            let received = self.received.as_ref();
            outcome.record(self.sent, received.map(|r| r.load(Ordering::Relaxed)));
        }
        if let Some(connection) = self.connection.take()
            && (self.ended || self.body.is_end_stream())
        {
            self.guard.backend().conns.hyper.put(connection);
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
            ProxyBody::Upstream(upstream) => upstream.body.is_end_stream(),
            ProxyBody::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(upstream) => upstream.body.size_hint(),
            ProxyBody::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
