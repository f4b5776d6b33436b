//! The PROXY protocol over real sockets: a pool with `proxy_protocol`
//! starts every connection to its backends with the exact v1 or v2 header
//! of the client connection it carries (both codecs), and never hands
//! that connection to another client connection.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use wasmroute_e2e::client::read_response;
use wasmroute_e2e::{ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled};

/// What a [`Recorder`] saw: every request head with the number of its
/// connection, and for a connection's first request every byte before it
/// (the PROXY header, when one came).
#[derive(Debug)]
struct Received {
    connection: usize,
    /// For the first request of a connection: from its first byte.
    bytes: Vec<u8>,
}

/// A raw backend that records the bytes it receives and answers each
/// request head (no bodies) with `200 ok`.
struct Recorder {
    addr: SocketAddr,
    received: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, received) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            for connection in 0.. {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(record(stream, connection, sender.clone()));
            }
        });
        Recorder {
            addr,
            received,
            task,
        }
    }

    /// The next request the backend received (within [`STEP`]).
    async fn next(&mut self) -> Received {
        let next = tokio::time::timeout(STEP, self.received.recv()).await;
        next.expect("a request in time").expect("the recorder runs")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads request heads on one backend connection, answering each.
async fn record(mut stream: TcpStream, connection: usize, sender: mpsc::UnboundedSender<Received>) {
    let mut buffer = Vec::new();
    loop {
        let end = loop {
            // A v2 header's signature has a blank line of its own.
            let start = v2_length(&buffer);
            let head = buffer
                .get(start.unwrap_or(usize::MAX)..)
                .unwrap_or_default();
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break start.unwrap_or_default() + end + 4;
            }
            match stream.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let bytes = buffer.drain(..end).collect();
        let _ = sender.send(Received { connection, bytes });
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Where a request head may start in `buffer`: after the v2 header it
/// starts with, if any (`None` until that header is all there).
fn v2_length(buffer: &[u8]) -> Option<usize> {
    if !buffer.starts_with(b"\r\n\r\n\0") {
        return Some(0);
    }
    let length = buffer.get(14..16)?;
    let length = 16 + usize::from(u16::from_be_bytes([length[0], length[1]]));
    (buffer.len() >= length).then_some(length)
}

/// A round-robin listener `edge` over pool `web` of `backend`, which
/// gets the `version` PROXY header.
async fn proxy_to(backend: SocketAddr, version: &str) -> ProxyFixture {
    let pool = PoolSpec::new("web", &[])
        .address(backend)
        .extra(&format!("proxy_protocol = \"{version}\""));
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(pool);
    ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .expect("the proxy starts")
}

/// The v1 line for a connection from `client` to `proxy` (both IPv4).
fn v1(client: SocketAddr, proxy: SocketAddr) -> Vec<u8> {
    let (source, destination) = (client.ip(), proxy.ip());
    let (from, to) = (client.port(), proxy.port());
    format!("PROXY TCP4 {source} {destination} {from} {to}\r\n").into_bytes()
}

/// The v2 header for a connection from `client` to `proxy` (IPv4),
/// written out byte by byte.
fn v2(client: SocketAddr, proxy: SocketAddr) -> Vec<u8> {
    let octets = |address: SocketAddr| match address.ip() {
        std::net::IpAddr::V4(ip) => ip.octets(),
        std::net::IpAddr::V6(_) => panic!("IPv4 only"),
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    header.extend_from_slice(&octets(client));
    header.extend_from_slice(&octets(proxy));
    header.extend_from_slice(&client.port().to_be_bytes());
    header.extend_from_slice(&proxy.port().to_be_bytes());
    header
}

/// Sends `GET path` on a raw HTTP/1.1 keep-alive connection and reads its
/// response.
async fn get(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: edge\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, body) = read_response(stream, &mut Vec::new(), false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok");
}

/// `received` is the first request of a new connection, `header` then
/// `GET path` exactly.
fn assert_first(received: &Received, header: &[u8], path: &str) {
    let expected_line = format!("GET {path} HTTP/1.1\r\n");
    let (head, rest) = received
        .bytes
        .split_at(header.len().min(received.bytes.len()));
    assert_eq!(
        head,
        header,
        "{:?}",
        String::from_utf8_lossy(&received.bytes)
    );
    assert!(
        rest.starts_with(expected_line.as_bytes()),
        "{:?}",
        String::from_utf8_lossy(rest)
    );
}

/// The fast codec: each client connection's requests go on connections
/// of their own, each starting with that client's header; a second client
/// never gets the first one's connection.
async fn fast_codec_sends(version: &str, header: fn(SocketAddr, SocketAddr) -> Vec<u8>) {
    let mut backend = Recorder::start().await;
    let fx = proxy_to(backend.addr, version).await;
    let proxy = fx.addr("edge");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2 {
        let mut client = TcpStream::connect(proxy).await.unwrap();
        let expected = header(client.local_addr().unwrap(), proxy);
        for path in ["/one", "/two"] {
            get(&mut client, path).await;
            let received = backend.next().await;
            assert!(seen.insert(received.connection), "a connection was reused");
            assert_first(&received, &expected, path);
        }
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_codec_sends_the_exact_v1_header() {
    fast_codec_sends("v1", v1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_codec_sends_the_exact_v2_header() {
    fast_codec_sends("v2", v2).await;
}

/// hyper's codec (an HTTP/2 client): likewise, per client connection.
async fn hyper_codec_sends(version: &str, header: fn(SocketAddr, SocketAddr) -> Vec<u8>) {
    let mut backend = Recorder::start().await;
    let fx = proxy_to(backend.addr, version).await;
    let proxy = fx.addr("edge");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2 {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let expected = header(stream.local_addr().unwrap(), proxy);
        let (client, connection) = h2::client::handshake(stream).await.unwrap();
        let driver = tokio::spawn(connection);
        for path in ["/one", "/two"] {
            let mut client = client.clone().ready().await.unwrap();
            let request = Request::get(format!("http://edge{path}")).body(()).unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = tokio::time::timeout(STEP, response).await.unwrap().unwrap();
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            let mut text = Vec::new();
            while let Some(chunk) = tokio::time::timeout(STEP, body.data()).await.unwrap() {
                let chunk: Bytes = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                text.extend_from_slice(&chunk);
            }
            assert_eq!(text, b"ok");
            let received = backend.next().await;
            assert!(seen.insert(received.connection), "a connection was reused");
            assert_first(&received, &expected, path);
        }
        drop(client);
        driver.abort();
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypers_codec_sends_the_exact_v1_header() {
    hyper_codec_sends("v1", v1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypers_codec_sends_the_exact_v2_header() {
    hyper_codec_sends("v2", v2).await;
}

/// An HTTP health check is the proxy's own connection: it starts with the
/// v2 LOCAL header (no client addresses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_send_a_local_header() {
    let mut backend = Recorder::start().await;
    let pool = PoolSpec::new("web", &[])
        .address(backend.addr)
        .extra("proxy_protocol = \"v2\"\n[pools.health]\npath = \"/health\"\ninterval = \"100ms\"");
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(pool);
    let fx = ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .expect("the proxy starts");
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    assert_first(&backend.next().await, &local, "/health");
    fx.shutdown().await.unwrap();
}
