//! The shipped `sni-router` deciding HTTP requests: on an HTTPS listener
//! by the TLS server name, on a plain listener by the `Host` header, with
//! `421` for a name no route matches when there is no `default`. (Its
//! connection decisions: host/src/policy/connection_tests.rs.)

use http::StatusCode;
use wasmroute_e2e::tls::{TestCa, TlsClient, TlsHttp};
use wasmroute_e2e::{Backend, Client, FixtureDir, ProxyFixture, bundled};

/// An HTTPS listener `secure` and a plain one `plain`, both running
/// `sni-router` over pools `a` and `b` (one backend each), without a
/// default route.
fn config(a: &Backend, b: &Backend) -> String {
    let listener = |name: &str, protocol: &str, extra: &str| {
        format!(
            "[[listeners]]\nname = \"{name}\"\naddress = \"127.0.0.1:0\"\n\
             protocol = \"{protocol}\"\npolicy = \"sni-router\"\npools = [\"a\", \"b\"]\n{extra}\
             [listeners.policy_config.routes]\n\"a.test\" = \"a\"\n\"*.b.test\" = \"b\"\n\n"
        )
    };
    let certificate = "[[listeners.certificates]]\ncert = \"certs/leaf.pem\"\n\
                       key = \"certs/leaf.key\"\n";
    format!(
        "[policies]\ndir = \"policies\"\ndecision_timeout = \"250ms\"\n\n{}{}\
         [[pools]]\nname = \"a\"\nbackends = [{{ address = \"{}\" }}]\n\n\
         [[pools]]\nname = \"b\"\nbackends = [{{ address = \"{}\" }}]\n",
        listener("secure", "https", certificate),
        listener("plain", "http", ""),
        a.addr(),
        b.addr()
    )
}

async fn start(a: &Backend, b: &Backend, ca: &TestCa) -> anyhow::Result<ProxyFixture> {
    let dir = FixtureDir::new()?;
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs)?;
    ca.leaf(&["a.test", "*.b.test", "c.test"])?
        .write(&certs, "leaf")?;
    dir.write_policy("sni-router", bundled("sni-router"))?;
    dir.write_config(&config(a, b))?;
    dir.start().await
}

/// The server name picks the pool, whatever `Host` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_requests_follow_the_server_name() -> anyhow::Result<()> {
    let (a, b) = (Backend::start("a-1").await?, Backend::start("b-1").await?);
    let ca = TestCa::new()?;
    let fx = start(&a, &b, &ca).await?;
    for (sni, host, expected) in [
        ("a.test", "a.test", Some("a-1")),
        ("x.b.test", "x.b.test", Some("b-1")),
        ("x.b.test", "a.test", Some("b-1")),
        ("c.test", "c.test", None),
    ] {
        let stream = TlsClient::trusting(&ca, &["http/1.1"])?
            .connect(fx.addr("secure"), sni)
            .await?;
        let reply = TlsHttp::start(stream).await?.get(host, "/").await?;
        match expected {
            Some(backend) => {
                assert_eq!(reply.status, StatusCode::OK, "{sni}: {}", reply.text());
                assert_eq!(reply.backend(), Some(backend), "{sni} (Host {host})");
            }
            None => assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST, "{sni}"),
        }
    }
    fx.shutdown().await
}

/// Without TLS the authority's host picks the pool (port and case aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_requests_follow_the_host_header() -> anyhow::Result<()> {
    let (a, b) = (Backend::start("a-1").await?, Backend::start("b-1").await?);
    let fx = start(&a, &b, &TestCa::new()?).await?;
    let url = fx.url("plain", "/");
    let client = Client::http1();
    for (host, expected) in [
        ("a.test", Some("a-1")),
        ("A.Test:8080", Some("a-1")),
        ("y.z.b.test", Some("b-1")),
        ("b.test", None),
    ] {
        let reply = client.get_with(&url, &[("host", host)]).await?;
        match expected {
            Some(backend) => assert_eq!(reply.backend(), Some(backend), "{host}"),
            None => {
                assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
                assert_eq!(reply.text(), "no route for this server name\n");
            }
        }
    }
    assert_eq!((a.served(), b.served()), (2, 1));
    fx.shutdown().await
}
