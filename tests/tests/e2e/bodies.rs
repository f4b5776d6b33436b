//! Request bodies on the fast path: `Content-Length` and chunked bodies
//! streamed to the backend with the connection kept on the fast path,
//! `Expect: 100-continue` answered by the proxy, a backend that answers
//! before reading the body, local answers that leave a body unread, and
//! the two codecs sending the same upstream head for the same request.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmroute_e2e::client::{empty, read_response};
use wasmroute_e2e::scripted::Scripted;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, guests,
};

async fn proxy_to(address: SocketAddr) -> ProxyFixture {
    ProxyFixture::round_robin(PoolSpec::new("web", &[]).address(address)).await
}

/// Reads until the proxy closes the connection (bounded by [`STEP`]).
async fn read_to_close(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> String {
    let read = tokio::time::timeout(STEP, stream.read_to_end(buffer)).await;
    assert!(read.is_ok(), "the proxy closes in time");
    String::from_utf8_lossy(buffer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stay_on_the_fast_path_with_their_framing() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(backend.addr()).await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    let mut buffer = Vec::new();
    // The body in pieces: the head alone first, then the body.
    stream
        .write_all(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
        .await
        .unwrap();
    stream.write_all(b"hello world").await.unwrap();
    stream
        .write_all(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    for expected in ["POST /a 11", "GET /b 0"] {
        let (head, body) = read_response(&mut stream, &mut buffer, false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // hyper's server adds `date`; the fast path passes the backend's
        // head, which has none: the connection never left the fast path.
        assert!(!head.to_ascii_lowercase().contains("date:"), "{head}");
        assert_eq!(body, expected);
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_reach_the_backend_whole() {
    let backend = Backend::start("web").await.unwrap();
    let fx = proxy_to(backend.addr()).await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    let mut buffer = Vec::new();
    let chunks = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
    // Every byte in its own write: the framing holds however it is split.
    for byte in chunks {
        stream.write_all(std::slice::from_ref(byte)).await.unwrap();
    }
    let (head, body) = read_response(&mut stream, &mut buffer, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let digest = wasmroute_e2e::pattern::hex(&sha256(b"hello world"));
    assert_eq!(body, format!("{digest} 11"));
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream, &mut buffer, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "web");
    fx.shutdown().await.unwrap();
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_by_the_proxy() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(backend.addr()).await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    stream
        .write_all(
            b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let (head, _) = read_response(&mut stream, &mut buffer, true).await;
    assert_eq!(head, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"12345").await.unwrap();
    let (head, body) = read_response(&mut stream, &mut buffer, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "PUT /e 5");
    let seen = backend.heads().await[0].to_ascii_lowercase();
    assert!(!seen.contains("expect"), "{seen}");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_before_the_body_ends_closes_the_client_after() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(backend.addr()).await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    stream
        .write_all(b"POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\npartial")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let reply = read_to_close(&mut stream, &mut buffer).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(reply.ends_with("too big\n"), "{reply}");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_to_a_request_with_a_body_closes_the_connection() {
    let backend = Scripted::start().await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "trapping", &["web"]).on_error("reject"))
        .pool(PoolSpec::new("web", &[]).address(backend.addr()));
    let fx = ProxyFixture::start(&config, &[("trapping", guests::TRAPPING)])
        .await
        .unwrap();
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\nabc")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let reply = read_to_close(&mut stream, &mut buffer).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert_eq!(backend.served(), 0);
    fx.shutdown().await.unwrap();
}

/// The header lines of a request head, sorted, with the request line
/// first: what must be equal whichever codec sent it.
fn normalized(head: &str) -> Vec<String> {
    let mut lines = head.trim_end().split("\r\n").map(str::to_ascii_lowercase);
    let first = lines.next().unwrap_or_default();
    let mut rest: Vec<String> = lines.collect();
    rest.sort();
    rest.insert(0, first);
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_codecs_send_the_same_upstream_head() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(backend.addr()).await;
    let addr = fx.addr("edge");
    let host = addr.to_string();
    let headers = format!(
        "Host: {host}\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: x-private\r\nX-Private: 1\r\nX-Kept: yes\r\n"
    );
    let mut buffer = Vec::new();
    // The fast codec (HTTP/1.1) and hyper's (HTTP/1.0).
    for version in ["1.1", "1.0"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /same?q=1 HTTP/{version}\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, _) = read_response(&mut stream, &mut buffer, false).await;
        assert!(head.starts_with("HTTP/1."), "{head}");
        buffer.clear();
    }
    // hyper's codec again, over HTTP/2.
    let request = Request::get(fx.url("edge", "/same?q=1"))
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-kept", "yes")
        .body(empty())
        .unwrap();
    let reply = Client::http2().request(request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let heads = backend.heads().await;
    assert_eq!(heads.len(), 3);
    let fast = normalized(&heads[0]);
    assert!(fast.contains(&"x-kept: yes".to_owned()), "{fast:?}");
    assert!(!fast.iter().any(|l| l.contains("x-private")), "{fast:?}");
    assert_eq!(normalized(&heads[1]), fast, "HTTP/1.0 through hyper");
    assert_eq!(normalized(&heads[2]), fast, "HTTP/2 through hyper");
    fx.shutdown().await.unwrap();
}
