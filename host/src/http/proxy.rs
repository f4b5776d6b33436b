//! hyper's codec: HTTP/2 requests, HTTP/1 upgrades (WebSocket) and
//! HTTP/1.0, served through the one pipeline (`super::pipeline`).
//!
//! A request arrives as hyper parsed it; [`headers::check_request`] puts
//! its target and Host in one form first. Each attempt sends the head (a
//! copy while a retry may follow, the head itself on the last attempt)
//! and the body, streamed, to a pooled upstream connection; the response
//! streams back with the backend counted active until its body ends. A
//! body goes to one backend only, unless the connection could not be made
//! at all: then the request, body included, comes back unsent and may go
//! to another backend. An aborted client body is the client's fault (400),
//! never the backend's. A response the proxy makes while the client's
//! HTTP/1 body is unread says `Connection: close`, and so does every
//! HTTP/1 response while the listener drains; an HTTP/1.0 client that
//! asks for keep-alive gets `Connection: keep-alive` (and keeps its
//! connection) otherwise. Response bodies tell the connection's send
//! watch of their progress (`super::send_watch`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::{ProxyBody, UpstreamResponse};
use super::client;
use super::headers;
use super::metrics::Outcome;
use super::pipeline::{
    Codec, ConnInfo, Exchanged, ProxyShared, Target, local, process_request, refused,
};
use super::retry::{self, AttemptError};
use super::send_watch::ClientWatch;
use super::state::ListenerState;
use crate::http::state::ListenerHandle;
use crate::policy::RequestView;
use crate::pool::Backend;
use crate::upstream::{CountedBody, UpstreamBody};

/// What every request on one client connection hyper serves shares
/// (built once per connection).
pub struct HyperConnection {
    /// The client.
    pub conn: ConnInfo,
    /// The connection's send watch, which its response bodies tell.
    pub watch: Arc<ClientWatch>,
    /// The listener is draining: HTTP/1 responses say `connection: close`.
    pub closing: Arc<AtomicBool>,
}

/// Handles one request from a client through the pipeline.
pub async fn handle(
    request: Request<Incoming>,
    client: &HyperConnection,
    listener: &ListenerHandle,
    shared: &ProxyShared,
) -> Response<ProxyBody> {
    let version = request.version();
    let keep_alive = version == Version::HTTP_10 && asks_keep_alive(request.headers());
    let mut response = handle_request(request, client, listener, shared).await;
    if version < Version::HTTP_2 {
        connection_header(&mut response, keep_alive, &client.closing);
    }
    response
}

/// Whether an HTTP/1.0 request asks to keep its connection.
fn asks_keep_alive(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONNECTION).iter();
    values
        .any(|v| headers::list_tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"keep-alive")))
}

/// The `Connection` header of an HTTP/1 response that has none: `close`
/// while the listener drains (hyper then closes the connection after the
/// response), `keep-alive` for an HTTP/1.0 client that asked for it
/// (hyper closes an HTTP/1.0 connection whose response does not say so).
/// A switch of protocols keeps its own.
fn connection_header(response: &mut Response<ProxyBody>, keep_alive: bool, closing: &AtomicBool) {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        || response.headers().contains_key(header::CONNECTION)
    {
        return;
    }
    let value = match (closing.load(Ordering::Relaxed), keep_alive) {
        (true, _) => HeaderValue::from_static("close"),
        (false, true) => HeaderValue::from_static("keep-alive"),
        (false, false) => return,
    };
    response.headers_mut().insert(header::CONNECTION, value);
}

/// [`handle`], before the connection's own header.
async fn handle_request(
    request: Request<Incoming>,
    client: &HyperConnection,
    listener: &ListenerHandle,
    shared: &ProxyShared,
) -> Response<ProxyBody> {
    let conn = &client.conn;
    let (mut head, body) = request.into_parts();
    let client_upgrade = match headers::wants_upgrade(&head.headers) {
        true => head.extensions.remove::<OnUpgrade>(),
        false => None,
    };
    let declared = declared_length(&head.headers);
    let body = (!body.is_end_stream()).then_some(body);
    // A body without a length is counted as it streams, when the access
    // log reads the count.
    let counted = body.is_some() && declared.is_none() && listener.state().access_log.is_some();
    let mut codec = HyperCodec {
        client,
        http1: head.version < Version::HTTP_2,
        body: body.map(|body| CountedBody::new(body, counted)),
        counted,
        body_sent: false,
        client_upgrade,
        exchanged: Exchanged {
            bytes_in: declared.unwrap_or(0),
            ..Exchanged::default()
        },
    };
    if let Err(refusal) = headers::check_request(&mut head) {
        tracing::debug!(peer = %conn.peer, reason = refusal.reason, "request refused");
        return codec.respond(refused(refusal.status, refusal.reason)).await;
    }
    let view = RequestView::new(head, conn.peer.ip(), conn.tls, conn.server_name.clone());
    process_request(&mut codec, listener, shared, view).await
}

/// One request on hyper's side.
struct HyperCodec<'c> {
    /// The client connection: its endpoints and send watch.
    client: &'c HyperConnection,
    /// The client speaks HTTP/1 (a `Connection` header means something).
    http1: bool,
    /// The client's body, while it has not been sent.
    body: Option<CountedBody>,
    /// The body has no `Content-Length` and the access log reads its
    /// size: its bytes are counted as they stream, the response's outcome
    /// reads the count.
    counted: bool,
    body_sent: bool,
    client_upgrade: Option<OnUpgrade>,
    /// `bytes_in` is the request's `Content-Length` (0 without one,
    /// `counted` when a backend's response ends); `bytes_out` is set for
    /// local answers, a streamed body counts its own.
    exchanged: Exchanged,
}

