//! `tcp` listeners and what goes before the client's bytes: the PROXY
//! header a pool sends its backends (v1, v2), PROXY headers accepted from
//! trusted peers only, a TLS ClientHello read by a policy without being
//! consumed, and modules refused for deciding no TCP connections.

use std::sync::Arc;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use wasmroute::config::Config;
use wasmroute::server::{Plan, Reusable};
use wasmroute::upstream::proxy_protocol::{self, Header, Parsed};
use wasmroute_e2e::guests::V02_FIRST_HEALTHY;
use wasmroute_e2e::tcp::{closes, connect_greeted, read_line};
use wasmroute_e2e::{
    ConfigBuilder, FixtureDir, ListenerSpec, PoolSpec, ProxyFixture, STEP, TcpBackend, bundled,
    eventually,
};

use crate::tcp::{ping, round_robin, start};

/// The first bytes `backend` received on its first connection, once
/// there are at least `len` of them.
async fn first_bytes(backend: &TcpBackend, len: usize) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let bytes = backend
            .received()
            .await
            .first()
            .cloned()
            .unwrap_or_default();
        if bytes.len() >= len || tokio::time::Instant::now() >= deadline {
            return bytes;
        }
        tokio::time::sleep(wasmroute_e2e::wait::POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_proxy_protocol_v1_names_the_client_first() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let fx = start(
        round_robin(),
        &[backend.addr()],
        "",
        "proxy_protocol = \"v1\"",
    )
    .await;
    let (mut stream, _) = connect_greeted(fx.addr("edge")).await.unwrap();
    stream.write_all(b"data").await.unwrap();
    let client = stream.local_addr().unwrap();
    let proxy = fx.addr("edge");
    let header = format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        client.ip(),
        proxy.ip(),
        client.port(),
        proxy.port()
    );
    let want = [header.as_bytes(), b"data"].concat();
    assert_eq!(first_bytes(&backend, want.len()).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_proxy_protocol_v2_names_the_client_first() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let fx = start(
        round_robin(),
        &[backend.addr()],
        "",
        "proxy_protocol = \"v2\"",
    )
    .await;
    let (mut stream, _) = connect_greeted(fx.addr("edge")).await.unwrap();
    stream.write_all(b"data").await.unwrap();
    // v2 over IPv4: the 16-byte head and 12 bytes of addresses.
    let bytes = first_bytes(&backend, 28 + 4).await;
    let Ok(Parsed::Complete { header, length }) = proxy_protocol::parse(&bytes) else {
        panic!("no v2 header in {bytes:?}");
    };
    assert_eq!(length, 28);
    assert!(proxy_protocol::looks_like_header(&bytes[..12]));
    let Header::Proxied(addresses) = header else {
        panic!("a LOCAL header");
    };
    assert_eq!(addresses.source, stream.local_addr().unwrap());
    assert_eq!(addresses.destination, fx.addr("edge"));
    assert_eq!(&bytes[length..], b"data");
}

/// A trusted peer's PROXY header is taken off and its client address is
/// the one the backend is told about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_header_names_the_client_to_the_backend() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let trusted = "accept_proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]";
    let fx = start(
        round_robin(),
        &[backend.addr()],
        trusted,
        "proxy_protocol = \"v1\"",
    )
    .await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    stream
        .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 5432\r\nhello")
        .await
        .unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), "a");
    let want = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 5432\r\nhello";
    assert_eq!(first_bytes(&backend, want.len()).await, want);
}

/// From a peer outside `trusted_proxies`, a PROXY header closes the
/// connection; the same peer without one is relayed as itself, also
/// when it sends nothing (after `peek_timeout`: the server speaks first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_proxy_header_closes_the_connection() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let untrusted = "accept_proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]\npeek_timeout = \"200ms\"";
    let fx = start(round_robin(), &[backend.addr()], untrusted, "").await;
    let mut forged = TcpStream::connect(fx.addr("edge")).await.unwrap();
    forged
        .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 5432\r\n")
        .await
        .unwrap();
    assert!(closes(&mut forged).await, "a forged header is refused");
    let (mut plain, name) = connect_greeted(fx.addr("edge")).await.unwrap();
    assert_eq!(name, "a");
    ping(&mut plain).await;
    assert_eq!(
        backend.accepted(),
        1,
        "the forged connection reached no backend"
    );
}

/// The bytes of a real ClientHello for `name` (rustls's), as a client
/// sends them first.
fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(wasmroute_e2e::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut bytes = Vec::new();
    connection.write_tls(&mut bytes).unwrap();
    bytes
}

