//! HTTP behaviour of the proxy itself: HTTP/2 clients, proxy headers and
//! hop-by-hop stripping, malformed requests, unreachable backends.

use std::time::Duration;

use http::{StatusCode, Version};
use tokio::task::JoinSet;
use wasmroute_e2e::client::raw_exchange;
use wasmroute_e2e::{Backend, Client, PoolSpec, ProxyFixture};

async fn round_robin_over(pool: PoolSpec) -> ProxyFixture {
    ProxyFixture::round_robin(pool).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_client_is_served() {
    let backend = Backend::start("web-1").await.unwrap();
    let fx = round_robin_over(PoolSpec::new("web", &[&backend])).await;
    let client = Client::http2();
    // Concurrent streams over one HTTP/2 connection.
    let mut requests = JoinSet::new();
    for i in 0..20 {
        let (client, url) = (client.clone(), fx.url("edge", &format!("/h2/{i}")));
        requests.spawn(async move { client.get(&url).await });
    }
    while let Some(reply) = requests.join_next().await {
        let reply = reply.unwrap().expect("HTTP/2 request through the proxy");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.version, Version::HTTP_2);
        assert_eq!(reply.text(), "web-1");
    }
    assert_eq!(backend.served(), 20);
    let seen = backend.last_seen().await.unwrap();
    assert!(seen.uri.path().starts_with("/h2/"), "{:?}", seen.uri);
    assert_eq!(
        seen.authority(),
        Some(fx.addr("edge").to_string()),
        "the :authority must reach the backend as its Host"
    );
    fx.shutdown().await.unwrap();
}

/// Splits a comma-separated header into trimmed elements.
fn elements(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|e| e.trim().to_owned())
        .collect()
}

/// The `k=v` pairs of one `Forwarded` element, keys lower-cased, quotes
/// removed.
fn forwarded_pairs(element: &str) -> Vec<(String, String)> {
    element
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_are_added_and_hop_by_hop_headers_stripped() {
    let backend = Backend::start("web-1").await.unwrap();
    let fx = round_robin_over(PoolSpec::new("web", &[&backend])).await;
    let reply = Client::http1()
        .get_with(
            &fx.url("edge", "/headers?q=1"),
            &[
                ("host", "example.test:1234"),
                ("x-forwarded-for", "10.0.0.1"),
                ("connection", "keep-alive, x-foo"),
                ("x-foo", "secret"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("x-custom", "kept"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = backend
        .last_seen()
        .await
        .expect("the backend saw the request");
    assert_eq!(seen.uri.path(), "/headers");
    assert_eq!(seen.uri.query(), Some("q=1"));

    assert_eq!(
        seen.header("host"),
        Some("example.test:1234"),
        "Host must be preserved"
    );
    assert_eq!(
        seen.header("x-custom"),
        Some("kept"),
        "end-to-end headers must pass"
    );
    assert_eq!(
        elements(&seen.header_all("x-forwarded-for")),
        ["10.0.0.1", "127.0.0.1"],
        "the client ip must be appended to X-Forwarded-For"
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    let forwarded = elements(&seen.header_all("forwarded"));
    let last = forwarded.last().expect("a Forwarded header");
    let pairs = forwarded_pairs(last);
    for (key, value) in [
        ("for", "127.0.0.1"),
        ("proto", "http"),
        ("host", "example.test:1234"),
    ] {
        assert!(
            pairs.iter().any(|(k, v)| k == key && v == value),
            "Forwarded {last:?} lacks {key}={value}"
        );
    }

    for hop in [
        "keep-alive",
        "x-foo",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert_eq!(
            seen.header(hop),
            None,
            "hop-by-hop header {hop} reached the backend"
        );
    }
    if let Some(connection) = seen.header("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-foo"),
            "the client's Connection header reached the backend: {connection}"
        );
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_the_connection_is_closed() {
    let backend = Backend::start("web-1").await.unwrap();
    let fx = round_robin_over(PoolSpec::new("web", &[&backend])).await;
    for request in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header line\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nbad name: v\r\n\r\n",
    ] {
        let shown = String::from_utf8_lossy(request);
        let reply = raw_exchange(fx.addr("edge"), request, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            reply.text().starts_with("HTTP/1.1 400"),
            "{shown:?} got {:?}",
            reply.text()
        );
        assert!(
            reply.closed,
            "{shown:?}: the proxy kept the connection open"
        );
    }
    assert_eq!(
        backend.served(),
        0,
        "a malformed request reached the backend"
    );
    // The proxy still serves well-formed requests.
    let reply = Client::http1().get(&fx.url("edge", "/")).await.unwrap();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "web-1")
    );
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_refusing_connections_gives_503_with_retry_after() {
    // A port that was just free: bind it, note it, close it.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let fx = round_robin_over(PoolSpec::new("web", &[]).address(closed)).await;
    let reply = Client::http1().get(&fx.url("edge", "/")).await.unwrap();
    // Nothing reached a backend: the service is unavailable (issue #4:
    // all backends down is a 503 with Retry-After), not a bad gateway.
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert!(reply.headers.contains_key("retry-after"));
    assert!(
        reply.body.len() < 1024,
        "a short error body, got {} bytes",
        reply.body.len()
    );
    fx.shutdown().await.unwrap();
}
