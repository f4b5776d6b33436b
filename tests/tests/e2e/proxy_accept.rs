//! Listeners with `accept_proxy_protocol` over real sockets: a trusted
//! peer's v1 or v2 header sets the client address that backends
//! (`X-Forwarded-For`) and the access log see, however the header is
//! segmented; an untrusted peer's header, a malformed header and a
//! trusted peer without one get the connection closed.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wasmroute_e2e::client::{raw_exchange, read_response};
use wasmroute_e2e::tls::{TestCa, TlsClient, TlsHttp};
use wasmroute_e2e::{
    Backend, ConfigBuilder, FixtureDir, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled,
};

/// A round-robin listener `edge` over `backend` that accepts headers from
/// `trusted`, with a JSON access log to `access.log`.
async fn start(backend: &Backend, trusted: &str) -> ProxyFixture {
    let keys = format!("accept_proxy_protocol = true\ntrusted_proxies = [\"{trusted}\"]\n");
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]).extra(&keys))
        .pool(PoolSpec::new("web", &[backend]));
    let text = format!("[access_log]\npath = \"access.log\"\n\n{}", config.render());
    ProxyFixture::start_with_text(&text, &[("round-robin", bundled("round-robin"))])
        .await
        .expect("the proxy starts")
}

/// A v2 header from `source` to `destination` (IPv6), with a TLV.
fn v2_ipv6(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let octets = |address: SocketAddr| match address.ip() {
        std::net::IpAddr::V6(ip) => ip.octets(),
        std::net::IpAddr::V4(_) => panic!("IPv6 only"),
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0x00, 36 + 4]);
    header.extend_from_slice(&octets(source));
    header.extend_from_slice(&octets(destination));
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
    header
}

/// Connects to `proxy`, sends `header` then `GET path` (in one write, or
/// one byte per write with `trickle`) and reads the response.
async fn get_after(proxy: SocketAddr, header: &[u8], path: &str, trickle: bool) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(format!("GET {path} HTTP/1.1\r\nhost: edge\r\n\r\n").as_bytes());
    if trickle {
        for byte in bytes {
            stream.write_all(&[byte]).await.unwrap();
            tokio::task::yield_now().await;
        }
    } else {
        stream.write_all(&bytes).await.unwrap();
    }
    let (head, _) = read_response(&mut stream, &mut Vec::new(), false).await;
    head
}

/// The `client` of the access log line of `path` (waits for it).
async fn logged_client(fx: &ProxyFixture, path: &str) -> String {
    let line = fx.access_line(path).await;
    line["client"].as_str().unwrap().to_owned()
}

