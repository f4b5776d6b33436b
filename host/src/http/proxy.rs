//! The request path: decide with the listener's policy, then forward the
//! request to the chosen backend or answer locally.
//!
//! One request, in order: the head is moved into the policy's store for the
//! decision ([`policy::decide`]); a failed decision follows the listener's
//! `on_error`; the head gets the proxy headers and the policy's edits; the
//! body streams to a pooled upstream connection; the response streams back
//! with the backend counted active until its body ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::broadcast;

use super::body::ProxyBody;
use super::headers;
use crate::config::OnError;
use crate::listener::{ListenerHandle, ListenerState};
use crate::policy::{self, Decision, DecisionError, HeaderEdit, RequestView};
use crate::pool::Backend;
use crate::server::ServerEvent;

/// The upstream HTTP client with its keep-alive connection pool.
pub type UpstreamClient = Client<HttpConnector, Incoming>;

/// Builds the upstream client: HTTP/1.1, keep-alive pooling, TCP_NODELAY.
pub fn upstream_client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// What every request of a server shares.
pub struct ProxyShared {
    /// Pooled upstream connections.
    pub client: UpstreamClient,
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
}

/// Where a request goes after the decision.
enum Route {
    Forward {
        backend: Arc<Backend>,
        request_edits: Vec<HeaderEdit>,
        response_edits: Vec<HeaderEdit>,
    },
    Local(Response<ProxyBody>),
}

/// Handles one request from a client.
pub async fn handle(
    request: Request<Incoming>,
    conn: &ConnInfo,
    listener: &ListenerHandle,
    shared: &ProxyShared,
) -> Response<ProxyBody> {
    let state = listener.state();
    let (head, body) = request.into_parts();
    let view = RequestView {
        head,
        client_ip: conn.peer.ip(),
        is_tls: conn.tls,
        server_name: conn.server_name.clone(),
    };
    let (view, result) = policy::decide(&state.policy, view);
    let route = match result {
        Ok(decision) => route_of(&state, decision),
        Err(error) => on_decision_error(listener, &state, shared, error),
    };
    match route {
        Route::Local(response) => response,
        Route::Forward {
            backend,
            request_edits,
            response_edits,
        } => {
            let request = Request::from_parts(view.head, body);
            forward(
                request,
                conn,
                &backend,
                request_edits,
                response_edits,
                shared,
            )
            .await
        }
    }
}

fn route_of(state: &ListenerState, decision: Decision) -> Route {
    match decision {
        Decision::Forward(forward) => {
            // `policy::decide` has checked both indexes.
            let backend =
                &state.policy.pools[forward.pool as usize].backends[forward.backend as usize];
            tracing::trace!(pool = forward.pool, backend = %backend.address, "policy forwards");
            Route::Forward {
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
            Route::Local(response)
        }
    }
}

fn on_decision_error(
    listener: &ListenerHandle,
    state: &ListenerState,
    shared: &ProxyShared,
    error: DecisionError,
) -> Route {
    let module = &state.policy.module;
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
    let default_pool = &state.policy.pools[0];
    match (state.on_error, default_pool.fallback_pick()) {
        (OnError::Fallback, Some(index)) => Route::Forward {
            backend: Arc::clone(&default_pool.backends[index]),
            request_edits: Vec::new(),
            response_edits: Vec::new(),
        },
        (OnError::Fallback, None) => Route::Local(local(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy backend\n",
        )),
        (OnError::Reject, _) => Route::Local(local(
            StatusCode::SERVICE_UNAVAILABLE,
            "routing policy failed\n",
        )),
    }
}

/// A short local response.
pub fn local(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn forward(
    mut request: Request<Incoming>,
    conn: &ConnInfo,
    backend: &Arc<Backend>,
    request_edits: Vec<HeaderEdit>,
    response_edits: Vec<HeaderEdit>,
    shared: &ProxyShared,
) -> Response<ProxyBody> {
    let upgrade = headers::wants_upgrade(request.headers());
    let client_upgrade = if upgrade {
        request
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    if prepare_upstream_request(&mut request, conn, backend, upgrade).is_err() {
        return local(StatusCode::BAD_REQUEST, "bad request target\n");
    }
    headers::apply_edits(request.headers_mut(), request_edits);

    let guard = backend.start_request();
    let started = Instant::now();
    let mut response = match shared.client.request(request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(backend = %backend.address, error = %error_chain(&error), "backend request failed");
            return local(
                StatusCode::BAD_GATEWAY,
                "bad gateway: the backend could not be reached\n",
            );
        }
    };
    guard.record_response(started.elapsed());

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(client_upgrade) = client_upgrade {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, backend.address));
    }
    headers::strip_hop_by_hop(response.headers_mut(), switching);
    headers::apply_edits(response.headers_mut(), response_edits);
    response.map(|body| ProxyBody::Upstream { body, guard })
}

/// The request target cannot be turned into an upstream URI.
struct BadTarget;

/// Rewrites the client's request into the upstream request: absolute URI
/// for the pool lookup (sent in origin form), HTTP/1.1, `Host` kept,
/// hop-by-hop headers removed, proxy headers added.
fn prepare_upstream_request(
    request: &mut Request<Incoming>,
    conn: &ConnInfo,
    backend: &Backend,
    upgrade: bool,
) -> Result<(), BadTarget> {
    let original = std::mem::take(request.uri_mut());
    let host = original
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let mut parts = original.into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(backend.authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| BadTarget)?;
    *request.version_mut() = Version::HTTP_11;

    let headers = request.headers_mut();
    headers::strip_hop_by_hop(headers, upgrade);
    if !headers.contains_key(header::HOST)
        && let Some(value) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert(header::HOST, value);
    }
    headers::add_forwarded(headers, conn.peer.ip(), conn.tls, host.as_deref());
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

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
