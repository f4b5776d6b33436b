//! hyper's codec (HTTP/2, and HTTP/1 connections hyper serves) over real
//! sockets: `send_timeout` against clients that stop reading (an HTTP/2
//! stream whose window stays shut, an HTTP/1.0 socket left full) and not
//! against slow readers, and the access log's `bytes_in` of an HTTP/2
//! body without `Content-Length`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use wasmroute::ServerEvent;
use wasmroute::health::HealthChange;
use wasmroute_e2e::client::{boxed, read_until_cut};
use wasmroute_e2e::{
    Backend, BoxError, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled,
    eventually,
};

/// The send timeout of the stall tests.
const SEND_TIMEOUT: &str = "send_timeout = \"300ms\"\n";

/// A round-robin listener `edge` over pool `web` of `backend`, with the
/// listener's `extra` keys and `[access_log]` to `access.log`. One
/// passive-health failure ejects the backend.
async fn start(backend: &Backend, extra: &str) -> ProxyFixture {
    let pool =
        PoolSpec::new("web", &[backend]).extra("[pools.passive]\nconsecutive_failures = 1\n");
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]).extra(extra))
        .pool(pool);
    let text = format!("[access_log]\npath = \"access.log\"\n\n{}", config.render());
    ProxyFixture::start_with_text(&text, &[("round-robin", bundled("round-robin"))])
        .await
        .expect("the proxy starts")
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
    let entry = fx.access_line("/upload").await;
    assert_eq!(entry["protocol"], "HTTP/2", "{entry}");
    assert_eq!(entry["bytes_in"], total as u64, "{entry}");
    fx.shutdown().await.unwrap();
}

/// An HTTP/2 connection to `addr` whose stream windows are `window`
/// bytes; its task ends when the connection does.
async fn h2_connect(
    addr: SocketAddr,
    window: u32,
) -> (
    h2::client::SendRequest<Bytes>,
    JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .unwrap();
    (send, tokio::spawn(connection))
}