/// The `X-Forwarded-For` the backend saw on the request for `path`.
async fn forwarded_for(backend: &Backend, path: &str) -> String {
    let seen = backend.seen().await;
    let request = seen
        .iter()
        .find(|r| r.uri.path() == path)
        .expect("the request");
    request.header("x-forwarded-for").unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_header_sets_the_client_address() {
    let backend = Backend::start("b").await.unwrap();
    let fx = start(&backend, "127.0.0.1/32").await;
    let proxy = fx.addr("edge");
    let cases: [(&str, Vec<u8>, &str, bool); 4] = [
        (
            "/v1",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 4711 80\r\n".to_vec(),
            "203.0.113.9:4711",
            false,
        ),
        (
            "/v1-trickled",
            b"PROXY TCP4 198.51.100.3 10.0.0.1 5 80\r\n".to_vec(),
            "198.51.100.3:5",
            true,
        ),
        (
            "/v2",
            v2_ipv6(
                "[2001:db8::7]:4000".parse().unwrap(),
                "[2001:db8::1]:443".parse().unwrap(),
            ),
            "[2001:db8::7]:4000",
            false,
        ),
        (
            "/v2-trickled",
            v2_ipv6(
                "[2001:db8::8]:4001".parse().unwrap(),
                "[2001:db8::1]:443".parse().unwrap(),
            ),
            "[2001:db8::8]:4001",
            true,
        ),
    ];
    for (path, header, client, trickle) in cases {
        let head = get_after(proxy, &header, path, trickle).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        let ip: SocketAddr = client.parse().unwrap();
        assert_eq!(
            forwarded_for(&backend, path).await,
            ip.ip().to_string(),
            "{path}"
        );
        assert_eq!(logged_client(&fx, path).await, client, "{path}");
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_local_header_keeps_the_peer_address() {
    let backend = Backend::start("b").await.unwrap();
    let fx = start(&backend, "127.0.0.1/32").await;
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    let head = get_after(fx.addr("edge"), &local, "/local", false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(forwarded_for(&backend, "/local").await, "127.0.0.1");
    fx.shutdown().await.unwrap();
}

/// Sends `bytes` on a new connection: whether the proxy closed it without
/// a byte of answer.
async fn closed_silently(proxy: SocketAddr, bytes: &[u8]) -> bool {
    let reply = raw_exchange(proxy, bytes, STEP).await.unwrap();
    reply.closed && reply.bytes.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_untrusted_headers_close_the_connection() {
    let backend = Backend::start("b").await.unwrap();
    let trusting = start(&backend, "127.0.0.1/32").await;
    let proxy = trusting.addr("edge");
    let request = b"GET / HTTP/1.1\r\nhost: edge\r\n\r\n";
    let malformed = [
        &b"PROXY TCP4 203.0.113.9 10.0.0.1 4711\r\n"[..],
        b"PROXY TCP9 x\r\n",
    ];
    for header in malformed {
        let bytes = [header, &request[..]].concat();
        assert!(closed_silently(proxy, &bytes).await, "{header:?}");
    }
    // A trusted peer must send a header.
    assert!(closed_silently(proxy, request).await);

    let distrusting = start(&backend, "10.0.0.0/8").await;
    let proxy = distrusting.addr("edge");
    let header = b"PROXY TCP4 203.0.113.9 10.0.0.1 4711 80\r\n";
    assert!(closed_silently(proxy, &[&header[..], &request[..]].concat()).await);
    let v2 = v2_ipv6(
        "[2001:db8::7]:1".parse().unwrap(),
        "[::1]:2".parse().unwrap(),
    );
    assert!(closed_silently(proxy, &[&v2[..], &request[..]].concat()).await);
    // Without a header it is served, as its own address.
    let reply = raw_exchange(
        proxy,
        b"GET /plain HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\r\n",
        STEP,
    )
    .await
    .unwrap();
    assert!(reply.text().starts_with("HTTP/1.1 200"), "{}", reply.text());
    assert_eq!(forwarded_for(&backend, "/plain").await, "127.0.0.1");
    assert_eq!(
        backend.seen().await.len(),
        1,
        "only the plain request got through"
    );
    trusting.shutdown().await.unwrap();
    distrusting.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_listener_reads_the_header_before_tls() {
    let backend = Backend::start("b").await.unwrap();
    let ca = TestCa::new().unwrap();
    let dir = FixtureDir::new().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    ca.leaf(&["a.test"]).unwrap().write(&certs, "a").unwrap();
    let text = format!(
        "[policies]\ndir = \"policies\"\ndecision_timeout = \"250ms\"\n\n\
         [[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\nprotocol = \"https\"\n\
         policy = \"round-robin\"\npools = [\"web\"]\naccept_proxy_protocol = true\n\
         trusted_proxies = [\"127.0.0.0/8\"]\n\
         [[listeners.certificates]]\ncert = \"certs/a.pem\"\nkey = \"certs/a.key\"\n\n\
         [[pools]]\nname = \"web\"\nbackends = [{{ address = \"{}\" }}]\n",
        backend.addr()
    );
    dir.write_policy("round-robin", bundled("round-robin"))
        .unwrap();
    dir.write_config(&text).unwrap();
    let fx = dir.start().await.unwrap();
    let client = TlsClient::trusting(&ca, &["h2", "http/1.1"]).unwrap();
    for (alpn_client, path) in [
        (client.clone(), "/h2"),
        (TlsClient::trusting(&ca, &["http/1.1"]).unwrap(), "/h1"),
    ] {
        let mut tcp = TcpStream::connect(fx.addr("secure")).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let header = v2_ipv6(
            "[2001:db8::9]:999".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        );
        tcp.write_all(&header).await.unwrap();
        let tls = alpn_client.connect_on(tcp, "a.test").await.unwrap();
        let mut http = TlsHttp::start(tls).await.unwrap();
        let reply = http.get("a.test", path).await.unwrap();
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(forwarded_for(&backend, path).await, "2001:db8::9", "{path}");
    }
    fx.shutdown().await.unwrap();
}

/// A header accepted on the listener is the one sent on to a pool with
/// `proxy_protocol`: the client's source, and the destination it named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_header_is_sent_on() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let keys = "accept_proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n";
    let pool = PoolSpec::new("web", &[])
        .address(upstream.local_addr().unwrap())
        .extra("proxy_protocol = \"v1\"");
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]).extra(keys))
        .pool(pool);
    let fx = ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap();
    let mut client = TcpStream::connect(fx.addr("edge")).await.unwrap();
    let request =
        b"PROXY TCP4 203.0.113.9 198.51.100.1 4711 8443\r\nGET /on HTTP/1.1\r\nhost: edge\r\n\r\n";
    client.write_all(request).await.unwrap();
    let (mut backend, _) = tokio::time::timeout(STEP, upstream.accept())
        .await
        .unwrap()
        .unwrap();
    let expected = b"PROXY TCP4 203.0.113.9 198.51.100.1 4711 8443\r\nGET /on HTTP/1.1\r\n";
    let mut received = vec![0; expected.len()];
    use tokio::io::AsyncReadExt as _;
    tokio::time::timeout(STEP, backend.read_exact(&mut received))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(expected)
    );
    backend
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .unwrap();
    let (head, body) = read_response(&mut client, &mut Vec::new(), false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    drop(client);
    fx.shutdown().await.unwrap();
}
