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
//! stops the accept loop and every open connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// A running backend. Stops when dropped.
pub struct Backend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
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
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            served: AtomicU64::new(0),
            seen: tokio::sync::Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Backend { shared, addr, task })
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
        self.task.abort();
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
                connections.spawn(async move {
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
    shared.seen.lock().await.push(SeenRequest {
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let mut resp = match req.uri().path() {
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
