//! HTTP clients for talking to the proxy: hyper-util's legacy client over
//! HTTP/1.1 and over HTTP/2 with prior knowledge (h2c), plus a raw TCP
//! exchange for malformed requests. Every call is bounded by a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{BoxError, STEP};

/// A request body type every helper accepts.
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// An empty request body.
pub fn empty() -> ReqBody {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

/// A request body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// Any body, boxed into [`ReqBody`].
pub fn boxed<B>(body: B) -> ReqBody
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A fully read response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// HTTP version of the client-to-proxy hop.
    pub version: Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The `x-backend` header: which test backend answered.
    pub fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP client (connection-pooling).
#[derive(Clone, Debug)]
pub struct Client {
    inner: LegacyClient<HttpConnector, ReqBody>,
}

impl Client {
    /// HTTP/1.1 with keep-alive.
    pub fn http1() -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let inner = LegacyClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Client { inner }
    }

    /// HTTP/2 over cleartext with prior knowledge (no upgrade dance).
    pub fn http2() -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let inner = LegacyClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(connector);
        Client { inner }
    }

    /// Sends a request and returns the streaming response (head within
    /// [`STEP`]; the caller bounds reading the body).
    pub async fn send(&self, req: Request<ReqBody>) -> anyhow::Result<Response<Incoming>> {
        self.send_within(req, STEP).await
    }

    /// Sends a request and returns the streaming response (head within
    /// `timeout`).
    pub async fn send_within(
        &self,
        req: Request<ReqBody>,
        timeout: Duration,
    ) -> anyhow::Result<Response<Incoming>> {
        let what = format!("{} {}", req.method(), req.uri());
        match tokio::time::timeout(timeout, self.inner.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(anyhow::anyhow!("{what}: {e:?}")),
            Err(_) => Err(anyhow::anyhow!(
                "{what}: no response head within {timeout:?}"
            )),
        }
    }

    /// Sends a request and reads the whole response within [`STEP`].
    pub async fn request(&self, req: Request<ReqBody>) -> anyhow::Result<Reply> {
        self.request_within(req, STEP).await
    }

    /// Sends a request and reads the whole response within `timeout`.
    pub async fn request_within(
        &self,
        req: Request<ReqBody>,
        timeout: Duration,
    ) -> anyhow::Result<Reply> {
        let what = format!("{} {}", req.method(), req.uri());
        let exchange = async {
            let resp = self.send_within(req, timeout).await?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("{what}: reading body: {e}"))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "{what}: no complete response within {timeout:?}"
                ))
            })
    }

    /// GET a URL.
    pub async fn get(&self, url: &str) -> anyhow::Result<Reply> {
        self.request(Request::get(url).body(empty())?).await
    }

    /// GET a URL with extra request headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        let mut req = Request::get(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.request(req.body(empty())?).await
    }
}

/// GET a URL over a fresh HTTP/1.1 client.
pub async fn get(url: &str) -> anyhow::Result<Reply> {
    Client::http1().get(url).await
}

/// What a raw TCP exchange produced.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// Every byte read.
    pub bytes: Vec<u8>,
    /// True when the peer closed (or reset) the connection before the
    /// timeout.
    pub closed: bool,
}

impl RawReply {
    /// The bytes as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Opens a TCP connection, writes `request` verbatim, and reads until the
/// peer closes or `timeout` passes.
pub async fn raw_exchange(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> anyhow::Result<RawReply> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await??;
    tokio::time::timeout_at(deadline, stream.write_all(request)).await??;
    let mut bytes = Vec::new();
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut bytes)).await {
            Ok(Ok(0)) => break true,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => break false,
        }
    };
    Ok(RawReply { bytes, closed })
}

/// Reads a response the proxy is expected to cut off until the
/// connection ends (closed or reset); the bytes that came. Panics when
/// nothing arrives for [`STEP`] while the connection stays open.
pub async fn read_until_cut(stream: &mut TcpStream) -> usize {
    let mut received = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(STEP, stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return received,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("the proxy kept the stalled connection open"),
        }
    }
}

/// Reads one response with a `Content-Length` (or none, for HEAD:
/// `head_only`) from a raw keep-alive connection: its head and body, each
/// read bounded by [`STEP`]. The bytes after it stay in `buffer`.
pub async fn read_response(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    head_only: bool,
) -> (String, String) {
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(STEP, stream.read_buf(buffer))
            .await
            .expect("a response head in time")
            .expect("reading the response");
        assert_ne!(n, 0, "the proxy closed the connection mid-response");
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| {
            v.trim().parse().expect("a numeric Content-Length")
        });
    let length = if head_only { 0 } else { length };
    while buffer.len() < end + length {
        let n = tokio::time::timeout(STEP, stream.read_buf(buffer))
            .await
            .expect("the response body in time")
            .expect("reading the response body");
        assert_ne!(n, 0, "the proxy closed the connection mid-body");
    }
    let body = String::from_utf8_lossy(&buffer[end..end + length]).into_owned();
    buffer.drain(..end + length);
    (head, body)
}
