//! `examples/three-tier/`, run: the edge (HTTPS, `content-router`), the
//! platform tier's load balancers and the data tier over real Redis
//! servers, each from its example config with only addresses moved to
//! free ports, and application servers that count hits in Redis through
//! the data tier. One HTTPS request crosses all three tiers.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use wasmroute_e2e::tls::{TestCa, TlsClient, TlsHttp};
use wasmroute_e2e::{
    FixtureDir, ProxyFixture, RedisClient, RedisServer, bundled, eventually_async,
};

const WAIT: Duration = Duration::from_secs(60);

/// An example config of `examples/three-tier/`, parsed.
fn example(file: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/three-tier")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `config` with its policies in the fixture's folder, every listener on
/// a free port, and each named pool's backends replaced by `backends`.
fn relocated(mut config: toml::Table, backends: &[(&str, Vec<SocketAddr>)]) -> String {
    config["policies"]["dir"] = "policies".into();
    for listener in config["listeners"].as_array_mut().unwrap() {
        listener["address"] = "127.0.0.1:0".into();
    }
    for pool in config["pools"].as_array_mut().unwrap() {
        let name = pool["name"].as_str().unwrap().to_owned();
        let (_, addresses) = backends
            .iter()
            .find(|(pool, _)| *pool == name)
            .unwrap_or_else(|| panic!("no backends given for pool {name}"));
        let list = addresses
            .iter()
            .map(|a| {
                let mut backend = toml::Table::new();
                backend.insert("address".into(), a.to_string().into());
                toml::Value::Table(backend)
            })
            .collect();
        pool["backends"] = toml::Value::Array(list);
    }
    toml::to_string(&config).unwrap()
}

async fn start(dir: FixtureDir, config: String, policies: &[&str]) -> ProxyFixture {
    for name in policies {
        dir.write_policy(name, bundled(name)).unwrap();
    }
    dir.write_config(&config).unwrap();
    dir.start().await.expect("the tier starts")
}

/// An application server of `service`: `/healthz` answers `ok`; any other
/// path counts a hit with `INCR hits:<service>` on `write` and reads it
/// back from `read`, as `examples/three-tier/app.py` does.
async fn app_server(service: &'static str, write: SocketAddr, read: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service_fn = hyper::service::service_fn(move |req: http::Request<_>| async move {
                let body = if req.uri().path() == "/healthz" {
                    "ok\n".to_owned()
                } else {
                    hit(service, addr, write, read).await
                };
                http::Response::builder().body(http_body_util::Full::new(Bytes::from(body)))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn),
            );
        }
    });
    addr
}

async fn hit(service: &str, me: SocketAddr, write: SocketAddr, read: SocketAddr) -> String {
    let key = format!("hits:{service}");
    let counted = async {
        let written = RedisClient::connect(write)
            .await?
            .command(&["INCR", &key])
            .await?;
        let seen = RedisClient::connect(read).await?.get(&key).await?;
        anyhow::Ok(format!(
            "{service} app {me}: hits={written:?}, replica={seen:?}"
        ))
    };
    counted
        .await
        .unwrap_or_else(|e| format!("{service} app {me}: data tier: {e:#}"))
}

#[tokio::test]
async fn one_request_crosses_the_three_tiers() {
    // Tier 3: Redis and the data tier's write and read listeners.
    let primary = RedisServer::start().await.expect("a redis primary");
    let replica = RedisServer::start().await.expect("a redis replica");
    replica.replica_of(&primary).await.unwrap();
    let data = relocated(
        example("data.toml"),
        &[
            ("redis-primary", vec![primary.addr(), replica.addr()]),
            ("redis-replicas", vec![replica.addr()]),
        ],
    );
    let data = start(
        FixtureDir::new().unwrap(),
        data,
        &["round-robin", "least-connections"],
    )
    .await;
    let (write, read) = (data.addr("redis-write"), data.addr("redis-read"));
    // Until the checks have run the replica may count as up for writes.
    let primary_only = eventually_async(WAIT, || RedisClient::all_reach(write, "master", 4)).await;
    assert!(primary_only, "the write port never settled on the primary");

    // The application servers and tier 2.
    let web = app_server("web", write, read).await;
    let video = [
        app_server("video", write, read).await,
        app_server("video", write, read).await,
    ];
    let billing = app_server("billing", write, read).await;
    let platform = relocated(
        example("platform.toml"),
        &[
            ("web-apps", vec![web]),
            ("video-apps", video.to_vec()),
            ("billing-apps", vec![billing]),
        ],
    );
    let platform = start(
        FixtureDir::new().unwrap(),
        platform,
        &["round-robin", "least-connections"],
    )
    .await;

    // Tier 1, with a certificate for edge.test where edge.toml expects it.
    let ca = TestCa::new().unwrap();
    let edge_dir = FixtureDir::new().unwrap();
    let certs = edge_dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    ca.leaf(&["edge.test"])
        .unwrap()
        .write(&certs, "edge")
        .unwrap();
    let edge = relocated(
        example("edge.toml"),
        &[
            ("web", vec![platform.addr("web")]),
            ("video", vec![platform.addr("video")]),
            ("billing", vec![platform.addr("billing")]),
        ],
    );
    let edge = start(edge_dir, edge, &["content-router"]).await;

    let client = TlsClient::trusting(&ca, &["h2", "http/1.1"]).unwrap();
    let stream = client
        .connect(edge.addr("edge"), "edge.test")
        .await
        .unwrap();
    let mut https = TlsHttp::start(stream).await.unwrap();
    let reply = https.get("edge.test", "/video/1").await.unwrap();
    let text = reply.text();
    assert!(
        text.starts_with("video app ") && text.contains("hits=Integer(1)"),
        "edge -> video tier -> app -> write port: {text}"
    );
    let reply = https.get("edge.test", "/billing/pay").await.unwrap();
    assert!(reply.text().starts_with("billing app "), "{}", reply.text());
    let reply = https.get("edge.test", "/").await.unwrap();
    assert!(reply.text().starts_with("web app "), "{}", reply.text());

    // The hit is on the primary, and the read port serves it from the
    // replica.
    let counted = primary
        .client()
        .await
        .unwrap()
        .get("hits:video")
        .await
        .unwrap();
    assert_eq!(counted.as_deref(), Some("1"));
    assert_eq!(RedisClient::role_at(read).await.as_deref(), Some("slave"));
}
