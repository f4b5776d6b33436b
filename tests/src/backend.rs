//! A real HTTP/1.1 + HTTP/2 backend server on `127.0.0.1:0`.
//!
//! Every request is counted and its head recorded (so tests can check what
//! the proxy forwarded). Endpoints:
//! - `/upload`: streams the request body into SHA-256, answers
//!   `"<hex> <length>"`;
//! - `/download?bytes=N[&seed=S]`: streams N bytes of [`crate::pattern`];
//! - `/ws`: WebSocket echo (text and binary messages);
//! - `/slow?ms=N`: answers after N ms (simulates a slow backend);
//! - anything else: the backend's name.
//!
//! Every response carries `x-backend: <name>`. Dropping the [`Backend`]
//! stops the accept loop and every open connection; open connections are
//! counted ([`Backend::open_connections`]).
//!
//! Behaviour knobs, changeable while it runs (for health, retry and
//! balancing tests): [`Backend::set_delay`] delays every answer,
//! [`Backend::set_status`] answers every request with one status,
//! [`Backend::set_load_report`] adds an `X-Backend-Load` header (to every
//! response, or with [`Backend::set_check_load_report`] only to health
//! checks, `User-Agent: wasmroute-health`, which are counted in
//! [`Backend::health_checks`]).
//! [`Backend::stop`] and [`Backend::restart`] take it down and bring it
//! back on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::BoxError;
use crate::pattern::{PatternBody, sha256_of_body};

type RespBody = BoxBody<Bytes, BoxError>;

/// The head of one request as the backend received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Request method.
    pub method: Method,
    /// Request target (path and query for HTTP/1, full URI for HTTP/2).
    pub uri: Uri,
    /// HTTP version on the proxy-to-backend hop.
    pub version: Version,
    /// Every header as received.
    pub headers: HeaderMap,
}

impl SeenRequest {
    /// The first value of a header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header as text.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The authority the backend was addressed with: `Host`, else the URI's
    /// authority (HTTP/2).
    pub fn authority(&self) -> Option<String> {
        self.header("host")
            .map(str::to_owned)
            .or_else(|| self.uri.authority().map(|a| a.to_string()))
    }
}

struct Shared {
    name: String,
    served: AtomicU64,
    seen: tokio::sync::Mutex<Vec<SeenRequest>>,
    /// Milliseconds every answer waits (0: none).
    delay_ms: AtomicU64,
    /// Status every request gets (0: normal routing).
    forced_status: AtomicU16,
    /// `X-Backend-Load` value to send, if any.
    load_report: tokio::sync::RwLock<Option<String>>,
    /// Whether `load_report` goes only to health checks.
    report_to_checks_only: std::sync::atomic::AtomicBool,
    /// Health-check requests received.
    health_checks: AtomicU64,
    /// Connections open right now.
    open: AtomicU64,
}

/// Counts a connection as open while its task lives.
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running backend. Stops when dropped.
pub struct Backend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Backend {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(name: &str) -> anyhow::Result<Backend> {
        Self::start_at(name, "127.0.0.1:0".parse()?).await
    }

