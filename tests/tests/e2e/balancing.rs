//! The shipped balancing policies, end to end, by statistics over real
//! requests: weighted round robin and weighted random split 3:1, least
//! connections avoids a backend holding slow requests, least response time
//! and utilization-weighted random shift traffic away from a slow or busy
//! backend, and the shared round robin alternates exactly across workers.
//!
//! Tolerances are several standard deviations wide for the random
//! policies and still far from what a wrong policy would give (a 1:1 split,
//! or no shift at all). See also `balancing_affinity.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use tokio::task::JoinSet;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled,
};

/// `total` GETs of `url` from `clients` concurrent keep-alive clients;
/// returns how many each backend (by `x-backend`) answered.
async fn tally(
    url: &str,
    total: usize,
    clients: usize,
    headers: &[(&str, &str)],
) -> BTreeMap<String, usize> {
    let mut set = JoinSet::new();
    for c in 0..clients {
        let n = total / clients + usize::from(c < total % clients);
        let url = url.to_owned();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        set.spawn(async move {
            let client = Client::http1();
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut names = Vec::with_capacity(n);
            for _ in 0..n {
                let reply = client.get_with(&url, &headers).await.expect("request");
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                names.push(reply.backend().expect("x-backend").to_owned());
            }
            names
        });
    }
    let mut counts = BTreeMap::new();
    while let Some(names) = set.join_next().await {
        for name in names.unwrap() {
            *counts.entry(name).or_default() += 1;
        }
    }
    assert_eq!(counts.values().sum::<usize>(), total);
    counts
}

fn share(counts: &BTreeMap<String, usize>, backend: &Backend) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(backend.name()).copied().unwrap_or(0) as f64 / total as f64
}

