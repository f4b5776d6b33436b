//! hyper's codec (HTTP/2, and HTTP/1 connections hyper serves) over real
//! sockets: the access log's `bytes_in` of an HTTP/2 body without
//! `Content-Length`.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use wasmroute_e2e::client::boxed;
use wasmroute_e2e::{
    Backend, BoxError, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled,
    eventually,
};

/// A round-robin listener `edge` over pool `web` of `backend`, with the
/// listener's `extra` keys and `[access_log]` to `access.log`.
async fn start(backend: &Backend, extra: &str) -> ProxyFixture {
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]).extra(extra))
        .pool(PoolSpec::new("web", &[backend]));
    let text = format!("[access_log]\npath = \"access.log\"\n\n{}", config.render());
    ProxyFixture::start_with_text(&text, &[("round-robin", bundled("round-robin"))])
        .await
        .expect("the proxy starts")
}

/// The JSON access log line of `path` (waits for it, at most [`STEP`]).
async fn access_line(fx: &ProxyFixture, path: &str) -> serde_json::Value {
    let file = fx.dir().path().join("access.log");
    let find = || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .find(|entry| entry["path"] == path)
    };
    assert!(
        eventually(STEP, || find().is_some()).await,
        "no line for {path}"
    );
    find().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_without_length_is_counted_in_bytes_in() {
    let backend = Backend::start("web").await.unwrap();
    let fx = start(&backend, "").await;
    const CHUNK: usize = 10_000;
    const CHUNKS: usize = 7;
    let frames = (0..CHUNKS).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![7u8; CHUNK]))));
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let request = Request::post(fx.url("edge", "/upload"))
        .body(boxed(body))
        .unwrap();
    let reply = Client::http2().request(request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let total = CHUNK * CHUNKS;
    assert!(
        reply.text().ends_with(&format!(" {total}")),
        "{}",
        reply.text()
    );
    let seen = backend.last_seen().await.unwrap();
    // The body crossed both hops without a declared length.
    assert_eq!(seen.header("content-length"), None, "{seen:?}");
    let entry = access_line(&fx, "/upload").await;
    assert_eq!(entry["protocol"], "HTTP/2", "{entry}");
    assert_eq!(entry["bytes_in"], total as u64, "{entry}");
    fx.shutdown().await.unwrap();
}
