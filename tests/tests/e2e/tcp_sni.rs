//! TLS passthrough on a TCP listener: `sni-router` reads the server name
//! from the client's ClientHello (peeked, never terminated) and sends the
//! connection to the pool of that name, whose real TLS backend completes
//! the handshake with its own certificate.

use wasmroute_e2e::tls::{TestCa, TlsBackend, TlsClient, TlsHttp, presented};
use wasmroute_e2e::{ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, bundled};

#[tokio::test]
async fn sni_passthrough_reaches_the_backend_named_by_the_client_hello() {
    let ca = TestCa::new().unwrap();
    let leaf_a = ca.leaf(&["a.test"]).unwrap();
    let leaf_b = ca.leaf(&["*.b.test"]).unwrap();
    let backend_a = TlsBackend::start(&leaf_a).await.unwrap();
    let backend_b = TlsBackend::start(&leaf_b).await.unwrap();
    let config = ConfigBuilder::new()
        .listener(
            ListenerSpec::new("tls", "sni-router", &["a", "b"])
                .tcp()
                .policy_config_toml("routes", "{ \"a.test\" = \"a\", \"*.b.test\" = \"b\" }"),
        )
        .pool(PoolSpec::new("a", &[]).address(backend_a.addr()))
        .pool(PoolSpec::new("b", &[]).address(backend_b.addr()));
    let fx = ProxyFixture::start(&config, &[("sni-router", bundled("sni-router"))])
        .await
        .unwrap();
    let client = TlsClient::trusting(&ca, &["http/1.1"]).unwrap();

    for (name, leaf) in [
        ("a.test", &leaf_a),
        ("api.b.test", &leaf_b),
        ("A.TEST", &leaf_a),
    ] {
        let stream = client.connect(fx.addr("tls"), name).await.unwrap();
        assert_eq!(
            presented(&stream).as_ref(),
            Some(&leaf.der),
            "{name}: the backend's own certificate, end to end"
        );
        let mut http = TlsHttp::start(stream).await.unwrap();
        let reply = http.get(name, "/").await.unwrap();
        assert_eq!(
            reply.text(),
            format!("tls-backend sni={}", name.to_ascii_lowercase()),
            "{name}: the backend saw the client's SNI"
        );
    }

    // No route and no default: the connection is closed, no handshake.
    let refused = client.connect(fx.addr("tls"), "c.test").await;
    assert!(refused.is_err(), "an unrouted name was served");
}
