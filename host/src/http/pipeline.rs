//! The request pipeline, once for both codecs: decide with the listener's
//! policy, attempt the chosen backend, settle the outcome, retry or
//! respond ([`process_request`]).
//!
//! A codec ([`Codec`]: the HTTP/1.1 fast codec in `super::fast`, hyper's
//! in `super::proxy`) moves the bytes: it sends one attempt and relays its
//! response, or writes a response the proxy made. Everything else is
//! decided here, in this order, for every request:
//! 1. the policy decides ([`policy::decide`]); a failed decision follows
//!    the listener's `on_error` (fallback: host round robin over the
//!    default pool's healthy backends; reject: 503); on a listener with a
//!    shadow candidate, the candidate then decides a sample of first
//!    decisions, for comparison only ([`super::shadow`]);
//! 2. the codec attempts the backend; its outcome is one
//!    [`AttemptError`] or a relayed response;
//! 3. a failure that [`AttemptError::retryable`] allows, within the
//!    pool's `retries`, goes back to 1 with the tried backend in
//!    `request.tried()`; when the policy picks a tried one anyway, the host
//!    substitutes an untried healthy backend of the same pool;
//! 4. otherwise the client gets the failure's response (503 with
//!    `Retry-After`, 502, 504, or 400/408 for its own fault).
//!
//! The trait is generic, not a trait object: each codec's pipeline is
//! compiled for it, so the fast path pays no dynamic call.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::sync::broadcast;

use super::access::{self, AccessEntry};
use super::body::ProxyBody;
use super::headers;
use super::metrics::Outcome;
use super::retry::AttemptError;
use super::shadow::{self, LiveRoute};
use super::state::{ListenerHandle, ListenerState};
use crate::config::OnError;
use crate::events::ServerEvent;
use crate::policy::{self, Decision, DecisionError, HeaderEdit, RequestView};
use crate::pool::Backend;
use crate::upstream::Addresses;

/// What every request of a server shares.
pub struct ProxyShared {
    /// Where decision failures are announced.
    pub events: broadcast::Sender<ServerEvent>,
    /// hyper's connection builder ([`super::connection_builder`]), for the
    /// connections it serves (HTTP/2, upgrades, HTTP/1.0, redirects):
    /// held here rather than by each connection, whose task is the
    /// memory an idle connection costs.
    pub builder: auto::Builder<TokioExecutor>,
}

/// What the proxy knows about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address (the one a trusted PROXY protocol header
    /// gave, on a listener that accepts it).
    pub peer: SocketAddr,
    /// The address the client connected to (likewise).
    pub local: SocketAddr,
    /// Whether the client speaks TLS to us.
    pub tls: bool,
    /// The SNI name the client sent.
    pub server_name: Option<Arc<str>>,
}

impl ConnInfo {
    /// A plain-text connection from `peer` to `local` (TLS sets `tls` and
    /// `server_name` after its handshake).
    pub fn new(peer: SocketAddr, local: SocketAddr) -> ConnInfo {
        ConnInfo {
            peer,
            local,
            tls: false,
            server_name: None,
        }
    }
}

impl ConnInfo {
    /// The endpoints a PROXY protocol header to a backend names.
    pub fn addresses(&self) -> Addresses {
        Addresses {
            source: self.peer,
            destination: self.local,
        }
    }
}

/// Where one attempt goes, as the policy (or `on_error`) chose it.
pub struct Target {
    /// The pool id and backend index, as `request.tried()` lists them.
    pub id: (u32, u32),
    /// The backend.
    pub backend: Arc<Backend>,
    /// The policy's edits of the upstream request.
    pub request_edits: Vec<HeaderEdit>,
    /// The policy's edits of the response.
    pub response_edits: Vec<HeaderEdit>,
}

/// What the access log reads of an exchange from its codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exchanged {
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client (hyper's codec counts a
    /// streamed body when it ends).
    pub bytes_out: u64,
    /// To the response head of the last attempt, when it got one.
    pub upstream_time: Option<Duration>,
}

/// Where a request goes after the decision.
enum Route {
    Forward(Target),
    /// The policy's own answer.
    Local(Response<ProxyBody>),
    /// An error answer of the proxy (a failed decision).
    Refuse(Response<ProxyBody>),
    /// A retry found no healthy backend that was not tried yet.
    Exhausted,
}

/// What a codec does for the pipeline.
#[expect(
    async_fn_in_trait,
    reason = "implemented and called with concrete types only, whose futures are Send"
)]
pub trait Codec {
    /// What serving a request ends with (the fast codec: whether the
    /// connection stays open; hyper's: the response).
    type Done;

