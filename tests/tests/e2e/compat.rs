//! Interface compatibility: a real module built against the archived
//! `wasmroute:policy@0.2.2` (`tests/policies/v02-first-healthy`, wit-bindgen
//! alone, no SDK) still loads, says it is a 0.2 module that decides
//! requests only, and serves HTTP on a real listener beside the 0.3 host
//! functions, health included.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use wasmroute::ServerEvent;
use wasmroute::config::{BackendConfig, PoolConfig};
use wasmroute::health::HealthChange;
use wasmroute::policy::{BoundPolicy, Capabilities, PolicyEngine, PolicyLimits};
use wasmroute::pool::BackendPool;
use wasmroute_e2e::guests::V02_FIRST_HEALTHY;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, SeenRequest,
};

/// Active checks every 50 ms, down after 2 failures.
const CHECKS: &str =
    "[pools.health]\npath = \"/\"\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n";

/// The module's interface and capabilities, as the host reads them when it
/// binds it to a listener.
#[test]
fn a_02_module_is_served_as_02_and_decides_requests_only() {
    let engine = PolicyEngine::new().unwrap();
    let module = Arc::new(
        engine
            .compile("v02-first-healthy", V02_FIRST_HEALTHY)
            .unwrap(),
    );
    assert_eq!(module.interface(), "0.2");
    let pool = PoolConfig {
        name: "web".into(),
        backends: vec![BackendConfig {
            address: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
        }],
        ..PoolConfig::default()
    };
    let pools: Arc<[Arc<BackendPool>]> = vec![Arc::new(BackendPool::new(&pool, None))].into();
    let limits = PolicyLimits {
        decision_timeout: Duration::from_millis(250),
        memory_limit: 16 << 20,
    };
    let bound = BoundPolicy::new(module, pools, Arc::default(), &Default::default(), limits);
    bound.validate().unwrap();
    assert_eq!(bound.capabilities(), Some(Capabilities::REQUESTS));
}

/// Pool 0's first healthy backend serves every request, with the header
/// the 0.2 decision sets; when it goes down the next one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn v02_first_healthy() {
    let web = Backend::start_many("web", 2).await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "v02-first-healthy", &["web"]))
        .pool(PoolSpec::new("web", &[&web[0], &web[1]]).extra(CHECKS));
    let mut fx = ProxyFixture::start(&config, &[("v02-first-healthy", V02_FIRST_HEALTHY)])
        .await
        .unwrap();
    let client = Client::http1();
    for i in 0..5 {
        let reply = client
            .get(&fx.url("edge", &format!("/v02/{i}")))
            .await
            .unwrap();
        assert_eq!(
            (reply.status, reply.backend()),
            (StatusCode::OK, Some("web-1")),
            "{}",
            reply.text()
        );
    }
    // Health checks reach both backends too: look at proxied requests only.
    let proxied = |seen: Vec<SeenRequest>| -> Vec<SeenRequest> {
        seen.into_iter()
            .filter(|r| r.uri.path().starts_with("/v02/"))
            .collect()
    };
    let first = proxied(web[0].seen().await);
    assert_eq!(first.len(), 5);
    assert!(
        first
            .iter()
            .all(|r| r.header("x-policy-interface") == Some("0.2")),
        "the 0.2 decision's request edit is applied: {first:?}"
    );
    assert!(
        proxied(web[1].seen().await).is_empty(),
        "the first healthy backend only"
    );

    web[0].set_status(Some(StatusCode::SERVICE_UNAVAILABLE));
    let down = web[0].addr();
    fx.await_event(
        |e| {
            matches!(e, ServerEvent::BackendHealth { backend, change: HealthChange::Down, .. }
                if *backend == down)
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    for i in 0..5 {
        let reply = client
            .get(&fx.url("edge", &format!("/after/{i}")))
            .await
            .unwrap();
        assert_eq!(
            (reply.status, reply.backend()),
            (StatusCode::OK, Some("web-2")),
            "{}",
            reply.text()
        );
    }
    fx.shutdown().await.unwrap();
}
