//! Self-tests of the harness, without the proxy: the backend's endpoints
//! over HTTP/1.1, HTTP/2 and WebSocket. If these fail, the proxy tests'
//! failures say nothing about the proxy.

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use tokio_tungstenite::tungstenite::Message;
use wasmroute_e2e::client::{self, Client};
use wasmroute_e2e::pattern::{PatternBody, pattern_sha256, sha256_of_body};
use wasmroute_e2e::{Backend, STEP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answers_http1_and_http2() {
    let backend = Backend::start("b").await.unwrap();
    let url = format!("http://{}/hello", backend.addr());
    let r1 = Client::http1().get(&url).await.unwrap();
    assert_eq!(
        (r1.status, r1.text().as_str(), r1.backend()),
        (StatusCode::OK, "b", Some("b"))
    );
    assert_eq!(r1.version, Version::HTTP_11);
    let r2 = Client::http2().get(&url).await.unwrap();
    assert_eq!(
        (r2.status, r2.version, r2.text().as_str()),
        (StatusCode::OK, Version::HTTP_2, "b")
    );
    assert_eq!(backend.served(), 2);
    let seen = backend.seen().await;
    assert_eq!(seen[0].version, Version::HTTP_11);
    assert_eq!(seen[0].authority(), Some(backend.addr().to_string()));
    assert_eq!(seen[1].version, Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_upload_and_download_stream() {
    let backend = Backend::start("b").await.unwrap();
    let len = 3 * 1024 * 1024 + 5;
    let req = Request::post(format!("http://{}/upload", backend.addr()))
        .body(client::boxed(PatternBody::new(1, len)))
        .unwrap();
    let reply = Client::http1().request(req).await.unwrap();
    assert_eq!(reply.text(), format!("{} {len}", pattern_sha256(1, len)));

    let url = format!("http://{}/download?bytes={len}&seed=2", backend.addr());
    let resp = Client::http1()
        .send(Request::get(url).body(client::empty()).unwrap())
        .await
        .unwrap();
    let (digest, got) = tokio::time::timeout(STEP, sha256_of_body(resp.into_body()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((digest, got), (pattern_sha256(2, len), len));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_websocket_echo() {
    let backend = Backend::start("b").await.unwrap();
    let stream = tokio::net::TcpStream::connect(backend.addr())
        .await
        .unwrap();
    let url = format!("ws://{}/ws", backend.addr());
    let (mut ws, resp) = tokio::time::timeout(STEP, tokio_tungstenite::client_async(url, stream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("ping")).await.unwrap();
    let echoed = tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("ping"));
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_backend_refuses_connections() {
    let backend = Backend::start("b").await.unwrap();
    let url = format!("http://{}/", backend.addr());
    client::get(&url).await.unwrap();
    drop(backend);
    assert!(client::get(&url).await.is_err());
}
