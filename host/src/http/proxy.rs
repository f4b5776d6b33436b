//! The request path: decide with the listener's policy, then forward the
//! request to the chosen backend or answer locally.
//!
//! One request, in order: the head is moved into the policy's store for the
//! decision ([`policy::decide`]); a failed decision follows the listener's
//! `on_error`; the head gets the proxy headers and the policy's edits; the
//! body streams to a pooled upstream connection; the response streams back
//! with the backend counted active until its body ends.
//!
//! Failures: an attempt that fails in a way that is safe to retry (see
//! [`super::retry`]) is retried on a backend not tried yet, chosen by the
//! policy again (it sees the tried ones in `request.tried()`; when it picks
//! a tried one anyway, the host substitutes an untried healthy backend of
//! the same pool). No backend reachable: 503 with `Retry-After`; no
//! response head within the pool's `response_timeout`: 504. Every 503
//! the proxy sends (its own, or a policy's without one) has `Retry-After`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;

use super::body::{ProxyBody, UpstreamResponse};
use super::client::{self, UpstreamBody};
use super::headers;
use super::ip_text::IpText;
use super::retry::{self, AttemptError};
use crate::config::OnError;
use crate::listener::{ListenerHandle, ListenerState};
use crate::policy::{self, Decision, DecisionError, HeaderEdit, RequestView};
use crate::pool::Backend;
use crate::server::ServerEvent;

/// What every request of a server shares.
pub struct ProxyShared {
    /// Where decision failures are announced.
    pub events: broadcast::Sender<ServerEvent>,
}

/// What the proxy knows about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the client speaks TLS to us.
    pub tls: bool,
    /// The SNI name the client sent.
    pub server_name: Option<Arc<str>>,
    /// The client's IP address as text, for the forwarding headers.
    pub ip_text: IpText,
}

impl ConnInfo {
    /// A plain-text connection from `peer` (TLS sets `tls` and
    /// `server_name` after its handshake).
    pub fn new(peer: SocketAddr) -> ConnInfo {
        ConnInfo {
            peer,
            tls: false,
            server_name: None,
            ip_text: IpText::new(peer.ip()),
        }
    }
}

/// Where a request goes after the decision.
pub(super) enum Route {
    Forward {
        /// The pool id and backend index the attempt goes to.
        target: (u32, u32),
        backend: Arc<Backend>,
        request_edits: Vec<HeaderEdit>,
        response_edits: Vec<HeaderEdit>,
    },
    Local(Response<ProxyBody>),
    /// A retry found no healthy backend that was not tried yet.
    Exhausted,
}

/// `Retry-After` of the 503s the proxy sends (seconds).
const RETRY_AFTER: HeaderValue = HeaderValue::from_static("1");

