//! Connection decisions of the shipped policies, each run as its real
//! component through [`decide_connection`]: every balancing policy says it
//! decides connections and makes a sensible one (health, retries, its own
//! signal), and `sni-router` routes by the ClientHello's server name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{
    BoundPolicy, Capabilities, ClientHello, ConnectionDecision, ConnectionView, PolicyEngine,
    PolicyError, PolicyLimits, decide_connection,
};
use crate::config::{BackendConfig, PoolConfig};
use crate::pool::{ActiveRequest, BackendPool};

/// Every shipped policy that balances connections.
const BALANCERS: &[&str] = &[
    "round-robin",
    "weighted-round-robin",
    "random",
    "weighted-random-by-utilization",
    "least-connections",
    "least-response-time",
    "consistent-hash",
    "shared-round-robin",
    "sni-router",
];

/// A pool: its name and its backends' weights.
type PoolShape<'a> = (&'a str, &'a [u32]);

/// `name` (a shipped policy) bound to pools of the given shapes (backend
/// `i` of pool `p` at 127.0.0.1:`10_000 + 100 p + i`) with `policy_config`
/// in TOML, validated.
fn bind(name: &str, pools: &[PoolShape], policy_config: &str) -> Result<BoundPolicy, PolicyError> {
    let engine = PolicyEngine::new().unwrap();
    let bytes = crate::bundled::get(name).unwrap_or_else(|| panic!("{name} is not shipped"));
    let module = Arc::new(engine.compile(name, bytes).unwrap());
    let pools: Arc<[Arc<BackendPool>]> = pools
        .iter()
        .enumerate()
        .map(|(p, (pool, weights))| {
            Arc::new(BackendPool::new(&pool_config(p, pool, weights), None))
        })
        .collect();
    let limits = PolicyLimits {
        decision_timeout: Duration::from_millis(250),
        memory_limit: 16 << 20,
    };
    let config: toml::Table = policy_config.parse().unwrap();
    let policy = BoundPolicy::new(module, pools, Arc::default(), &config, limits);
    policy.validate().map(|()| policy)
}

fn pool_config(index: usize, name: &str, weights: &[u32]) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        backends: weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| BackendConfig {
                address: SocketAddr::from(([127, 0, 0, 1], (10_000 + 100 * index + i) as u16)),
                weight,
            })
            .collect(),
        ..PoolConfig::default()
    }
}

/// [`bind`] that must succeed, shared as the worker API wants it.
fn bound(name: &str, pools: &[PoolShape], policy_config: &str) -> Arc<BoundPolicy> {
    Arc::new(bind(name, pools, policy_config).unwrap_or_else(|e| panic!("{name}: {e}")))
}

/// A view of a first decision from `client`, without a ClientHello.
fn view(client: &str) -> ConnectionView {
    ConnectionView::new(client.parse().unwrap(), 7000, None)
}

/// A view of a first decision whose ClientHello names `server_name`.
fn hello(server_name: &str) -> ConnectionView {
    let hello = ClientHello {
        server_name: Some(server_name.into()),
        alpn: vec!["h2".into()],
    };
    ConnectionView::new("127.0.0.1:5000".parse().unwrap(), 443, Some(hello))
}

/// The (pool, backend) `policy` sends the connection to; `None`: rejected.
fn target(policy: &Arc<BoundPolicy>, view: ConnectionView) -> Option<(u32, u32)> {
    match decide_connection(policy, view).1.expect("a valid decision") {
        ConnectionDecision::Forward(f) => Some((f.pool, f.backend)),
        ConnectionDecision::Reject => None,
    }
}

/// Config that routes every connection of `sni-router` to its one pool.
fn config_for(name: &str) -> &'static str {
    match name {
        "sni-router" => "default = \"db\"",
        _ => "",
    }
}