/// Sends `GET path` on `send` and returns the response body (head within
/// [`STEP`]).
async fn h2_get(
    send: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
) -> h2::RecvStream {
    let request = Request::get(format!("http://{addr}{path}"))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = tokio::time::timeout(STEP, response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

/// The backend's health changes seen so far that ejected it.
fn ejections(fx: &mut ProxyFixture) -> Vec<ServerEvent> {
    let events = fx.pending_events().into_iter();
    events
        .filter(|e| {
            matches!(
                e,
                ServerEvent::BackendHealth {
                    change: HealthChange::Ejected,
                    ..
                }
            )
        })
        .collect()
}

/// The backend is in rotation: the next request gets its answer.
async fn still_serving(fx: &mut ProxyFixture, backend: &Backend) {
    let reply = Client::http2().get(&fx.url("edge", "/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.backend(), Some(backend.name()));
    let ejected = ejections(fx);
    assert!(
        ejected.is_empty(),
        "the client's stall ejected the backend: {ejected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_stops_reading_is_cut_after_send_timeout() {
    let backend = Backend::start("web").await.unwrap();
    let mut fx = start(&backend, SEND_TIMEOUT).await;
    let addr = fx.addr("edge");
    const TOTAL: usize = 8 * 1024 * 1024;
    // The client never releases capacity: no WINDOW_UPDATE, its 1 KiB
    // stream window stays shut after the first bytes.
    let (mut send, connection) = h2_connect(addr, 1024).await;
    let mut body = h2_get(&mut send, addr, &format!("/download?bytes={TOTAL}")).await;
    assert_eq!(backend.served(), 1);
    let closed = eventually(STEP, || backend.open_connections() == 0).await;
    assert!(
        closed,
        "the upstream connection of the stalled response is closed"
    );
    let mut received = 0;
    let cut = loop {
        match tokio::time::timeout(STEP, body.data()).await {
            Ok(Some(Ok(data))) => received += data.len(),
            Ok(Some(Err(_))) => break true,
            Ok(None) => break false,
            Err(_) => panic!("the stalled stream stayed open"),
        }
    };
    assert!(
        cut,
        "the stream ended as if complete after {received} bytes"
    );
    assert!(received < TOTAL, "{received} bytes");
    let ended = tokio::time::timeout(STEP, connection).await;
    assert!(ended.is_ok(), "the stalled connection is closed");
    still_serving(&mut fx, &backend).await;
    fx.shutdown().await.unwrap();
}

/// Reads one data frame of `body` (within [`STEP`]) and releases its
/// window; its length (0 at the end).
async fn read_and_release(body: &mut h2::RecvStream) -> usize {
    match tokio::time::timeout(STEP, body.data()).await.unwrap() {
        Some(data) => {
            let len = data.unwrap().len();
            body.flow_control().release_capacity(len).unwrap();
            len
        }
        None => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stops_alone_is_cut_and_its_connection_goes_on() {
    let backend = Backend::start("web").await.unwrap();
    let mut fx = start(&backend, SEND_TIMEOUT).await;
    let addr = fx.addr("edge");
    let path = format!("/download?bytes={}", 64 * 1024 * 1024);
    let (mut send, connection) = h2_connect(addr, 1024).await;
    let mut stalled = h2_get(&mut send, addr, &path).await;
    let mut reading = h2_get(&mut send, addr, &path).await;
    assert_eq!(backend.served(), 2);
    // One stream is read all along, the other never: only the latter's
    // upstream connection closes.
    let mut cut = false;
    for _ in 0..1_000_000 {
        assert_ne!(
            read_and_release(&mut reading).await,
            0,
            "the read stream ended"
        );
        if backend.open_connections() == 1 {
            cut = true;
            break;
        }
    }
    assert!(cut, "the stalled stream's upstream connection is closed");
    for _ in 0..64 {
        assert_ne!(
            read_and_release(&mut reading).await,
            0,
            "the read stream goes on"
        );
    }
    assert!(!connection.is_finished(), "the connection stays open");
    // Read at last, the stalled stream ends with an error, never as if
    // complete.
    let ended = loop {
        match tokio::time::timeout(STEP, stalled.data()).await.unwrap() {
            Some(Ok(data)) => stalled.flow_control().release_capacity(data.len()).unwrap(),
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    assert!(ended, "the cut stream ended as if complete");
    drop(reading);
    still_serving(&mut fx, &backend).await;
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_reading_http2_client_gets_the_whole_response() {
    let backend = Backend::start("web").await.unwrap();
    let mut fx = start(&backend, SEND_TIMEOUT).await;
    let addr = fx.addr("edge");
    const TOTAL: usize = 200 * 1024;
    let (mut send, _connection) = h2_connect(addr, 8 * 1024).await;
    let mut body = h2_get(&mut send, addr, &format!("/download?bytes={TOTAL}")).await;
    let mut received = 0;
    while let Some(data) = tokio::time::timeout(STEP, body.data()).await.unwrap() {
        let data = data.unwrap();
        received += data.len();
        // Slow reading is the behaviour under test: each pause is well
        // under the send timeout, the whole download well over it.
        tokio::time::sleep(Duration::from_millis(30)).await;
        body.flow_control().release_capacity(data.len()).unwrap();
    }
    assert_eq!(received, TOTAL);
    still_serving(&mut fx, &backend).await;
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_that_stops_reading_is_cut_after_send_timeout() {
    let backend = Backend::start("web").await.unwrap();
    let mut fx = start(&backend, SEND_TIMEOUT).await;
    // More than the socket buffers on both sides hold.
    const TOTAL: usize = 64 * 1024 * 1024;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    let request = format!("GET /download?bytes={TOTAL} HTTP/1.0\r\nHost: a\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let started = eventually(STEP, || backend.served() == 1).await;
    assert!(started, "the request reached the backend");
    let closed = eventually(STEP, || backend.open_connections() == 0).await;
    assert!(
        closed,
        "the upstream connection of the stalled response is closed"
    );
    let received = read_until_cut(&mut stream).await;
    assert!(
        received < TOTAL,
        "the response was cut: {received} of {TOTAL} bytes"
    );
    still_serving(&mut fx, &backend).await;
    fx.shutdown().await.unwrap();
}
