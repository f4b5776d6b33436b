//! The one typed error of an attempt ([`AttemptError`]), when a failed
//! attempt may be retried on another backend, and what the client gets
//! when it may not.
//!
//! A request is retried only when re-sending it cannot do harm and the
//! proxy still has it:
//! - **the failure**: a *connect failure* (refused, unreachable, connect
//!   timeout) is retried for every method, with or without a body: nothing
//!   reached a backend and the body has not been read. A connection that
//!   failed *before any response byte* (reset, closed) is retried only for
//!   idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) whose
//!   body was not sent: the backend may have acted on it, and a body is
//!   streamed, not kept. A response timeout is never retried (the backend
//!   may still be working on it): the client gets 504. An invalid
//!   response is not retried either: 502.
//! - **the fault**: a failure that is the client's (a malformed, aborted
//!   or stalled body) is never retried and never counted against the
//!   backend; the client gets 400 or 408.
//! - **the budget**: at most the `retries` of the pool the first attempt
//!   went to; each retry asks the policy again with the tried backends in
//!   `request.tried()`.
//!
//! Cost: hyper's codec keeps the head of a request that may be retried
//! and sends a copy per attempt (method, URI, version and the header map,
//! whose values are reference-counted: two vector allocations); its last
//! allowed attempt moves the head. The fast codec writes every attempt
//! from the same parsed head, without a copy.

use std::time::Duration;

use http::{Method, StatusCode, request::Parts};

use super::body::ProxyBody;
use super::pipeline::local;
use crate::pool::ActiveRequest;
use crate::pool::outlier::Failure;

/// Whose fault a failed attempt is. Only a backend's fault counts against
/// it (error rate, passive health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent a malformed body, went away or stalled mid-upload.
    Client,
    /// The backend refused, broke, stalled or answered garbage.
    Backend,
    /// The proxy itself ran out of something (file descriptors, ports).
    Proxy,
}

/// What went wrong with the client's request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// Its framing was invalid (the reason says how).
    BadBody(&'static str),
    /// The client closed or reset the connection before the body ended.
    Aborted,
    /// The client paused longer than the body read timeout.
    Timeout,
}

/// Why an attempt produced no response for the client: the one error type
/// of the upstream side, for both codecs. It says whose fault it is
/// ([`AttemptError::fault`]), whether the attempt may go to another backend
/// ([`AttemptError::retryable`]) and what the client gets
/// ([`AttemptError::response`]). An error after the response head reached
/// the client is not one of these: the codec can only cut the response.
#[derive(Debug)]
pub enum AttemptError {
    /// No connection could be made (refused, unreachable, connect
    /// timeout): nothing reached the backend.
    Connect(String),
    /// The connection failed after the request was (maybe) sent, before
    /// a response head.
    Broken(String),
    /// No response head within the pool's `response_timeout`.
    Timeout(Duration),
    /// The backend answered with an invalid or oversized head, or framing
    /// that cannot be relayed.
    BadResponse(String),
    /// The client's side of the request failed.
    Client(ClientFault),
    /// The proxy could not open a connection for lack of local resources.
    Local(String),
}