/// The `Content-Length` a request declares.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_LENGTH)?;
    value.to_str().ok()?.parse().ok()
}

impl Codec for HyperCodec<'_> {
    type Done = Response<ProxyBody>;

    async fn attempt(
        &mut self,
        view: &mut RequestView,
        target: Target,
        last: bool,
    ) -> Result<Response<ProxyBody>, AttemptError> {
        let head = match last {
            // The last attempt: the head moves, no copy.
            true => std::mem::replace(&mut view.head, Request::new(()).into_parts().0),
            false => retry::copy_head(&view.head),
        };
        let body = match self.body.take() {
            Some(body) => Either::Left(body),
            None => Either::Right(Empty::new()),
        };
        let request = Request::from_parts(head, body);
        let upstream_time = &mut self.exchanged.upstream_time;
        *upstream_time = None;
        let result = forward(
            request,
            &mut self.client_upgrade,
            self.client,
            target,
            view.decided_at,
            upstream_time,
        )
        .await;
        result.map_err(|(error, unsent)| {
            match unsent.map(Request::into_body) {
                // Nothing was sent: the body can go to another backend.
                Some(Either::Left(body)) => self.body = Some(body),
                Some(Either::Right(_)) | None => self.body_sent = true,
            }
            error
        })
    }

    async fn respond(&mut self, mut response: Response<ProxyBody>) -> Response<ProxyBody> {
        if self.http1 && self.body.is_some() {
            // The body is not read: the connection cannot carry another
            // request.
            let close = HeaderValue::from_static("close");
            response.headers_mut().insert(header::CONNECTION, close);
        }
        if let ProxyBody::Local(Some(body)) = response.body() {
            self.exchanged.bytes_out = body.len() as u64;
        }
        response
    }

    fn body_sent(&self) -> bool {
        self.body_sent
    }

    fn relayed_status(&self, done: &Response<ProxyBody>) -> u16 {
        done.status().as_u16()
    }

    fn conn(&self) -> &ConnInfo {
        &self.client.conn
    }

    fn exchanged(&self) -> Exchanged {
        self.exchanged
    }

    fn finish(
        &mut self,
        done: &mut Response<ProxyBody>,
        outcome: Outcome,
        state: &Arc<ListenerState>,
    ) {
        match done.body_mut() {
            // Counted when the body ends (or the client goes away).
            ProxyBody::Upstream(upstream) => {
                upstream.record_at_end(outcome.pending(state), self.counted);
            }
            ProxyBody::Local(_) => outcome.record(state),
        }
    }
}

/// A failed attempt, and the request when nothing of it was sent.
type Failed = (AttemptError, Option<Request<UpstreamBody>>);

/// One attempt: sends `request` to the target backend and returns the
/// response to stream back. The attempt counts as a request of the
/// backend (active, latency, errors, passive health); its time to the
/// response head, from the end of the decision when there was one, goes
/// to `upstream_time`.
async fn forward(
    mut request: Request<UpstreamBody>,
    client_upgrade: &mut Option<OnUpgrade>,
    client: &HyperConnection,
    target: Target,
    decided_at: Option<Instant>,
    upstream_time: &mut Option<Duration>,
) -> Result<Response<ProxyBody>, Failed> {
    let backend = &target.backend;
    let upgrade = client_upgrade.is_some();
    let conn = &client.conn;
    if prepare_upstream_request(&mut request, conn, backend, upgrade).is_err() {
        return Ok(local(
            StatusCode::BAD_REQUEST,
            "bad request: invalid request target\n",
        ));
    }
    headers::apply_edits(request.headers_mut(), target.request_edits);

    let guard = backend.start_request();
    let started = decided_at.unwrap_or_else(Instant::now);
    let timeout = backend.upstream.response_timeout;
    let (sent, unsent) =
        match tokio::time::timeout(timeout, client::send(backend, request, conn.addresses())).await
        {
            Ok(Ok(sent)) => (Some(Ok(sent)), None),
            Ok(Err((error, unsent))) => (Some(Err(error)), unsent),
            Err(_) => (None, None),
        };
    let (mut response, connection) =
        retry::settle(sent, &guard, timeout).map_err(|error| (error, unsent))?;
    let elapsed = started.elapsed();
    *upstream_time = Some(elapsed);
    guard.record_response(elapsed, response.status());
    take_load_report(&mut response, backend);

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    // An upgraded connection is the tunnel's, never pooled again.
    let connection = (!switching).then_some(connection);
    if switching && let Some(client_upgrade) = client_upgrade.take() {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, backend.address));
    }
    headers::strip_hop_by_hop(response.headers_mut(), switching);
    headers::apply_edits(response.headers_mut(), target.response_edits);
    Ok(response.map(|body| {
        ProxyBody::Upstream(UpstreamResponse::new(
            body,
            guard,
            connection,
            &client.watch,
        ))
    }))
}

/// Records and removes the backend's utilization report (the pool's load
/// header): it is for the proxy, not the client.
fn take_load_report(response: &mut Response<Incoming>, backend: &Backend) {
    if let Some(value) = response.headers_mut().remove(&backend.load_header) {
        super::pipeline::record_load_report(&value, backend);
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