#[test]
fn balancers_decide_connections_by_health_and_avoid_the_tried_backend() {
    for &name in BALANCERS {
        let policy = bound(name, &[("db", &[1, 1])], config_for(name));
        assert_eq!(policy.module.interface(), "0.3", "{name}");
        let capabilities = policy.capabilities().expect("known after validate");
        assert!(
            capabilities.contains(Capabilities::REQUESTS | Capabilities::CONNECTIONS),
            "{name}: {capabilities:?}"
        );
        assert_eq!(
            capabilities.contains(Capabilities::CLIENT_HELLO),
            name == "sni-router",
            "{name}: only sni-router waits for the ClientHello"
        );
        for port in 0..8 {
            let client = format!("127.0.0.{}:{}", 1 + port, 4000 + port);
            let mut retry = view(&client);
            retry.tried = vec![(0, 1)];
            assert_eq!(
                target(&policy, retry),
                Some((0, 0)),
                "{name}: a retry avoids 1"
            );
            retry = view(&client);
            retry.tried = vec![(0, 0)];
            assert_eq!(
                target(&policy, retry),
                Some((0, 1)),
                "{name}: a retry avoids 0"
            );
        }
        policy.pools[0].backends[0].stats.set_healthy(false);
        for port in 0..8 {
            let client = format!("127.0.0.{}:{}", 1 + port, 4000 + port);
            assert_eq!(
                target(&policy, view(&client)),
                Some((0, 1)),
                "{name}: healthy only"
            );
        }
        policy.pools[0].backends[1].stats.set_healthy(false);
        assert_eq!(
            target(&policy, view("127.0.0.1:4000")),
            None,
            "{name}: none healthy"
        );
    }
}

#[test]
fn least_connections_avoids_the_backend_holding_connections() {
    let policy = bound("least-connections", &[("db", &[1, 1, 1])], "");
    let backends = &policy.pools[0].backends;
    let held: Vec<ActiveRequest> = [0, 0, 2]
        .iter()
        .map(|&b| backends[b].start_request())
        .collect();
    for _ in 0..20 {
        assert_eq!(target(&policy, view("127.0.0.1:4000")), Some((0, 1)));
    }
    drop(held);
    let seen: Vec<_> = (0..60)
        .filter_map(|_| target(&policy, view("127.0.0.1:4000")))
        .collect();
    assert!(
        (0..3).all(|b| seen.contains(&(0, b))),
        "idle again, ties spread: {seen:?}"
    );
}

#[test]
fn least_response_time_prefers_the_backend_that_connects_faster() {
    let policy = bound("least-response-time", &[("db", &[1, 1])], "");
    let backends = &policy.pools[0].backends;
    let sample = |b: usize, ms: u64| {
        backends[b]
            .start_request()
            .record_response(Duration::from_millis(ms), http::StatusCode::OK);
    };
    sample(0, 40);
    sample(1, 1);
    for _ in 0..20 {
        assert_eq!(target(&policy, view("127.0.0.1:4000")), Some((0, 1)));
    }
}

#[test]
fn weighted_round_robin_gives_connections_by_weight() {
    let policy = bound("weighted-round-robin", &[("db", &[3, 1])], "");
    let seen: Vec<_> = (0..8)
        .map(|_| target(&policy, view("127.0.0.1:4000")).unwrap().1)
        .collect();
    assert_eq!(seen.iter().filter(|&&b| b == 0).count(), 6, "{seen:?}");
}

#[test]
fn shared_round_robin_rotates_connections() {
    let policy = bound("shared-round-robin", &[("db", &[1, 1])], "");
    let seen: Vec<_> = (0..4)
        .map(|_| target(&policy, view("127.0.0.1:4000")).unwrap().1)
        .collect();
    assert_eq!(seen, [0, 1, 0, 1]);
}

#[test]
fn random_policies_reach_every_healthy_backend() {
    for (name, config) in [
        ("random", ""),
        ("random", "weighted = false"),
        ("weighted-random-by-utilization", ""),
    ] {
        let policy = bound(name, &[("db", &[1, 2, 1])], config);
        let seen: Vec<_> = (0..200)
            .filter_map(|_| target(&policy, view("127.0.0.1:4000")))
            .collect();
        assert!(
            (0..3).all(|b| seen.contains(&(0, b))),
            "{name} {config}: {seen:?}"
        );
    }
}

