//! Large bodies streamed through the proxy in both directions (compared by
//! SHA-256, never buffered whole) and WebSocket upgrades passed through.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use tokio_tungstenite::tungstenite::Message;
use wasmroute_e2e::client::{self, Client};
use wasmroute_e2e::pattern::{Pattern, PatternBody, pattern_sha256, sha256_of_body};
use wasmroute_e2e::{Backend, PoolSpec, ProxyFixture, STEP};

const BIG: u64 = 50 * 1024 * 1024;
/// Bound for one 50 MB transfer through a debug build on a busy machine.
const TRANSFER: Duration = Duration::from_secs(25);

async fn proxy_to(backend: &Backend) -> ProxyFixture {
    ProxyFixture::round_robin(PoolSpec::new("web", &[backend])).await
}

async fn upload(client: &Client, url: String, seed: u64, len: u64) {
    let req = Request::post(url)
        .body(client::boxed(PatternBody::new(seed, len)))
        .unwrap();
    let reply = client.request_within(req, TRANSFER).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.text(),
        format!("{} {len}", pattern_sha256(seed, len)),
        "the backend received different bytes"
    );
}

async fn download(client: &Client, url: String, seed: u64, len: u64) -> Version {
    let req = Request::get(format!("{url}?bytes={len}&seed={seed}"))
        .body(client::empty())
        .unwrap();
    let resp = client.send_within(req, TRANSFER).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let version = resp.version();
    let (digest, got) = tokio::time::timeout(TRANSFER, sha256_of_body(resp.into_body()))
        .await
        .expect("download within the time bound")
        .unwrap();
    assert_eq!(got, len, "download length");
    assert_eq!(
        digest,
        pattern_sha256(seed, len),
        "the client received different bytes"
    );
    version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_50_mb_is_streamed_through() {
    let backend = Backend::start("web-1").await.unwrap();
    let fx = proxy_to(&backend).await;
    upload(&Client::http1(), fx.url("edge", "/upload"), 11, BIG).await;
    assert_eq!(backend.served(), 1);
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_50_mb_is_streamed_through() {
    let backend = Backend::start("web-1").await.unwrap();
    let fx = proxy_to(&backend).await;
    download(&Client::http1(), fx.url("edge", "/download"), 12, BIG).await;
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_bodies_are_streamed_through() {
    let backend = Backend::start("web-1").await.unwrap();
    let fx = proxy_to(&backend).await;
    let client = Client::http2();
    let len = 8 * 1024 * 1024 + 3;
    upload(&client, fx.url("edge", "/upload"), 13, len).await;
    let version = download(&client, fx.url("edge", "/download"), 14, len).await;
    assert_eq!(version, Version::HTTP_2);
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy() {
    let backend = Backend::start("web-1").await.unwrap();
    let fx = proxy_to(&backend).await;
    let addr = fx.addr("edge");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream),
    )
    .await
    .expect("handshake within the time bound")
    .expect("WebSocket handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);

    let big = Pattern::new(5).take(256 * 1024);
    let mut messages = vec![Message::text("hello"), Message::binary(big)];
    messages.extend((0..20).map(|i| Message::text(format!("message {i}"))));
    for message in messages {
        ws.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("echo within the time bound")
            .expect("stream open")
            .unwrap();
        assert_eq!(echoed, message);
    }
    ws.close(None).await.unwrap();
    // The close handshake completes: the stream ends.
    let end =
        tokio::time::timeout(STEP, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(
        end.is_ok(),
        "close handshake through the proxy did not complete"
    );

    let seen = backend.last_seen().await.unwrap();
    assert_eq!(seen.uri.path(), "/ws");
    assert_eq!(
        seen.header("upgrade")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket")
    );
    fx.shutdown().await.unwrap();
}
