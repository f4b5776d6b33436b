//! When a failed attempt may be retried on another backend, and what the
//! client gets when it may not.
//!
//! A request is retried only when re-sending it cannot do harm and the
//! proxy still has it:
//! - **the body**: only requests *without* a body are retried (the body is
//!   empty when hyper says `is_end_stream()` at arrival: no
//!   `Content-Length` or 0, no chunks). A body is streamed to the backend
//!   and not kept, so a POST or PUT with a body is never retried.
//! - **the failure**: a *connect failure* (refused, unreachable, connect
//!   timeout) is retried for every method: nothing reached a backend. A
//!   connection that failed *before any response byte* (reset, closed) is
//!   retried only for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE,
//!   TRACE): the backend may have acted on it. A response timeout is never
//!   retried (the backend may still be working on it): the client gets 504.
//! - **the budget**: at most the `retries` of the pool the first attempt
//!   went to; each retry asks the policy again with the tried backends in
//!   `request.tried()`.
//!
//! Cost: a request that may be retried keeps its head for the next
//! attempt, so each attempt sends a copy (method, URI, version and the
//! header map, whose values are reference-counted slices of the read
//! buffer: two vector allocations, no header bytes copied). The last
//! allowed attempt, and every request with a body, moves the head
//! instead.

use std::time::Duration;

use http::{Method, StatusCode, request::Parts};

use super::body::ProxyBody;
use super::client::SendError;
use super::proxy::local;
use crate::health::passive::Failure;
use crate::pool::ActiveRequest;

/// Why an attempt produced no response.
#[derive(Debug)]
pub enum AttemptError {
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect(String),
    /// The connection failed before a response head.
    Broken(String),
    /// No response head within the pool's `response_timeout`.
    Timeout(Duration),
}

impl AttemptError {
    /// Whether this failure may be retried for a bodiless request with
    /// `method`.
    pub fn retryable(&self, method: &Method) -> bool {
        match self {
            AttemptError::Connect(_) => true,
            AttemptError::Broken(_) => is_idempotent(method),
            AttemptError::Timeout(_) => false,
        }
    }

    /// The failure kind for passive health checking.
    pub fn failure(&self) -> Failure {
        match self {
            AttemptError::Connect(_) => Failure::Connect,
            AttemptError::Broken(_) => Failure::Broken,
            AttemptError::Timeout(_) => Failure::Timeout,
        }
    }

    /// What the client gets when this is the last failure: 503 (with
    /// `Retry-After`) when no backend could be reached, 502 when one broke
    /// the connection, 504 on a response timeout.
    pub fn response(&self) -> http::Response<ProxyBody> {
        match self {
            AttemptError::Connect(_) => local(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable: no backend could be reached\n",
            ),
            AttemptError::Broken(_) => local(
                StatusCode::BAD_GATEWAY,
                "bad gateway: the backend closed the connection without a response\n",
            ),
            AttemptError::Timeout(_) => local(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway timeout: the backend did not answer in time\n",
            ),
        }
    }
}

impl From<SendError> for AttemptError {
    fn from(error: SendError) -> AttemptError {
        match error {
            SendError::Connect(text) => AttemptError::Connect(text),
            SendError::Broken(text) => AttemptError::Broken(text),
        }
    }
}

/// The outcome of an attempt bounded by the pool's `response_timeout`
/// (`None`: no response head in time), with a failure recorded against the
/// backend of `guard` and logged.
pub fn settle<T>(
    sent: Option<Result<T, SendError>>,
    guard: &ActiveRequest,
    timeout: Duration,
) -> Result<T, AttemptError> {
    let backend = guard.backend();
    match sent {
        Some(Ok(sent)) => Ok(sent),
        Some(Err(error)) => {
            let error = AttemptError::from(error);
            guard.record_error(error.failure());
            tracing::warn!(backend = %backend.address, ?error, "backend request failed");
            Err(error)
        }
        None => {
            guard.record_error(Failure::Timeout);
            tracing::warn!(backend = %backend.address, ?timeout, "backend response timeout");
            Err(AttemptError::Timeout(timeout))
        }
    }
}

/// Methods whose repetition has the effect of one request (RFC 9110 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A copy of a request head for one attempt: method, URI, version and
/// headers; no extensions (the client's upgrade handle stays with the
/// proxy).
pub fn copy_head(head: &Parts) -> Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = head.method.clone();
    parts.uri = head.uri.clone();
    parts.version = head.version;
    parts.headers = head.headers.clone();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_retried() {
        let connect = AttemptError::Connect("refused".into());
        let broken = AttemptError::Broken("reset".into());
        let timeout = AttemptError::Timeout(Duration::from_secs(1));
        assert!(connect.retryable(&Method::POST));
        assert!(connect.retryable(&Method::GET));
        assert!(broken.retryable(&Method::GET));
        assert!(broken.retryable(&Method::DELETE));
        assert!(!broken.retryable(&Method::POST));
        assert!(!broken.retryable(&Method::PATCH));
        assert!(!timeout.retryable(&Method::GET));
    }

    #[test]
    fn last_failure_statuses() {
        let status = |e: AttemptError| e.response().status();
        assert_eq!(
            status(AttemptError::Connect(String::new())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let unavailable = AttemptError::Connect(String::new()).response();
        assert_eq!(unavailable.headers()["retry-after"], "1");
        assert_eq!(
            status(AttemptError::Broken(String::new())),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status(AttemptError::Timeout(Duration::ZERO)),
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn copy_keeps_the_head_but_not_extensions() {
        let mut request = http::Request::get("/a?b")
            .header("x-one", "1")
            .body(())
            .unwrap();
        request.extensions_mut().insert(7u32);
        let (head, ()) = request.into_parts();
        let copy = copy_head(&head);
        assert_eq!(copy.uri, "/a?b");
        assert_eq!(copy.headers["x-one"], "1");
        assert!(copy.extensions.get::<u32>().is_none());
    }
}
