//! A drain (`Server::shutdown`) seen from connections hyper serves: an
//! HTTP/2 connection gets a GOAWAY (its in-flight stream completes, a new
//! stream is refused by the client), and HTTP/1 connections hyper serves
//! (HTTP/1.0 keep-alive, HTTP/1.1 after `OPTIONS *` handed it over) have
//! their in-flight response say `Connection: close`, then close. Outside
//! a drain, both HTTP/1 kinds keep their connection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmroute_e2e::client::read_response;
use wasmroute_e2e::{Backend, PoolSpec, ProxyFixture, STEP, eventually_async};

/// How long the in-flight request of a drain test takes at the backend:
/// the drain starts meanwhile.
const IN_FLIGHT: Duration = Duration::from_millis(2000);

async fn proxy_to(backend: &Backend) -> ProxyFixture {
    ProxyFixture::round_robin(PoolSpec::new("web", &[backend])).await
}

/// The path of a request the backend answers after [`IN_FLIGHT`].
fn slow_path() -> String {
    format!("/slow?ms={}", IN_FLIGHT.as_millis())
}

/// Starts the drain once `backend` has received `requests`, and returns
/// when the listener has stopped accepting (its draining flag is set by
/// then).
async fn drain_after(
    fx: ProxyFixture,
    backend: &Backend,
    requests: u64,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let started = eventually_async(STEP, || async { backend.served() == requests }).await;
    assert!(started, "the request reached the backend");
    let addr = fx.addr("edge");
    let shutdown = tokio::spawn(fx.shutdown());
    let refused =
        eventually_async(STEP, || async { TcpStream::connect(addr).await.is_err() }).await;
    assert!(refused, "the listener stopped accepting");
    shutdown
}

/// The value of `name` in a response head, lowercased.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
}

/// Reads until the proxy closes `stream` (within [`STEP`]); the bytes
/// that came before.
async fn read_to_close(stream: &mut TcpStream) -> usize {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(STEP, stream.read_to_end(&mut rest)).await;
    read.expect("the proxy closes the connection").unwrap();
    rest.len()
}

/// Reads the backend's response, starting with `status_line`, which
/// must say `Connection: close` and be the connection's last.
async fn expect_last_response(stream: &mut TcpStream, status_line: &str) {
    let mut buffer = Vec::new();
    let (head, body) = read_response(stream, &mut buffer, false).await;
    assert!(head.starts_with(status_line), "{head}");
    assert_eq!(
        header(&head, "connection").as_deref(),
        Some("close"),
        "{head}"
    );
    assert_eq!(body, "web");
    assert_eq!(read_to_close(stream).await, 0);
}

/// Sends `request` on `stream` and reads its response (head, body).
async fn exchange(stream: &mut TcpStream, request: &str) -> (String, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = Vec::new();
    read_response(stream, &mut buffer, false).await
}

fn get_10(path: &str) -> String {
    format!("GET {path} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
}

fn get_11(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")
}

/// A connection hyper serves as HTTP/1.1: `OPTIONS *` hands it over.
async fn handed_to_hyper(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (head, _) = exchange(&mut stream, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connections_hyper_serves_stay_open_outside_a_drain() {
    let backend = Backend::start("web").await.unwrap();
    let fx = proxy_to(&backend).await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    for _ in 0..2 {
        let (head, body) = exchange(&mut stream, &get_10("/")).await;
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        assert_eq!(
            header(&head, "connection").as_deref(),
            Some("keep-alive"),
            "{head}"
        );
        assert_eq!(body, "web");
    }
    let mut stream = handed_to_hyper(fx.addr("edge")).await;
    for _ in 0..2 {
        let (head, body) = exchange(&mut stream, &get_11("/")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "connection"), None, "{head}");
        assert_eq!(body, "web");
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_keep_alive_response_in_flight_at_a_drain_says_close() {
    let backend = Backend::start("web").await.unwrap();
    let fx = proxy_to(&backend).await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    stream
        .write_all(get_10(&slow_path()).as_bytes())
        .await
        .unwrap();
    let shutdown = drain_after(fx, &backend, 1).await;
    expect_last_response(&mut stream, "HTTP/1.0 200").await;
    shutdown.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_response_hyper_serves_in_flight_at_a_drain_says_close() {
    let backend = Backend::start("web").await.unwrap();
    let fx = proxy_to(&backend).await;
    let mut stream = handed_to_hyper(fx.addr("edge")).await;
    stream
        .write_all(get_11(&slow_path()).as_bytes())
        .await
        .unwrap();
    // `OPTIONS *` was the backend's first request.
    let shutdown = drain_after(fx, &backend, 2).await;
    expect_last_response(&mut stream, "HTTP/1.1 200").await;
    shutdown.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_at_a_drain_gets_a_goaway() {
    let backend = Backend::start("web").await.unwrap();
    let fx = proxy_to(&backend).await;
    let addr = fx.addr("edge");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get(format!("http://{addr}{}", slow_path()))
        .body(())
        .unwrap();
    let (in_flight, _) = send.send_request(request, true).unwrap();
    let in_flight = tokio::spawn(async move {
        let response = in_flight.await?;
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(data) = body.data().await {
            bytes.extend_from_slice(&data?);
        }
        Ok::<_, h2::Error>((status, Bytes::from(bytes)))
    });
    let shutdown = drain_after(fx, &backend, 1).await;
    // Once the GOAWAY is in, the client refuses to open a stream.
    let refused = eventually_async(STEP, || {
        let mut send = send.clone();
        async move {
            let request = Request::get(format!("http://{addr}/")).body(()).unwrap();
            match send.send_request(request, true) {
                Err(error) => error.is_go_away() && error.is_remote(),
                // Sent before the GOAWAY arrived: answered or refused by
                // the proxy, either way not what is awaited.
                Ok((response, _)) => {
                    let _ = tokio::time::timeout(STEP, response).await;
                    false
                }
            }
        }
    })
    .await;
    assert!(refused, "no GOAWAY reached the client");
    let (status, body) = tokio::time::timeout(STEP, in_flight)
        .await
        .expect("the in-flight stream completes")
        .unwrap()
        .unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"web"[..]));
    let ended = tokio::time::timeout(STEP, connection).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the connection closes gracefully: {ended:?}"
    );
    shutdown.await.unwrap().unwrap();
}