    /// One attempt: sends the request in `view` to `target` and relays
    /// the response. `last`: no retry can follow, so the codec may give
    /// the request away. `Err` only while nothing was sent to the client.
    async fn attempt(
        &mut self,
        view: &mut RequestView,
        target: Target,
        last: bool,
    ) -> Result<Self::Done, AttemptError>;

    /// Sends a response the proxy or the policy made.
    async fn respond(&mut self, response: Response<ProxyBody>) -> Self::Done;

    /// Whether some of the request's body has been sent to a backend, so
    /// that it cannot go to another one.
    fn body_sent(&self) -> bool;

    /// The status of the backend's response that `done` relayed.
    fn relayed_status(&self, done: &Self::Done) -> u16;

    /// The client connection.
    fn conn(&self) -> &ConnInfo;

    /// Bytes and upstream time so far, for the access log.
    fn exchanged(&self) -> Exchanged;

    /// Records how the request ended in the metrics and access log of
    /// `state` (the listener state it was served with): now when the whole
    /// response was written, or when the response body ends.
    fn finish(&mut self, done: &mut Self::Done, outcome: Outcome, state: &Arc<ListenerState>);
}

/// Serves one request: decide, attempt, settle, retry or respond (see the
/// module docs), and hands its [`Outcome`] to the codec to record.
pub async fn process_request<C: Codec>(
    codec: &mut C,
    listener: &ListenerHandle,
    shared: &ProxyShared,
    mut view: RequestView,
) -> C::Done {
    let started = Instant::now();
    let state = listener.state();
    let request_line = state
        .access_log
        .as_ref()
        .map(|log| access::start_line(log, &state.name, &view.head, codec.conn().peer, started));
    let mut proxy_error: Option<Bytes> = None;
    let mut budget: Option<u32> = None;
    let mut last_error: Option<AttemptError> = None;
    let mut last_target: Option<(u32, u32)> = None;
    let mut attempts = 0;
    let (mut done, status) = loop {
        let route;
        // The first decision starts with the request: no second clock read.
        let decision_start = match attempts {
            0 => started,
            _ => Instant::now(),
        };
        (view, route) = decide_route(listener, &state, shared, view, decision_start);
        // Retries are not shadowed: the first decision is compared only.
        if let Some(shadow) = &state.shadow
            && attempts == 0
        {
            view = shadow::compare(shadow, &state.policy.pools, view, live_route(&route));
        }
        let target = match route {
            Route::Forward(target) => target,
            Route::Local(response) => break respond(codec, response).await,
            Route::Refuse(response) => {
                proxy_error = reason_of(&response);
                break respond(codec, response).await;
            }
            Route::Exhausted => {
                let response = last_error.map_or_else(
                    || unavailable("no healthy backend\n"),
                    |error| error.response(),
                );
                proxy_error = reason_of(&response);
                break respond(codec, response).await;
            }
        };
        let retries = *budget.get_or_insert(target.backend.upstream.retries);
        let may_retry = (view.tried.len() as u32) < retries;
        let (id, address) = (target.id, target.backend.address);
        last_target = Some(id);
        attempts += 1;
        let error = match codec.attempt(&mut view, target, !may_retry).await {
            Ok(done) => {
                let status = codec.relayed_status(&done);
                break (done, status);
            }
            Err(error) => error,
        };
        if may_retry && error.retryable(&view.head.method, codec.body_sent()) {
            tracing::debug!(backend = %address, attempt = view.tried.len() + 1, "retrying on another backend");
            if let Some(pool) = state.policy.pools.get(id.0 as usize) {
                pool.retries.inc();
            }
            view.tried.push(id);
            last_error = Some(error);
            continue;
        }
        let response = error.response();
        proxy_error = reason_of(&response);
        break respond(codec, response).await;
    };
    let access = request_line.map(|request| AccessEntry {
        exchanged: codec.exchanged(),
        attempts,
        decision_time: view.decision_time,
        error: proxy_error,
        ..AccessEntry::new(request, codec.conn())
    });
    let outcome = Outcome {
        started,
        route: last_target,
        status,
        attempts,
        decision_time: view.decision_time,
        access,
    };
    codec.finish(&mut done, outcome, &state);
    done
}

/// Where `route` sends the request, as a shadow comparison sees it.
fn live_route(route: &Route) -> LiveRoute {
    match route {
        Route::Forward(target) => LiveRoute::Forward(target.id.0, target.id.1),
        Route::Local(response) | Route::Refuse(response) => {
            LiveRoute::Status(response.status().as_u16())
        }
        // Not on a first decision, which has tried nothing.
        Route::Exhausted => LiveRoute::Status(StatusCode::SERVICE_UNAVAILABLE.as_u16()),
    }
}

