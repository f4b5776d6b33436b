//! Retries and timeouts, end to end: what is retried on another backend
//! (connect failures; a connection closed before any response byte, for
//! bodiless idempotent requests) and what is not (a POST whose body was
//! sent), the retry budget, and the connect and idle timeouts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use wasmroute_e2e::client::{empty, full};
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, Faulty, ListenerSpec, PoolSpec, ProxyFixture, Reply, bundled,
};

/// Round robin over `addresses` with `pool_extra`; passive ejection off so
/// every request keeps meeting the faulty backend.
async fn proxy(addresses: &[SocketAddr], pool_extra: &str) -> ProxyFixture {
    let mut pool = PoolSpec::new("web", &[]);
    for &address in addresses {
        pool = pool.address(address);
    }
    let extra = format!("{pool_extra}\n[pools.passive]\nenabled = false\n");
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(pool.extra(&extra));
    ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap()
}

async fn send(client: &Client, fx: &ProxyFixture, method: Method, body: Option<&str>) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(fx.url("edge", "/"))
        .body(body.map_or_else(empty, |b| full(b.to_owned())))
        .unwrap();
    client
        .request(request)
        .await
        .expect("request through the proxy")
}

/// A port with nothing listening (bound, then closed).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_before_response_retries_gets_but_not_a_post_with_a_body() {
    let good = Backend::start("good").await.unwrap();
    let faulty = Faulty::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fx = proxy(&[faulty.addr(), good.addr()], "").await;
    let client = Client::http1();

    for method in [Method::GET, Method::HEAD, Method::DELETE] {
        for _ in 0..6 {
            let reply = send(&client, &fx, method.clone(), None).await;
            assert_eq!(reply.status, StatusCode::OK, "{method}: {}", reply.text());
        }
    }
    assert!(
        faulty.requests() >= 3,
        "the faulty backend was tried and retried away from"
    );

    // POST with a body: sent, the connection closed, not retried: 502.
    let (hits, served) = (faulty.requests(), good.served());
    let mut failed = 0;
    for _ in 0..10 {
        let reply = send(&client, &fx, Method::POST, Some("payload")).await;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::BAD_GATEWAY => failed += 1,
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert!(
        failed >= 1,
        "round robin sends some POSTs to the faulty backend"
    );
    assert_eq!(
        faulty.requests() - hits,
        failed,
        "each POST it got became a 502"
    );
    assert_eq!(good.served() - served, 10 - failed, "and none was re-sent");

    // A bodiless POST that reached the backend is not retried either.
    let hits = faulty.requests();
    let mut failed = 0;
    for _ in 0..10 {
        if send(&client, &fx, Method::POST, None).await.status == StatusCode::BAD_GATEWAY {
            failed += 1;
        }
    }
    assert!(failed >= 1);
    assert_eq!(faulty.requests() - hits, failed);
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_for_any_request_with_or_without_a_body() {
    let good = Backend::start("good").await.unwrap();
    let dead = closed_port().await;
    let fx = proxy(&[dead, good.addr()], "").await;
    let client = Client::http1();
    for method in [Method::GET, Method::POST, Method::PATCH] {
        for _ in 0..6 {
            let reply = send(&client, &fx, method.clone(), None).await;
            assert_eq!(reply.status, StatusCode::OK, "{method}: {}", reply.text());
            assert_eq!(reply.backend(), Some("good"));
        }
    }
    // Nothing reaches a backend that cannot be connected to, so a POST
    // with a body goes to the other one too, body and all.
    for _ in 0..6 {
        let request = Request::post(fx.url("edge", "/upload"))
            .body(full("payload"))
            .unwrap();
        let reply = client.request(request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert!(reply.text().ends_with(" 7"), "{}", reply.text());
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_zero_lets_connect_failures_through() {
    let good = Backend::start("good").await.unwrap();
    let dead = closed_port().await;
    let fx = proxy(&[dead, good.addr()], "retries = 0").await;
    let client = Client::http1();
    let mut unavailable = 0;
    for _ in 0..10 {
        let reply = send(&client, &fx, Method::GET, None).await;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => unavailable += 1,
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert!(
        unavailable >= 1,
        "without retries the dead backend's turns fail"
    );
    fx.shutdown().await.unwrap();
}

/// A listener whose accept queue is full and never drained: a connect to
/// it hangs (Linux drops the SYN). The returned streams keep it full.
async fn hanging_listener() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    (addr, listener, fillers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_moves_on_to_another_backend() {
    let good = Backend::start("good").await.unwrap();
    let (hanging, _listener, _fillers) = hanging_listener().await;
    let fx = proxy(
        &[hanging, good.addr()],
        "connect_timeout = \"200ms\"\nresponse_timeout = \"5s\"",
    )
    .await;
    let client = Client::http1();
    let mut slow = 0;
    for _ in 0..6 {
        let started = Instant::now();
        let reply = send(&client, &fx, Method::GET, None).await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert!(took < Duration::from_secs(1), "took {took:?}");
        if took >= Duration::from_millis(190) {
            slow += 1;
        }
    }
    assert!(slow >= 1, "some requests waited out the connect timeout");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_cuts_a_stalled_response_body() {
    // A backend that sends half its body, then stalls for 5 s.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
                let _ = stream.write_all(head.as_bytes()).await;
                // The stall is the behaviour under test.
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = stream.write_all(b"world").await;
            });
        }
    });
    let fx = proxy(&[addr], "idle_timeout = \"300ms\"").await;
    let request = Request::get(fx.url("edge", "/")).body(empty()).unwrap();
    let started = Instant::now();
    let response = Client::http1().send(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(3), response.into_body().collect())
        .await
        .expect("the proxy cuts the body off, the client does not wait 5 s");
    assert!(
        body.is_err(),
        "a cut-off body is an error, not a short success"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "cut off after {took:?}"
    );
    fx.shutdown().await.unwrap();
}