/// Handles one request from a client: decide, forward, and on a failure
/// that is safe to retry (see [`super::retry`]) decide again with the
/// tried backends known to the policy, up to the pool's `retries`.
pub async fn handle(
    request: Request<Incoming>,
    conn: &ConnInfo,
    listener: &ListenerHandle,
    shared: &ProxyShared,
) -> Response<ProxyBody> {
    let state = listener.state();
    let (mut head, body) = request.into_parts();
    let upgrade = headers::wants_upgrade(&head.headers);
    let mut client_upgrade = if upgrade {
        head.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    // A bodiless request can be re-sent; a body is streamed once.
    let mut body = (!body.is_end_stream()).then_some(body);
    let mut view = RequestView::new(head, conn.peer.ip(), conn.tls, conn.server_name.clone());
    let mut retries: Option<u32> = None;
    let mut last_error: Option<AttemptError> = None;
    loop {
        let route;
        (view, route) = decide_route(listener, &state, shared, view);
        let (target, backend, request_edits, response_edits) = match route {
            Route::Local(response) => return response,
            Route::Exhausted => {
                return last_error.map_or_else(
                    || unavailable("no healthy backend\n"),
                    |error| error.response(),
                );
            }
            Route::Forward {
                target,
                backend,
                request_edits,
                response_edits,
            } => (target, backend, request_edits, response_edits),
        };
        let budget = *retries.get_or_insert(backend.upstream.retries);
        let may_retry = body.is_none() && (view.tried.len() as u32) < budget;
        let edits = (request_edits, response_edits);
        if !may_retry {
            // The last attempt: the head (and body) move, no copy.
            let request_body = match body.take() {
                Some(body) => UpstreamBody::Left(body),
                None => UpstreamBody::Right(Empty::new()),
            };
            let request = Request::from_parts(view.head, request_body);
            let attempt = forward(request, &mut client_upgrade, conn, &backend, edits);
            return attempt.await.unwrap_or_else(|error| error.response());
        }
        let head = retry::copy_head(&view.head);
        let request = Request::from_parts(head, UpstreamBody::Right(Empty::new()));
        let attempt = forward(request, &mut client_upgrade, conn, &backend, edits);
        match attempt.await {
            Ok(response) => return response,
            Err(error) if error.retryable(&view.head.method) => {
                tracing::debug!(backend = %backend.address, attempt = view.tried.len() + 1, "retrying on another backend");
                view.tried.push(target);
                last_error = Some(error);
            }
            Err(error) => return error.response(),
        }
    }
}

/// Asks the listener's policy where the request in `view` goes; a failed
/// decision follows `on_error`. The view comes back with the route.
pub(super) fn decide_route(
    listener: &ListenerHandle,
    state: &ListenerState,
    shared: &ProxyShared,
    view: RequestView,
) -> (RequestView, Route) {
    let (view, result) = policy::decide(&state.policy, view);
    let route = match result {
        Ok(decision) => route_of(state, decision, &view.tried),
        Err(error) => on_decision_error(listener, state, shared, error, &view.tried),
    };
    (view, route)
}

fn route_of(state: &ListenerState, decision: Decision, tried: &[(u32, u32)]) -> Route {
    match decision {
        Decision::Forward(forward) => {
            // `policy::decide` has checked both indexes and health.
            let pool = &state.policy.pools[forward.pool as usize];
            let mut index = forward.backend;
            if tried.contains(&(forward.pool, index)) {
                // A retry goes to a backend not tried yet: the host picks
                // one of the same pool when the policy did not.
                match pool.fallback_pick_untried(forward.pool, tried) {
                    Some(other) => index = other as u32,
                    None => return Route::Exhausted,
                }
            }
            let backend = &pool.backends[index as usize];
            tracing::trace!(pool = forward.pool, backend = %backend.address, "policy forwards");
            Route::Forward {
                target: (forward.pool, index),
                backend: Arc::clone(backend),
                request_edits: forward.request_edits,
                response_edits: forward.response_edits,
            }
        }
        Decision::Respond(respond) => {
            let mut response = Response::new(ProxyBody::local(respond.body));
            *response.status_mut() = StatusCode::from_u16(respond.status).unwrap_or(StatusCode::OK);
            let edits = respond
                .headers
                .into_iter()
                .map(HeaderEdit::Append)
                .collect();
            headers::apply_edits(response.headers_mut(), edits);
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                let headers = response.headers_mut();
                if !headers.contains_key(header::RETRY_AFTER) {
                    headers.insert(header::RETRY_AFTER, RETRY_AFTER);
                }
            }
            Route::Local(response)
        }
    }
}

fn on_decision_error(
    listener: &ListenerHandle,
    state: &ListenerState,
    shared: &ProxyShared,
    error: DecisionError,
    tried: &[(u32, u32)],
) -> Route {
    let module = &state.policy.module;
    // A tripped policy was not called: its trip was reported once (by the
    // `Tripping` failure), its requests are not, one by one.
    if !matches!(error, DecisionError::Tripped) {
        listener.count_decision_error();
        tracing::warn!(
            listener = %listener.name,
            policy = %module.name,
            version = module.version,
            on_error = ?state.on_error,
            %error,
            "policy decision failed"
        );
        let _ = shared.events.send(ServerEvent::DecisionFailed {
            listener: listener.name.clone(),
            policy: module.name.clone(),
            reason: error.to_string(),
        });
        if let DecisionError::Tripping { cause, back_off } = &error {
            let _ = shared.events.send(ServerEvent::PolicyTripped {
                listener: listener.name.clone(),
                policy: module.name.clone(),
                back_off: *back_off,
                reason: cause.to_string(),
            });
        }
    }
    let default_pool = &state.policy.pools[0];
    match (state.on_error, default_pool.fallback_pick_untried(0, tried)) {
        (OnError::Fallback, Some(index)) => Route::Forward {
            target: (0, index as u32),
            backend: Arc::clone(&default_pool.backends[index]),
            request_edits: Vec::new(),
            response_edits: Vec::new(),
        },
        (OnError::Fallback, None) if !tried.is_empty() => Route::Exhausted,
        (OnError::Fallback, None) => Route::Local(unavailable("no healthy backend\n")),
        (OnError::Reject, _) => Route::Local(unavailable("routing policy failed\n")),
    }
}