#[test]
fn consistent_hash_keeps_a_client_ip_on_its_backend_whatever_the_key() {
    let pools: &[PoolShape] = &[("db", &[1, 1, 1, 1])];
    let by_ip = bound("consistent-hash", pools, "");
    // An HTTP-only key: connections still hash the client IP, identically.
    let by_header = bound("consistent-hash", pools, "key = \"header:x-user\"");
    let mut used = Vec::new();
    for host in 1..=32 {
        let first = target(&by_ip, view(&format!("10.0.0.{host}:1000"))).unwrap();
        for port in [1001, 40000, 65000] {
            let client = format!("10.0.0.{host}:{port}");
            assert_eq!(target(&by_ip, view(&client)), Some(first), "{client}");
            assert_eq!(target(&by_header, view(&client)), Some(first), "{client}");
        }
        used.push(first.1);
    }
    assert!((0..4).all(|b| used.contains(&b)), "32 IPs spread: {used:?}");
}

/// Pools of the `sni-router` tests.
const SNI_POOLS: &[PoolShape] = &[("a", &[1, 1]), ("b", &[1]), ("eu", &[1]), ("other", &[1])];
const SNI_ROUTES: &str = "[routes]\n\"a.test\" = \"a\"\n\"*.b.test\" = \"b\"\n\
                          \"*.eu.b.test\" = \"eu\"\n";

#[test]
fn sni_router_routes_exact_then_longest_wildcard_then_default() {
    let policy = bound(
        "sni-router",
        SNI_POOLS,
        &format!("default = \"other\"\n{SNI_ROUTES}"),
    );
    let capabilities = policy.capabilities().unwrap();
    assert!(capabilities.contains(Capabilities::CONNECTIONS | Capabilities::CLIENT_HELLO));
    assert_eq!(target(&policy, hello("a.test")), Some((0, 0)));
    assert_eq!(
        target(&policy, hello("a.test")),
        Some((0, 1)),
        "round robin in the pool"
    );
    assert_eq!(
        target(&policy, hello("A.Test")),
        Some((0, 0)),
        "names ignore case"
    );
    assert_eq!(target(&policy, hello("x.b.test")), Some((1, 0)));
    assert_eq!(target(&policy, hello("x.y.b.test")), Some((1, 0)));
    assert_eq!(
        target(&policy, hello("x.eu.b.test")),
        Some((2, 0)),
        "longest suffix"
    );
    assert_eq!(target(&policy, hello("b.test")), Some((3, 0)), "default");
    assert_eq!(
        target(&policy, view("127.0.0.1:5000")),
        Some((3, 0)),
        "no ClientHello"
    );
    policy.pools[1].backends[0].stats.set_healthy(false);
    assert_eq!(
        target(&policy, hello("x.b.test")),
        None,
        "never another pool"
    );
}

#[test]
fn sni_router_without_default_rejects_unmatched_connections() {
    let policy = bound("sni-router", SNI_POOLS, SNI_ROUTES);
    assert_eq!(target(&policy, hello("a.test")), Some((0, 0)));
    assert_eq!(target(&policy, hello("c.test")), None);
    assert_eq!(
        target(&policy, view("127.0.0.1:5000")),
        None,
        "no ClientHello"
    );
}

#[test]
fn sni_router_refuses_bad_config_naming_the_key() {
    let refused = |config: &str| match bind("sni-router", SNI_POOLS, config) {
        Ok(_) => panic!("accepted {config:?}"),
        Err(e) => e.to_string(),
    };
    let cases = [
        (
            "[routes]\n\"a.test\" = \"nope\"",
            "routes.a.test: unknown pool",
        ),
        (
            "[routes]\n\"a.*.test\" = \"a\"",
            "routes.a.*.test: malformed server name pattern",
        ),
        ("default = \"a\"\nroute = \"a\"", "route: unknown key"),
        ("default = 3", "default: expected a string"),
        ("", "routes: no route and no `default`"),
    ];
    for (config, expected) in cases {
        let message = refused(config);
        assert!(message.contains(expected), "{config:?}: {message}");
    }
}
