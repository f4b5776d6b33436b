//! No shipped policy ever picks an unhealthy backend, and a sticky cookie
//! naming a backend that went down is re-picked (and honoured again once
//! it is back up). Health comes from the host's active checks
//! (`[pools.health]`), driven by making a backend answer 503.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use wasmroute::ServerEvent;
use wasmroute::health::HealthChange;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, Reply, bundled,
};

/// Active checks every 50 ms, down after 2 failures, up after 2 passes.
const CHECKS: &str =
    "[pools.health]\npath = \"/\"\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n";

/// Every shipped policy, as (listener and policy name, policy_config
/// entries as TOML), in groups: one proxy per group keeps the policies
/// compiled per start (and so the start time) small.
type Group = &'static [(&'static str, &'static [(&'static str, &'static str)])];
const GROUPS: &[Group] = &[
    &[
        ("round-robin", &[]),
        ("weighted-round-robin", &[]),
        ("random", &[]),
        ("weighted-random-by-utilization", &[]),
    ],
    &[
        ("least-connections", &[]),
        ("least-response-time", &[]),
        ("consistent-hash", &[("key", "\"header:x-k\"")]),
        ("shared-round-robin", &[]),
    ],
    &[
        (
            "sticky-cookie",
            &[("secret", "\"a test secret of 32 bytes.......\"")],
        ),
        ("content-router", &[]),
        (
            "read-write-split",
            &[("primary", "\"solo\""), ("replicas", "\"web\"")],
        ),
        ("sni-router", &[("default", "\"web\"")]),
    ],
];

/// A proxy with one listener per policy of `group` (named after it) over
/// pool `web`; `read-write-split` writes to pool `solo` (`solo`).
async fn start(group: Group, web: PoolSpec, solo: &Backend) -> ProxyFixture {
    let mut config = ConfigBuilder::new();
    let mut policies = Vec::new();
    for (name, entries) in group {
        let pools: &[&str] = if *name == "read-write-split" {
            &["web", "solo"]
        } else {
            &["web"]
        };
        let mut listener = ListenerSpec::new(name, name, pools);
        for (key, value) in *entries {
            listener = listener.policy_config_toml(key, value);
        }
        config = config.listener(listener);
        policies.push((*name, bundled(name)));
    }
    config = config.pool(web).pool(PoolSpec::new("solo", &[solo]));
    ProxyFixture::start(&config, &policies).await.unwrap()
}

/// 20 GETs (with distinct `x-k` keys) on every listener of `group`: all
/// 200, and the answering backend passes `check`.
async fn check_all(fx: &ProxyFixture, group: Group, check: impl Fn(&str, Option<&str>)) {
    let client = Client::http1();
    for (listener, _) in group {
        let url = fx.url(listener, "/");
        for i in 0..20 {
            let key = format!("key-{i}");
            let reply = client.get_with(&url, &[("x-k", &key)]).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{listener}: {}", reply.text());
            check(listener, reply.backend());
        }
    }
}

async fn await_health(fx: &mut ProxyFixture, backend: SocketAddr, change: HealthChange) {
    fx.await_event(
        |e| {
            matches!(e, ServerEvent::BackendHealth { backend: b, change: c, .. }
                if *b == backend && *c == change)
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap_or_else(|e| panic!("{change:?} of {backend}: {e:#}"));
}

fn set_cookie(reply: &Reply) -> Option<String> {
    let value = reply.headers.get("set-cookie")?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_policy_picks_a_down_backend_and_sticky_cookies_follow_health() {
    let web = Backend::start_many("web", 3).await.unwrap();
    let solo = Backend::start("solo-1").await.unwrap();
    let down = &web[0];
    for group in GROUPS {
        let pool = PoolSpec::new("web", &[&web[0], &web[1], &web[2]]).extra(CHECKS);
        let mut fx = start(group, pool, &solo).await;
        let sticky = group
            .iter()
            .any(|(name, _)| *name == "sticky-cookie")
            .then(|| fx.url("sticky-cookie", "/"));
        let client = Client::http1();

        // A sticky client pinned to the backend about to go down.
        let mut cookie = None;
        if let Some(sticky) = &sticky {
            for _ in 0..30 {
                let reply = client.get(sticky).await.unwrap();
                if reply.backend() == Some(down.name()) {
                    cookie = set_cookie(&reply);
                    break;
                }
            }
            let cookie = cookie.as_deref().expect("a client placed on web-1");
            let reply = client
                .get_with(sticky, &[("cookie", cookie)])
                .await
                .unwrap();
            assert_eq!(reply.backend(), Some(down.name()));
        }

        fx.clear_events();
        down.set_status(Some(StatusCode::SERVICE_UNAVAILABLE));
        await_health(&mut fx, down.addr(), HealthChange::Down).await;
        check_all(&fx, group, |listener, backend| {
            assert_ne!(backend, Some(down.name()), "{listener}");
        })
        .await;

        if let (Some(sticky), Some(cookie)) = (&sticky, &cookie) {
            // The pinned client is re-placed, with a fresh cookie that pins.
            let reply = client
                .get_with(sticky, &[("cookie", cookie)])
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::OK);
            let moved_to = reply.backend().unwrap().to_owned();
            assert_ne!(moved_to, down.name());
            let fresh = set_cookie(&reply).expect("re-pinned");
            let reply = client
                .get_with(sticky, &[("cookie", &fresh)])
                .await
                .unwrap();
            assert_eq!(reply.backend(), Some(moved_to.as_str()));
        }

        // Back up.
        fx.clear_events();
        down.set_status(None);
        await_health(&mut fx, down.addr(), HealthChange::Up).await;
        if let (Some(sticky), Some(cookie)) = (&sticky, &cookie) {
            // The old cookie is honoured again: the proxy kept nothing.
            let reply = client
                .get_with(sticky, &[("cookie", cookie)])
                .await
                .unwrap();
            assert_eq!(reply.backend(), Some(down.name()));
            assert_eq!(set_cookie(&reply), None);
        }
        fx.shutdown().await.unwrap();
    }
}

/// A port with nothing listening (bound, then closed).
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// With two of three backends refusing connections (and passive ejection
/// off, so the host never stops offering them), every request still
/// succeeds within the default 2 retries: each policy's retry picks a
/// backend the request has not tried yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_retries_on_backends_not_tried_yet() {
    let good = Backend::start("good").await.unwrap();
    let solo = Backend::start("solo-1").await.unwrap();
    let (dead1, dead2) = (closed_port().await, closed_port().await);
    for group in GROUPS {
        let pool = PoolSpec::new("web", &[])
            .address(dead1)
            .address(dead2)
            .address(good.addr())
            .extra("[pools.passive]\nenabled = false\n");
        let fx = start(group, pool, &solo).await;
        check_all(&fx, group, |listener, backend| {
            assert_eq!(backend, Some("good"), "{listener}");
        })
        .await;
        fx.shutdown().await.unwrap();
    }
}