impl AttemptError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            AttemptError::Client(_) => Fault::Client,
            AttemptError::Local(_) => Fault::Proxy,
            _ => Fault::Backend,
        }
    }

    /// Whether the request may go to another backend after this failure:
    /// always when nothing was sent (a connect failure, whatever the
    /// method and body); a broken connection only for an idempotent
    /// request whose body (if any) has not been sent.
    pub fn retryable(&self, method: &Method, body_sent: bool) -> bool {
        match self {
            AttemptError::Connect(_) | AttemptError::Local(_) => true,
            AttemptError::Broken(_) => !body_sent && is_idempotent(method),
            _ => false,
        }
    }

    /// The failure kind for passive health checking: `None` when it is
    /// not the backend's fault.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            AttemptError::Connect(_) => Some(Failure::Connect),
            AttemptError::Broken(_) | AttemptError::BadResponse(_) => Some(Failure::Broken),
            AttemptError::Timeout(_) => Some(Failure::Timeout),
            AttemptError::Client(_) | AttemptError::Local(_) => None,
        }
    }

    /// What the client gets when this is the last failure: 503 (with
    /// `Retry-After`) when no backend could be reached, 502 when one broke
    /// the connection or answered garbage, 504 on a response timeout, 400
    /// or 408 for the client's own fault. Each body says what happened.
    pub fn response(&self) -> http::Response<ProxyBody> {
        let (status, text) = match self {
            AttemptError::Connect(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable: no backend could be reached\n",
            ),
            AttemptError::Local(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable: the proxy is out of connections\n",
            ),
            AttemptError::Broken(_) => (
                StatusCode::BAD_GATEWAY,
                "bad gateway: the backend closed the connection without a response\n",
            ),
            AttemptError::BadResponse(_) => (
                StatusCode::BAD_GATEWAY,
                "bad gateway: the backend sent an invalid response\n",
            ),
            AttemptError::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway timeout: the backend did not answer in time\n",
            ),
            AttemptError::Client(ClientFault::BadBody(_)) => (
                StatusCode::BAD_REQUEST,
                "bad request: invalid request body framing\n",
            ),
            AttemptError::Client(ClientFault::Aborted) => (
                StatusCode::BAD_REQUEST,
                "bad request: the request body ended early\n",
            ),
            AttemptError::Client(ClientFault::Timeout) => (
                StatusCode::REQUEST_TIMEOUT,
                "request timeout: the request body stalled\n",
            ),
        };
        local(status, text)
    }

    /// A failed connect: the proxy's fault when it ran out of descriptors,
    /// ports or buffers, else the backend's.
    pub fn connect(error: &std::io::Error, text: String) -> AttemptError {
        // Linux errno values: EMFILE, ENFILE, ENOMEM, ENOBUFS,
        // EADDRNOTAVAIL (no ephemeral port left).
        match error.raw_os_error() {
            Some(24 | 23 | 12 | 105 | 99) => AttemptError::Local(text),
            _ => AttemptError::Connect(text),
        }
    }
}

/// The outcome of an attempt bounded by the pool's `response_timeout`
/// (`None`: no response head in time). A backend's fault is recorded
/// against the backend of `guard` and logged as a warning; a client's or
/// the proxy's is only logged.
pub fn settle<T>(
    sent: Option<Result<T, AttemptError>>,
    guard: &ActiveRequest,
    timeout: Duration,
) -> Result<T, AttemptError> {
    let backend = guard.backend();
    match sent {
        Some(Ok(sent)) => Ok(sent),
        Some(Err(error)) => {
            match error.failure() {
                Some(failure) => {
                    guard.record_error(failure);
                    tracing::warn!(backend = %backend.address, ?error, "backend request failed");
                }
                None => {
                    let fault = error.fault();
                    tracing::debug!(backend = %backend.address, ?fault, ?error, "request failed, not the backend's fault");
                }
            }
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
        assert!(connect.retryable(&Method::POST, true));
        assert!(connect.retryable(&Method::GET, false));
        assert!(broken.retryable(&Method::GET, false));
        assert!(broken.retryable(&Method::DELETE, false));
        assert!(!broken.retryable(&Method::PUT, true), "its body was sent");
        assert!(!broken.retryable(&Method::POST, false));
        assert!(!broken.retryable(&Method::PATCH, false));
        assert!(!timeout.retryable(&Method::GET, false));
        let client = AttemptError::Client(ClientFault::Aborted);
        assert!(!client.retryable(&Method::GET, false));
        assert_eq!(client.fault(), Fault::Client);
        assert!(
            client.failure().is_none(),
            "not counted against the backend"
        );
        assert_eq!(client.response().status(), StatusCode::BAD_REQUEST);
        let local = AttemptError::connect(
            &std::io::Error::from_raw_os_error(24),
            "too many open files".into(),
        );
        assert_eq!(local.fault(), Fault::Proxy);
        assert!(local.failure().is_none());
        let refused = AttemptError::connect(
            &std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            "refused".into(),
        );
        assert_eq!(refused.failure(), Some(Failure::Connect));
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
