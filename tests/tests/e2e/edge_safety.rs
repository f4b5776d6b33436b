//! The edge against hostile clients and broken backends, each case with
//! its own bytes: Host and target rules, `Connection` that tries to strip
//! what frames the message, `Upgrade: h2c`, oversized and badly framed
//! response heads, the request-head limit however the bytes arrive, long
//! methods, and client faults that must not count against a backend.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmroute::ServerEvent;
use wasmroute::health::HealthChange;
use wasmroute_e2e::client::{empty, raw_exchange, read_response, read_until_cut};
use wasmroute_e2e::scripted::Scripted;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled,
};

async fn proxy_to(addresses: &[SocketAddr]) -> ProxyFixture {
    let pool = addresses
        .iter()
        .fold(PoolSpec::new("web", &[]), |pool, &address| {
            pool.address(address)
        });
    ProxyFixture::round_robin(pool).await
}

/// Writes `request` on a new connection, closes the sending side, and
/// reads until the proxy closes.
async fn send_and_close(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(STEP, stream.read_to_end(&mut reply)).await;
    // A reset after the reply is fine: what was read is the answer.
    let _ = read.expect("the proxy closes in time");
    String::from_utf8_lossy(&reply).into_owned()
}

/// The status line of a raw reply.
fn status_line(reply: &str) -> &str {
    reply.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_refuse_ambiguity_before_the_backend() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(&[backend.addr()]).await;
    let addr = fx.addr("edge");
    for (request, reason) in [
        (
            &b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"[..],
            "more than one host header",
        ),
        (b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", "missing host header"),
        (
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "invalid host header",
        ),
    ] {
        let reply = raw_exchange(addr, request, STEP).await.unwrap();
        let text = reply.text();
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains(reason), "{text}");
        assert!(reply.closed, "the connection is closed after a refusal");
    }
    assert_eq!(backend.served(), 0, "nothing reached the backend");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_and_connection_cannot_split_the_host() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(&[backend.addr()]).await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    let mut buffer = Vec::new();
    stream
        .write_all(b"GET http://evil.test/p HTTP/1.1\r\nHost: good.test\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream, &mut buffer, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "GET /p 0");
    stream
        .write_all(b"GET /q HTTP/1.1\r\nHost: kept.test\r\nConnection: keep-alive, host, content-length\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut stream, &mut buffer, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let heads = backend.heads().await;
    let absolute = heads[0].to_ascii_lowercase();
    assert!(absolute.starts_with("get /p http/1.1\r\n"), "{absolute}");
    assert!(absolute.contains("\r\nhost: evil.test\r\n"), "{absolute}");
    assert!(!absolute.contains("good.test"), "{absolute}");
    assert!(absolute.contains("host=evil.test"), "{absolute}");
    let named = heads[1].to_ascii_lowercase();
    assert!(named.contains("\r\nhost: kept.test\r\n"), "{named}");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_and_host_must_agree() {
    let backend = Backend::start("web").await.unwrap();
    let fx = proxy_to(&[backend.addr()]).await;
    let client = Client::http2();
    let request = Request::get(fx.url("edge", "/"))
        .header("host", "other.test")
        .body(empty())
        .unwrap();
    let reply = client.request(request).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(reply.text().contains(":authority"), "{}", reply.text());
    assert_eq!(backend.served(), 0);
    let reply = client.get(&fx.url("edge", "/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let seen = backend.last_seen().await.unwrap();
    let authority = fx.addr("edge").to_string();
    assert_eq!(seen.authority().as_deref(), Some(authority.as_str()));
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_served_as_a_plain_request_and_nothing_is_tunnelled() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(&[backend.addr()]).await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    let mut buffer = Vec::new();
    stream
        .write_all(
            b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
    for expected in ["GET /up 0", "GET /after 0"] {
        let (head, body) = read_response(&mut stream, &mut buffer, false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, expected);
    }
    let upgrade = backend.heads().await[0].to_ascii_lowercase();
    assert!(!upgrade.contains("upgrade"), "{upgrade}");
    assert!(!upgrade.contains("http2-settings"), "{upgrade}");
    assert_eq!(backend.served(), 2, "the bytes after it were a request");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_response_heads_and_framing_are_a_502() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(&[backend.addr()]).await;
    let addr = fx.addr("edge");
    for path in ["/long-head", "/bad-chunk", "/bad-length"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        let reply = raw_exchange(addr, request.as_bytes(), STEP).await.unwrap();
        let text = reply.text();
        assert!(text.starts_with("HTTP/1.1 502"), "{path}: {text}");
        assert!(text.contains("invalid response"), "{path}: {text}");
        assert!(
            !text.contains("hello") && !text.contains("aaaa"),
            "{path}: {text}"
        );
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_method_limits_hold_however_the_bytes_arrive() {
    let backend = Scripted::start().await.unwrap();
    let fx = proxy_to(&[backend.addr()]).await;
    let addr = fx.addr("edge");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(100 * 1024)
    );
    // In one write, and in two.
    let reply = raw_exchange(addr, big.as_bytes(), STEP).await.unwrap();
    assert!(reply.text().starts_with("HTTP/1.1 431"), "{}", reply.text());
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (first, second) = big.as_bytes().split_at(50 * 1024);
    stream.write_all(first).await.unwrap();
    stream.flush().await.unwrap();
    let _ = stream.write_all(second).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    let long = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "M".repeat(33));
    let reply = raw_exchange(addr, long.as_bytes(), STEP).await.unwrap();
    assert!(reply.text().starts_with("HTTP/1.1 400"), "{}", reply.text());
    assert!(reply.text().contains("method too long"), "{}", reply.text());
    let ok = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "M".repeat(32));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(ok.as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut stream, &mut Vec::new(), false).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "a 32-byte method passes: {head}"
    );
    assert_eq!(backend.served(), 1);
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_faults_never_count_against_a_backend() {
    let backends = Backend::start_many("web", 2).await.unwrap();
    let addresses: Vec<_> = backends.iter().map(Backend::addr).collect();
    let mut fx = proxy_to(&addresses).await;
    let addr = fx.addr("edge");
    for _ in 0..12 {
        let aborted = send_and_close(
            addr,
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\naaaaaaaaaa",
        )
        .await;
        assert!(
            aborted.is_empty() || status_line(&aborted).starts_with("HTTP/1.1 400"),
            "{aborted}"
        );
        let bad = send_and_close(
            addr,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nx5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert!(status_line(&bad).starts_with("HTTP/1.1 400"), "{bad}");
        assert!(bad.contains("body"), "the reason is given: {bad}");
    }
    let client = Client::http1();
    let mut served = [0u32; 2];
    for _ in 0..10 {
        let reply = client.get(&fx.url("edge", "/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        let index = usize::from(reply.backend() == Some(backends[1].name()));
        served[index] += 1;
    }
    // Round robin per worker: each worker alternates, so each backend gets
    // at least 4 of 10; an ejected one would get none.
    assert!(
        served.iter().all(|&n| n >= 4),
        "both stay in rotation: {served:?}"
    );
    let ejections: Vec<_> = fx
        .pending_events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                ServerEvent::BackendHealth {
                    change: HealthChange::Ejected,
                    ..
                }
            )
        })
        .collect();
    assert!(ejections.is_empty(), "{ejections:?}");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_send_timeout() {
    let backend = Backend::start("web").await.unwrap();
    let config = ConfigBuilder::new()
        .listener(
            ListenerSpec::new("edge", "round-robin", &["web"]).extra("send_timeout = \"300ms\""),
        )
        .pool(PoolSpec::new("web", &[&backend]));
    let fx = ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap();
    const TOTAL: usize = 64 * 1024 * 1024;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    let request = format!("GET /download?bytes={TOTAL} HTTP/1.1\r\nHost: a\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // The stall is the stimulus: the client reads nothing for well over
    // the send timeout, while the socket buffers fill.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let received = read_until_cut(&mut stream).await;
    assert!(
        received < TOTAL,
        "the response was cut: {received} of {TOTAL} bytes"
    );
    // Nothing of the stalled response is still held against the backend.
    let client = Client::http1();
    let reply = client.get(&fx.url("edge", "/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    fx.shutdown().await.unwrap();
}