    /// Binds `addr` (e.g. another loopback IP with a port already used
    /// on 127.0.0.1, for backends that one DNS name gives) and serves.
    pub async fn start_at(name: &str, addr: SocketAddr) -> anyhow::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            served: AtomicU64::new(0),
            seen: tokio::sync::Mutex::new(Vec::new()),
            delay_ms: AtomicU64::new(0),
            forced_status: AtomicU16::new(0),
            load_report: tokio::sync::RwLock::new(None),
            report_to_checks_only: std::sync::atomic::AtomicBool::new(false),
            health_checks: AtomicU64::new(0),
            open: AtomicU64::new(0),
        });
        let task = Some(tokio::spawn(accept_loop(listener, shared.clone())));
        Ok(Backend { shared, addr, task })
    }

    /// Stops accepting and closes every open connection; the port is free
    /// once this returns. Connections to it are refused until
    /// [`Backend::restart`].
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Wait for the abort to drop the listener and the connections.
            let _ = task.await;
        }
    }

    /// Serves again on the same address (after [`Backend::stop`]), with
    /// the same counters and knobs.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.task = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
        Ok(())
    }

    /// Every following answer waits `delay` first (zero: no wait).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Every following request is answered with `status` (None: normal).
    pub fn set_status(&self, status: Option<StatusCode>) {
        let code = status.map_or(0, |s| s.as_u16());
        self.shared.forced_status.store(code, Ordering::SeqCst);
    }

    /// Every following response carries `X-Backend-Load: <value>` (None:
    /// no header).
    pub async fn set_load_report(&self, value: Option<&str>) {
        *self.shared.load_report.write().await = value.map(str::to_owned);
        self.shared
            .report_to_checks_only
            .store(false, Ordering::SeqCst);
    }

    /// Like [`Backend::set_load_report`], but the header goes only to
    /// health-check requests (`User-Agent: wasmroute-health`).
    pub async fn set_check_load_report(&self, value: Option<&str>) {
        *self.shared.load_report.write().await = value.map(str::to_owned);
        self.shared
            .report_to_checks_only
            .store(true, Ordering::SeqCst);
    }

    /// Health-check requests received so far.
    pub fn health_checks(&self) -> u64 {
        self.shared.health_checks.load(Ordering::SeqCst)
    }

    /// Starts several backends named `<prefix>-1`, `<prefix>-2`, ...
    pub async fn start_many(prefix: &str, n: usize) -> anyhow::Result<Vec<Backend>> {
        let mut out = Vec::with_capacity(n);
        for i in 1..=n {
            out.push(Backend::start(&format!("{prefix}-{i}")).await?);
        }
        Ok(out)
    }

    /// The backend's name (its response body and `x-backend` value).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open right now (a connection counts until the backend
    /// has seen it end).
    pub fn open_connections(&self) -> u64 {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// The heads of every request received so far, in arrival order.
    pub async fn seen(&self) -> Vec<SeenRequest> {
        self.shared.seen.lock().await.clone()
    }

    /// The head of the most recent request.
    pub async fn last_seen(&self) -> Option<SeenRequest> {
        self.shared.seen.lock().await.last().cloned()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which aborts every
        // connection task.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                shared.open.fetch_add(1, Ordering::SeqCst);
                let open = OpenConnection(shared.clone());
                connections.spawn(async move {
                    let _open = open;
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn text(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into()).map_err(|e| match e {}).boxed()
}

fn status(code: StatusCode, body: String) -> Response<RespBody> {
    let mut resp = Response::new(text(body));
    *resp.status_mut() = code;
    resp
}

/// A query parameter of a URI, by name.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_owned())
    })
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    shared.served.fetch_add(1, Ordering::SeqCst);
    let is_check = req
        .headers()
        .get(header::USER_AGENT)
        .is_some_and(|v| v.as_bytes() == b"wasmroute-health");
    if is_check {
        shared.health_checks.fetch_add(1, Ordering::SeqCst);
    }
    shared.seen.lock().await.push(SeenRequest {
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        // The delay is the behaviour under test (a slow backend).
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let forced = shared.forced_status.load(Ordering::SeqCst);
    let mut resp = match req.uri().path() {
        _ if forced != 0 => status(
            StatusCode::from_u16(forced).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            shared.name.clone(),
        ),
        "/upload" => upload(req).await,
        "/download" => download(&req),
        "/ws" => websocket(req),
        "/slow" => {
            let ms = query_param(req.uri(), "ms").and_then(|v| v.parse().ok());
            // The delay is the behaviour under test (a slow backend).
            tokio::time::sleep(Duration::from_millis(ms.unwrap_or(100))).await;
            Response::new(text(shared.name.clone()))
        }
        _ => Response::new(text(shared.name.clone())),
    };
    if let Ok(value) = HeaderValue::from_str(&shared.name) {
        resp.headers_mut().insert("x-backend", value);
    }
    let report_here = is_check || !shared.report_to_checks_only.load(Ordering::SeqCst);
    if let Some(report) = shared.load_report.read().await.as_deref()
        && report_here
        && let Ok(value) = HeaderValue::from_str(report)
    {
        resp.headers_mut().insert("x-backend-load", value);
    }
    Ok(resp)
}

async fn upload(req: Request<Incoming>) -> Response<RespBody> {
    match sha256_of_body(req.into_body()).await {
        Ok((digest, len)) => Response::new(text(format!("{digest} {len}"))),
        Err(e) => status(StatusCode::BAD_REQUEST, format!("upload failed: {e}")),
    }
}

fn download(req: &Request<Incoming>) -> Response<RespBody> {
    let Some(len) = query_param(req.uri(), "bytes").and_then(|v| v.parse::<u64>().ok()) else {
        return status(StatusCode::BAD_REQUEST, "bytes=N required".into());
    };
    let seed = query_param(req.uri(), "seed")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Response::new(PatternBody::new(seed, len).map_err(|e| match e {}).boxed())
}

fn websocket(mut req: Request<Incoming>) -> Response<RespBody> {
    let wants_ws = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return status(StatusCode::BAD_REQUEST, "no sec-websocket-key".into());
    };
    if !wants_ws {
        return status(StatusCode::BAD_REQUEST, "no upgrade: websocket".into());
    }
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut resp = Response::new(text(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    resp
}