/// A policy reading ClientHellos (the shipped `sni-router`) routes by
/// server name, and the hello reaches the backend untouched (peeked, not
/// consumed); a connection without a hello goes to its default pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_hello_is_peeked_and_decided_without_when_absent() {
    let plain = TcpBackend::echo("plain").await.unwrap();
    let tls = TcpBackend::echo("tls").await.unwrap();
    let config = ConfigBuilder::new()
        .listener(
            ListenerSpec::new("edge", "sni-router", &["plain", "tls"])
                .tcp()
                .extra("peek_timeout = \"200ms\"")
                .policy_config("default", "plain")
                .policy_config_toml("routes", "{ \"db.example\" = \"tls\" }"),
        )
        .pool(PoolSpec::new("plain", &[]).address(plain.addr()))
        .pool(PoolSpec::new("tls", &[]).address(tls.addr()));
    let policies = [("sni-router", bundled("sni-router"))];
    let fx = ProxyFixture::start(&config, &policies).await.unwrap();

    let hello = client_hello("db.example");
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    stream.write_all(&hello).await.unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), "tls");
    assert_eq!(first_bytes(&tls, hello.len()).await, hello);

    // Not TLS: decided at once on its first byte.
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    stream.write_all(b"ping\n").await.unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), "plain");
    assert_eq!(read_line(&mut stream).await.unwrap(), "ping");

    // A client that sends nothing is decided without a name after
    // peek_timeout (a protocol where the server speaks first).
    let (mut silent, name) = connect_greeted(fx.addr("edge")).await.unwrap();
    assert_eq!(name, "plain");
    ping(&mut silent).await;
    assert!(eventually(STEP, || plain.accepted() == 2).await);
}

/// A shipped 0.3 policy without `ConnectionPolicy` (it routes by path).
const REQUESTS_ONLY: &str = "content-router";

/// What `wasmroute check` runs, on a `tcp` listener whose module decides
/// no connections: the refusal names the module and why, for a 0.3
/// module without `ConnectionPolicy` and for a 0.2 module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_module_that_decides_no_connections() {
    let cases = [
        (
            REQUESTS_ONLY,
            bundled(REQUESTS_ONLY),
            "module `content-router` (wasmroute:policy@0.3) does not decide TCP connections: \
             its policy type does not implement ConnectionPolicy",
        ),
        (
            "v02-first-healthy",
            V02_FIRST_HEALTHY,
            "wasmroute:policy@0.2 modules decide HTTP requests only",
        ),
    ];
    for (name, bytes, want) in cases {
        let reason = refusal(name, bytes).await;
        assert!(reason.contains(want), "{name}: {reason}");
    }
    // And the server refuses to start on it.
    let backend = TcpBackend::echo("a").await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", REQUESTS_ONLY, &["db"]).tcp())
        .pool(PoolSpec::new("db", &[]).address(backend.addr()));
    let error = ProxyFixture::start(&config, &[(REQUESTS_ONLY, bundled(REQUESTS_ONLY))])
        .await
        .err()
        .unwrap();
    assert!(
        format!("{error:#}").contains("does not decide TCP connections"),
        "{error:#}"
    );
}

/// The one error `Plan::build` (what `check` runs) gives for a `tcp`
/// listener running module `name`.
async fn refusal(name: &str, bytes: &[u8]) -> String {
    let backend = TcpBackend::echo("a").await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", name, &["db"]).tcp())
        .pool(PoolSpec::new("db", &[]).address(backend.addr()));
    let dir = FixtureDir::new().unwrap();
    dir.write_policy(name, bytes).unwrap();
    dir.write_config(&config.render()).unwrap();
    let loaded = Config::load(&dir.config_path()).unwrap();
    let engine = wasmroute::policy::PolicyEngine::new().unwrap();
    let errors = Plan::build(loaded, &engine, Reusable::default())
        .err()
        .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "listeners[0].policy");
    errors[0].reason.clone()
}

/// A reload onto such a module is refused and the running config keeps
/// relaying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_onto_a_module_without_connections_keeps_the_running_config() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let fx = start(round_robin(), &[backend.addr()], "", "").await;
    fx.write_policy(REQUESTS_ONLY, bundled(REQUESTS_ONLY))
        .unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", REQUESTS_ONLY, &["db"]).tcp())
        .pool(PoolSpec::new("db", &[]).address(backend.addr()));
    fx.rewrite_config(&config.render()).unwrap();
    let error = fx.reload().await.expect_err("the reload is refused");
    assert!(
        format!("{error:#}").contains("does not decide TCP connections"),
        "{error:#}"
    );
    let (mut stream, name) = connect_greeted(fx.addr("edge")).await.unwrap();
    assert_eq!(name, "a");
    ping(&mut stream).await;
}
