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

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::health::passive::Failure;
use crate::pool::ActiveRequest;

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
    /// Streamed from a backend. The guard keeps the backend's request
    /// counted as active until the body is finished or the client goes away.
    Upstream {
        /// The backend's body.
        body: Incoming,
        /// Counts the request as in flight while it lives.
        guard: ActiveRequest,
        /// Enforces the pool's `idle_timeout`.
        idle: IdleTimer,
    },
    /// A body produced by the proxy or a policy.
    Local(Option<Bytes>),
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
            ProxyBody::Upstream { body, guard, idle } => match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    let timeout = guard.backend().upstream.idle_timeout;
                    if !idle.poll_expired(timeout, cx) {
                        return Poll::Pending;
                    }
                    tracing::warn!(backend = %guard.backend().address, ?timeout, "backend response body idle timeout");
                    guard.record_late_failure(Failure::Idle);
                    Poll::Ready(Some(Err(Box::new(IdleTimeout(timeout)))))
                }
                Poll::Ready(frame) => {
                    idle.armed = false;
                    Poll::Ready(frame.map(|f| f.map_err(Into::into)))
                }
            },
            ProxyBody::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
