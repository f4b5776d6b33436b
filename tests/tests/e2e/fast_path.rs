//! The HTTP/1.1 fast path against a raw backend: pipelined requests, a
//! request with a body between bodiless ones, HEAD,
//! response framings hyper servers never send (end-of-connection bodies,
//! chunked trailers, 1xx heads), and keep-alive connections the backend
//! drops without notice.

use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wasmroute_e2e::client::read_response;
use wasmroute_e2e::scripted::Scripted;
use wasmroute_e2e::{Client, PoolSpec, ProxyFixture};

async fn proxy_to(backend: &Scripted) -> ProxyFixture {
    ProxyFixture::round_robin(PoolSpec::new("web", &[]).address(backend.addr())).await
}

/// Writes `requests` in one write and expects a 200 with each of `bodies`,
/// in order.
async fn pipeline(stream: &mut TcpStream, buffer: &mut Vec<u8>, requests: &[u8], bodies: &[&str]) {
    stream.write_all(requests).await.unwrap();
    for expected in bodies {
        let (head, body) = read_response(stream, buffer, false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, *expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_serves_pipelined_head_and_body_requests_in_order() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(&backend).await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    let mut buffer = Vec::new();
    let requests = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n";
    pipeline(
        &mut stream,
        &mut buffer,
        requests,
        &["GET /one 0", "GET /two 0"],
    )
    .await;
    stream
        .write_all(b"HEAD /three HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut stream, &mut buffer, true).await;
    assert!(
        head.to_ascii_lowercase().contains("content-length: 13"),
        "{head}"
    );
    // A body: served on the fast path, and so is what follows it.
    let requests = b"POST /four HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /five HTTP/1.1\r\nHost: a\r\n\r\n";
    pipeline(
        &mut stream,
        &mut buffer,
        requests,
        &["POST /four 3", "GET /five 0"],
    )
    .await;
    assert_eq!(backend.served(), 5);
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framings_hyper_servers_never_send_are_relayed() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(&backend).await;
    let client = Client::http1();
    for (path, expected) in [
        ("/chunked", "hello"),
        ("/hints", "ok"),
        ("/eof", "until-close"),
        ("/chunked", "hello"),
        ("/other", "GET /other 0"),
    ] {
        let reply = client.get(&fx.url("edge", path)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.text(), expected, "{path}");
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_the_backend_drops_cost_nothing() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(&backend).await;
    let client = Client::http1();
    for round in 0..20 {
        let reply = client.get(&fx.url("edge", "/drop")).await.unwrap();
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "drop"),
            "request {round}"
        );
    }
    assert_eq!(
        backend.served(),
        20,
        "each request reached the backend once"
    );
    fx.shutdown().await.unwrap();
}