/// The body of an error response the proxy made (a copy of a
/// reference-counted buffer).
fn reason_of(response: &Response<ProxyBody>) -> Option<Bytes> {
    match response.body() {
        ProxyBody::Local(Some(body)) => Some(body.clone()),
        _ => None,
    }
}

/// Sends a response the proxy or the policy made; returns its status too.
///
/// Boxed, as a local answer is the rare path: its future holds the
/// response at each level (about 2 KB on the fast codec), and unboxed it
/// would size the state of every request, which the fast codec moves into
/// a box of its own per request.
fn respond<C: Codec>(
    codec: &mut C,
    response: Response<ProxyBody>,
) -> Pin<Box<impl Future<Output = (C::Done, u16)> + '_>> {
    let status = response.status().as_u16();
    Box::pin(async move { (codec.respond(response).await, status) })
}

/// Asks the listener's policy where the request in `view` goes; a failed
/// decision follows `on_error`. The view comes back with the route.
fn decide_route(
    listener: &ListenerHandle,
    state: &ListenerState,
    shared: &ProxyShared,
    view: RequestView,
    started: Instant,
) -> (RequestView, Route) {
    let (view, result) = policy::decide_since(&state.policy, view, started);
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
            Route::Forward(Target {
                id: (forward.pool, index),
                backend: Arc::clone(backend),
                request_edits: forward.request_edits,
                response_edits: forward.response_edits,
            })
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
    // A tripped policy was not called: its trip was reported once (by the
    // `Tripping` failure), its requests are not, one by one.
    if !matches!(error, DecisionError::Tripped) {
        announce_decision_error(listener, state, shared, &error);
    }
    let default_pool = &state.policy.pools[0];
    match (state.on_error, default_pool.fallback_pick_untried(0, tried)) {
        (OnError::Fallback, Some(index)) => Route::Forward(Target {
            id: (0, index as u32),
            backend: Arc::clone(&default_pool.backends[index]),
            request_edits: Vec::new(),
            response_edits: Vec::new(),
        }),
        (OnError::Fallback, None) if !tried.is_empty() => Route::Exhausted,
        (OnError::Fallback, None) => Route::Refuse(unavailable("no healthy backend\n")),
        (OnError::Reject, _) => Route::Refuse(unavailable("routing policy failed\n")),
    }
}

/// Counts, logs and announces a failed decision (and the trip it caused).
fn announce_decision_error(
    listener: &ListenerHandle,
    state: &ListenerState,
    shared: &ProxyShared,
    error: &DecisionError,
) {
    let module = &state.policy.module;
    listener.count_decision_error();
    if let Some(suppressed) = listener.failure_log.admit() {
        tracing::warn!(
            listener = %listener.name,
            policy = %module.name,
            version = module.version,
            sha256 = %module.short_digest(),
            on_error = ?state.on_error,
            %error,
            suppressed,
            "policy decision failed (one line per 5s per listener; `suppressed` counts the failures not logged since the previous line)"
        );
    }
    let _ = shared.events.send(ServerEvent::DecisionFailed {
        listener: listener.name.clone(),
        policy: module.name.clone(),
        reason: error.to_string(),
    });
    if let DecisionError::Tripping { cause, back_off } = error {
        let _ = shared.events.send(ServerEvent::PolicyTripped {
            listener: listener.name.clone(),
            policy: module.name.clone(),
            back_off: *back_off,
            reason: cause.to_string(),
        });
    }
}

/// `Retry-After` of the 503s the proxy sends (seconds).
const RETRY_AFTER: HeaderValue = HeaderValue::from_static("1");

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

/// A local response to a request refused before the policy saw it: the
/// status, and the reason as its body.
pub fn refused(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let mut response = local(status, "");
    let text = format!(
        "{}: {reason}\n",
        status.canonical_reason().unwrap_or("refused")
    );
    *response.body_mut() = ProxyBody::local(text.to_ascii_lowercase());
    response
}

/// A local 503 with `Retry-After`.
pub fn unavailable(body: &'static str) -> Response<ProxyBody> {
    local(StatusCode::SERVICE_UNAVAILABLE, body)
}

/// Records a backend's utilization report (the value of its pool's load
/// header).
pub fn record_load_report(value: &HeaderValue, backend: &Backend) {
    match value.to_str().ok().and_then(crate::pool::parse_load) {
        Some((cpu, mem)) => backend.stats.load.store(cpu, mem, crate::pool::now_ms()),
        None => tracing::debug!(backend = %backend.address, "unparseable load report ignored"),
    }
}