async fn start(policy: &str, listener: ListenerSpec, pool: PoolSpec) -> ProxyFixture {
    let config = ConfigBuilder::new().listener(listener).pool(pool);
    ProxyFixture::start(&config, &[(policy, bundled(policy))])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_and_weighted_random_split_3_to_1() {
    let heavy = Backend::start("heavy").await.unwrap();
    let light = Backend::start("light").await.unwrap();
    let pool = PoolSpec::new("web", &[])
        .weighted(&heavy, 3)
        .weighted(&light, 1);
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("wrr", "weighted-round-robin", &["web"]))
        .listener(ListenerSpec::new("random", "random", &["web"]))
        .listener(ListenerSpec::new("rr", "round-robin", &["web"]))
        .pool(pool);
    let fx = ProxyFixture::start(
        &config,
        &[
            ("weighted-round-robin", bundled("weighted-round-robin")),
            ("random", bundled("random")),
            ("round-robin", bundled("round-robin")),
        ],
    )
    .await
    .unwrap();

    // Smooth WRR is exact per worker: 3:1 up to one pick per worker.
    let counts = tally(&fx.url("wrr", "/"), 4000, 8, &[]).await;
    let s = share(&counts, &heavy);
    assert!(
        (0.74..=0.76).contains(&s),
        "wrr heavy share {s}: {counts:?}"
    );

    // Random by weight: sd = 0.7 %, so 0.72..0.78 is over 4 sd either way.
    let counts = tally(&fx.url("random", "/"), 4000, 8, &[]).await;
    let s = share(&counts, &heavy);
    assert!(
        (0.72..=0.78).contains(&s),
        "random heavy share {s}: {counts:?}"
    );

    // Plain round robin ignores the weights.
    let counts = tally(&fx.url("rr", "/"), 400, 4, &[]).await;
    let s = share(&counts, &heavy);
    assert!((0.48..=0.52).contains(&s), "rr heavy share {s}: {counts:?}");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_a_backend_holding_slow_requests() {
    let web = Backend::start_many("web", 3).await.unwrap();
    let slow = &web[0];
    // Two listeners over one pool (so one set of in-flight counts):
    // `pin` hashes a header to place slow requests on `slow`, `lc` is the
    // policy under test.
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("lc", "least-connections", &["web"]))
        .listener(
            ListenerSpec::new("pin", "consistent-hash", &["web"])
                .policy_config("key", "header:x-k"),
        )
        .pool(PoolSpec::new("web", &[&web[0], &web[1], &web[2]]));
    let fx = ProxyFixture::start(
        &config,
        &[
            ("least-connections", bundled("least-connections")),
            ("consistent-hash", bundled("consistent-hash")),
        ],
    )
    .await
    .unwrap();

    // Idle: ties are broken at random, every backend gets a share.
    let counts = tally(&fx.url("lc", "/"), 300, 1, &[]).await;
    for b in &web {
        assert!(share(&counts, b) > 0.2, "{}: {counts:?}", b.name());
    }

    // A key that lands on `slow`.
    let client = Client::http1();
    let mut key = None;
    for i in 0..200 {
        let k = format!("k{i}");
        let reply = client
            .get_with(&fx.url("pin", "/"), &[("x-k", &k)])
            .await
            .unwrap();
        if reply.backend() == Some(slow.name()) {
            key = Some(k);
            break;
        }
    }
    let key = key.expect("some key hashes to the slow backend");

    // Hold 4 slow requests on it.
    slow.set_delay(Duration::from_secs(2));
    let before = slow.served();
    let mut held = JoinSet::new();
    for _ in 0..4 {
        let (url, key) = (fx.url("pin", "/"), key.clone());
        held.spawn(async move {
            Client::http1()
                .get_with(&url, &[("x-k", &key)])
                .await
                .unwrap()
        });
    }
    let deadline = tokio::time::Instant::now() + STEP;
    while slow.served() < before + 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // New requests go elsewhere while they are held.
    let served = slow.served();
    let counts = tally(&fx.url("lc", "/"), 200, 2, &[]).await;
    assert_eq!(slow.served(), served, "{counts:?}");
    assert_eq!(counts.get(slow.name()), None, "{counts:?}");
    assert!(
        counts.values().all(|&n| n >= 50),
        "the other two share the load: {counts:?}"
    );
    while let Some(reply) = held.join_next().await {
        assert_eq!(reply.unwrap().backend(), Some(slow.name()));
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_response_time_shifts_away_from_a_slower_backend() {
    let fast = Backend::start("fast").await.unwrap();
    let slow = Backend::start("slow").await.unwrap();
    let fx = start(
        "least-response-time",
        ListenerSpec::new("edge", "least-response-time", &["web"]),
        PoolSpec::new("web", &[&fast, &slow]),
    )
    .await;
    let url = fx.url("edge", "/");

    // Equally fast: both get a real share.
    let counts = tally(&url, 400, 8, &[]).await;
    for b in [&fast, &slow] {
        assert!(share(&counts, b) > 0.1, "{}: {counts:?}", b.name());
    }

    // 20 ms slower: after its EWMA has caught up (a few requests), it
    // loses nearly every draw.
    slow.set_delay(Duration::from_millis(20));
    tally(&url, 100, 8, &[]).await;
    let counts = tally(&url, 800, 8, &[]).await;
    let s = share(&counts, &slow);
    assert!(s < 0.1, "slow share {s}: {counts:?}");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utilization_weighted_random_shifts_away_from_a_busy_backend() {
    let busy = Backend::start("busy").await.unwrap();
    let idle = Backend::start("idle").await.unwrap();
    let fx = start(
        "weighted-random-by-utilization",
        ListenerSpec::new("edge", "weighted-random-by-utilization", &["web"]),
        PoolSpec::new("web", &[&busy, &idle]),
    )
    .await;
    let url = fx.url("edge", "/");

    // No reports yet: plain (equal) weights.
    // (sd 2 %: the bounds are 4 sd away.)
    let counts = tally(&url, 600, 8, &[]).await;
    let s = share(&counts, &busy);
    assert!(
        (0.42..=0.58).contains(&s),
        "busy share {s} without reports: {counts:?}"
    );

    // Reports arrive on proxied responses; warm up until both reported.
    busy.set_load_report(Some("cpu=0.95, mem=0.30")).await;
    idle.set_load_report(Some("cpu=0.10, mem=0.20")).await;
    tally(&url, 100, 4, &[]).await;
    // Expected busy share 0.05 / (0.05 + 0.9) = 5.3 %.
    let counts = tally(&url, 1000, 8, &[]).await;
    let s = share(&counts, &busy);
    assert!(s < 0.12, "busy share {s}: {counts:?}");
    assert!(s > 0.0, "a busy backend keeps a trickle: {counts:?}");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_round_robin_alternates_exactly_across_workers() {
    let web = Backend::start_many("web", 2).await.unwrap();
    let fx = start(
        "shared-round-robin",
        ListenerSpec::new("edge", "shared-round-robin", &["web"]).policy_config_toml("slot", "3"),
        PoolSpec::new("web", &[&web[0], &web[1]]),
    )
    .await;
    let url = fx.url("edge", "/");
    // Every request on a new connection, so they are served by whichever
    // worker accepts it; the cursor is shared, so the sequence alternates.
    let mut seq = Vec::new();
    for _ in 0..60 {
        let reply = Client::http1().get(&url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        seq.push(reply.backend().unwrap().to_owned());
    }
    for pair in seq.windows(2) {
        assert_ne!(pair[0], pair[1], "{seq:?}");
    }
    assert_eq!(web[0].served() + web[1].served(), 60);
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policy_config_is_refused_at_start_with_the_key() {
    let web = Backend::start("web-1").await.unwrap();
    // (policy, key, value, what the error must say)
    for (policy, key, value, expect) in [
        (
            "sticky-cookie",
            "secret",
            "\"short\"",
            "secret: must be at least 16 bytes",
        ),
        (
            "consistent-hash",
            "table_size",
            "1000",
            "table_size: must be a prime",
        ),
        (
            "weighted-random-by-utilization",
            "min_spare",
            "2.0",
            "min_spare: must be between",
        ),
        (
            "shared-round-robin",
            "slot",
            "64",
            "slot: slot 64 out of range",
        ),
        (
            "read-write-split",
            "replicas",
            "\"web\"",
            "primary: unknown pool `primary`",
        ),
        (
            "least-response-time",
            "pool",
            "\"nope\"",
            "pool: unknown pool `nope`",
        ),
    ] {
        let config = ConfigBuilder::new()
            .listener(ListenerSpec::new("edge", policy, &["web"]).policy_config_toml(key, value))
            .pool(PoolSpec::new("web", &[&web]));
        let err = match ProxyFixture::start(&config, &[(policy, bundled(policy))]).await {
            Ok(_) => panic!("{policy}: {key} = {value} was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(expect), "{policy}: {key}: {err}");
    }
}