/// A short local response.
pub fn local(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, RETRY_AFTER);
    }
    response
}

/// A local 503 with `Retry-After`.
pub(super) fn unavailable(body: &'static str) -> Response<ProxyBody> {
    local(StatusCode::SERVICE_UNAVAILABLE, body)
}

/// One attempt: sends `request` to `backend` and returns the response to
/// stream back, or why there is none. The attempt counts as a request of
/// the backend (active, latency, errors, passive health).
async fn forward(
    mut request: Request<UpstreamBody>,
    client_upgrade: &mut Option<hyper::upgrade::OnUpgrade>,
    conn: &ConnInfo,
    backend: &Arc<Backend>,
    (request_edits, response_edits): (Vec<HeaderEdit>, Vec<HeaderEdit>),
) -> Result<Response<ProxyBody>, AttemptError> {
    let upgrade = client_upgrade.is_some();
    if prepare_upstream_request(&mut request, conn, backend, upgrade).is_err() {
        return Ok(local(StatusCode::BAD_REQUEST, "bad request target\n"));
    }
    headers::apply_edits(request.headers_mut(), request_edits);

    let guard = backend.start_request();
    let started = Instant::now();
    let timeout = backend.upstream.response_timeout;
    let sent = tokio::time::timeout(timeout, client::send(backend, request))
        .await
        .ok();
    let (mut response, connection) = retry::settle(sent, &guard, timeout)?;
    guard.record_response(started.elapsed(), response.status());
    take_load_report(&mut response, backend);

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    // An upgraded connection is the tunnel's, never pooled again.
    let connection = (!switching).then_some(connection);
    if switching && let Some(client_upgrade) = client_upgrade.take() {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, backend.address));
    }
    headers::strip_hop_by_hop(response.headers_mut(), switching);
    headers::apply_edits(response.headers_mut(), response_edits);
    Ok(response.map(|body| ProxyBody::Upstream(UpstreamResponse::new(body, guard, connection))))
}

/// Records and removes the backend's utilization report (the pool's load
/// header): it is for the proxy, not the client.
fn take_load_report(response: &mut Response<Incoming>, backend: &Backend) {
    if let Some(value) = response.headers_mut().remove(&backend.load_header) {
        record_load_report(&value, backend);
    }
}

/// Records a backend's utilization report (the value of its pool's load
/// header).
pub(super) fn record_load_report(value: &HeaderValue, backend: &Backend) {
    match value.to_str().ok().and_then(crate::pool::parse_load) {
        Some((cpu, mem)) => backend.stats.load.store(cpu, mem, crate::pool::now_ms()),
        None => tracing::debug!(backend = %backend.address, "unparseable load report ignored"),
    }
}

/// The request target cannot be turned into an upstream URI.
struct BadTarget;

/// Rewrites the client's request into the upstream request: origin-form
/// URI (hyper's HTTP/1 client writes the URI as given), HTTP/1.1, `Host`
/// kept (or taken from the URI's authority, as HTTP/2 clients send it),
/// hop-by-hop headers removed, proxy headers added. The client's host is
/// a reference-counted copy of its header value, not a new string.
fn prepare_upstream_request<B>(
    request: &mut Request<B>,
    conn: &ConnInfo,
    backend: &Backend,
    upgrade: bool,
) -> Result<(), BadTarget> {
    let original = std::mem::take(request.uri_mut());
    let host = match original.authority() {
        Some(authority) => Some(HeaderValue::from_str(authority.as_str()).map_err(|_| BadTarget)?),
        None => request.headers().get(header::HOST).cloned(),
    };
    let path = original.into_parts().path_and_query;
    *request.uri_mut() = Uri::from(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
    *request.version_mut() = Version::HTTP_11;

    let headers = request.headers_mut();
    headers::strip_hop_by_hop(headers, upgrade);
    if !headers.contains_key(header::HOST) {
        let value = match &host {
            Some(host) => host.clone(),
            // HTTP/1.0 without a Host: name the backend.
            None => HeaderValue::from_str(backend.authority.as_str()).map_err(|_| BadTarget)?,
        };
        headers.insert(header::HOST, value);
    }
    headers::add_forwarded(headers, conn.peer.ip(), conn.tls, host.as_ref());
    Ok(())
}

/// Copies bytes both ways between an upgraded client and backend.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    backend: SocketAddr,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%backend, %error, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%backend, %error, "upgraded connection ended with an error");
    }
}
