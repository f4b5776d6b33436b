//! Routing by the shipped policies, end to end: round robin over pool 0,
//! and content routing by path prefix and by header.

use std::collections::BTreeMap;

use http::StatusCode;
use tokio::task::JoinSet;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, bundled,
};

/// GETs `path` on `listener` and returns the answering backend's name,
/// asserting a 200 whose body matches `x-backend`.
async fn backend_for(
    fx: &ProxyFixture,
    listener: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let reply = Client::http1()
        .get_with(&fx.url(listener, path), headers)
        .await
        .unwrap_or_else(|e| panic!("{listener} {path}: {e:#}"));
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{listener} {path} {headers:?}: {}",
        reply.text()
    );
    let backend = reply
        .backend()
        .unwrap_or_else(|| panic!("{path}: no x-backend header"))
        .to_owned();
    assert_eq!(reply.text(), backend, "{path}: body and x-backend disagree");
    backend
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly_over_pool_0() {
    let web = Backend::start_many("web", 3).await.unwrap();
    let other = Backend::start("other-1").await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web", "other"]))
        .pool(PoolSpec::new("web", &[&web[0], &web[1], &web[2]]))
        .pool(PoolSpec::new("other", &[&other]));
    let fx = ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap();

    // 3 clients x 100 requests, each client on its own keep-alive connection.
    let mut clients = JoinSet::new();
    for _ in 0..3 {
        let url = fx.url("edge", "/");
        clients.spawn(async move {
            let client = Client::http1();
            let mut names = Vec::new();
            for _ in 0..100 {
                let reply = client.get(&url).await.expect("request through the proxy");
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                names.push(reply.backend().expect("x-backend").to_owned());
            }
            names
        });
    }
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(names) = clients.join_next().await {
        for name in names.unwrap() {
            *tally.entry(name).or_default() += 1;
        }
    }
    assert_eq!(
        other.served(),
        0,
        "round-robin must stay in pool 0: {tally:?}"
    );
    for b in &web {
        let n = tally.get(b.name()).copied().unwrap_or(0);
        assert!(
            (90..=110).contains(&n),
            "{} served {n} of 300: {tally:?}",
            b.name()
        );
        assert_eq!(
            b.served(),
            n,
            "{}: replies and backend count disagree",
            b.name()
        );
    }
    assert_eq!(tally.values().sum::<u64>(), 300);
    fx.shutdown().await.unwrap();
}

struct Pools {
    web: Vec<Backend>,
    video: Backend,
    billing: Backend,
}

async fn pools() -> Pools {
    Pools {
        web: Backend::start_many("web", 2).await.unwrap(),
        video: Backend::start("video-1").await.unwrap(),
        billing: Backend::start("billing-1").await.unwrap(),
    }
}

fn router_config(p: &Pools, listeners: Vec<ListenerSpec>) -> ConfigBuilder {
    let mut config = ConfigBuilder::new()
        .pool(PoolSpec::new("web", &[&p.web[0], &p.web[1]]))
        .pool(PoolSpec::new("video", &[&p.video]))
        .pool(PoolSpec::new("billing", &[&p.billing]));
    for l in listeners {
        config = config.listener(l);
    }
    config
}

const POOLS: &[&str] = &["web", "video", "billing"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_router_routes_by_path_prefix() {
    let p = pools().await;
    let config = router_config(&p, vec![ListenerSpec::new("edge", "content-router", POOLS)]);
    let fx = ProxyFixture::start(&config, &[("content-router", bundled("content-router"))])
        .await
        .unwrap();
    for (path, pool) in [
        ("/video/x", "video"),
        ("/video", "video"),
        ("/video/a/b.mp4?t=3", "video"),
        ("/billing", "billing"),
        ("/billing/invoices/7", "billing"),
        ("/", "web"),
        ("/videos", "web"),
        ("/billingx/1", "web"),
        ("/static/video/x", "web"),
        ("/web/index.html", "web"),
    ] {
        let backend = backend_for(&fx, "edge", path, &[]).await;
        assert!(
            backend.starts_with(pool),
            "{path} landed on {backend}, expected pool {pool}"
        );
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_router_prefix_is_configurable() {
    let p = pools().await;
    let listener =
        ListenerSpec::new("edge", "content-router", POOLS).policy_config("video_prefix", "/v");
    let fx = ProxyFixture::start(
        &router_config(&p, vec![listener]),
        &[("content-router", bundled("content-router"))],
    )
    .await
    .unwrap();
    for (path, pool) in [
        ("/v/clip", "video"),
        ("/v", "video"),
        ("/video/x", "web"),
        ("/billing/1", "billing"),
    ] {
        let backend = backend_for(&fx, "edge", path, &[]).await;
        assert!(
            backend.starts_with(pool),
            "{path} landed on {backend}, expected pool {pool}"
        );
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_router_header_names_a_pool() {
    let p = pools().await;
    let listener =
        ListenerSpec::new("edge", "content-router", POOLS).policy_config("header", "x-pool");
    let fx = ProxyFixture::start(
        &router_config(&p, vec![listener]),
        &[("content-router", bundled("content-router"))],
    )
    .await
    .unwrap();
    for (path, header, pool) in [
        ("/", Some("billing"), "billing"),
        ("/", Some("video"), "video"),
        ("/account", Some("billing"), "billing"),
        ("/", Some("no-such-pool"), "web"),
        ("/", None, "web"),
        ("/video/x", None, "video"),
    ] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("x-pool", h)).into_iter().collect();
        let backend = backend_for(&fx, "edge", path, &headers).await;
        assert!(
            backend.starts_with(pool),
            "{path} {header:?} landed on {backend}, expected pool {pool}"
        );
    }
    fx.shutdown().await.unwrap();
}
