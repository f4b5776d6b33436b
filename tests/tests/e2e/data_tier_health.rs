//! Health checks against real Redis servers: a primary and its replica in
//! one pool, checked by a send/expect script that passes only on a
//! primary (`INFO replication` says `role:master`). The admin endpoint
//! shows the primary up and the replica down; after a failover (the
//! replica promoted, the old primary made its replica) the two swap.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use wasmroute_e2e::{
    Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, RedisServer, bundled,
    eventually_async, sample,
};

/// Bounds each wait for the checks to catch up with the servers' roles:
/// generous, as every check of a replica waits for Redis to close.
const WAIT: Duration = Duration::from_secs(60);

/// A primary-only check: `PING` answered, then `INFO replication` saying
/// `role:master`; `QUIT` makes a replica's check fail as soon as Redis
/// has answered (the connection closes before the `expect` matched)
/// rather than at the timeout.
const PRIMARY_ONLY: &str = "[pools.health]\ninterval = \"50ms\"\ntimeout = \"2s\"\nrise = 1\nfall = 1\n\
     steps = [{ send = \"PING\\r\\n\" }, { expect = \"+PONG\" }, \
     { send = \"INFO replication\\r\\nQUIT\\r\\n\" }, { expect = \"role:master\" }]\n";

/// What the admin endpoint tells of one backend of pool `db`.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    /// `/status`'s `state`: `up`, `down`, `ejected` or `draining`.
    state: String,
    /// `/metrics`'s `wasmroute_health_checks_total{result="pass"}`.
    passed: f64,
}

fn admin_url(fx: &ProxyFixture, path: &str) -> String {
    let address = fx.server().admin_addr().expect("an admin endpoint");
    format!("http://{address}{path}")
}

/// Reads `/status` and `/metrics` for `backend`.
async fn seen(fx: &ProxyFixture, backend: SocketAddr) -> Seen {
    let client = Client::http1();
    let status = client.get(&admin_url(fx, "/status")).await.unwrap();
    assert_eq!(status.status, StatusCode::OK);
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    let address = backend.to_string();
    let entry = status["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == address.as_str())
        .unwrap_or_else(|| panic!("{address} in /status: {status:#}"));
    let scrape = client.get(&admin_url(fx, "/metrics")).await.unwrap().text();
    let labels = [("pool", "db"), ("backend", &address), ("result", "pass")];
    Seen {
        state: entry["state"].as_str().unwrap().to_owned(),
        passed: sample(&scrape, "wasmroute_health_checks_total", &labels)
            .unwrap_or_else(|| panic!("checks of {address} in:\n{scrape}")),
    }
}

/// Polls the admin endpoint until `primary` is up with more than
/// `passed_before` passing checks, and `replica` is down.
async fn await_roles(
    fx: &ProxyFixture,
    primary: SocketAddr,
    replica: SocketAddr,
    passed_before: f64,
) {
    let held = eventually_async(WAIT, || async {
        let (p, r) = (seen(fx, primary).await, seen(fx, replica).await);
        p.state == "up" && p.passed > passed_before && r.state == "down"
    })
    .await;
    let (p, r) = (seen(fx, primary).await, seen(fx, replica).await);
    assert!(held, "primary {primary}: {p:?}, replica {replica}: {r:?}");
}

#[tokio::test]
async fn a_primary_only_check_follows_a_redis_failover() {
    let primary = RedisServer::start().await.expect("a redis primary");
    let replica = RedisServer::start().await.expect("a redis replica");
    replica.replica_of(&primary).await.unwrap();
    primary.client().await.unwrap().set("k", "1").await.unwrap();
    replica.wait_for_sync("k", "1").await.unwrap();

    let pool = PoolSpec::new("db", &[])
        .address(primary.addr())
        .address(replica.addr())
        .extra(PRIMARY_ONLY);
    let config = ConfigBuilder::new()
        .admin("")
        .listener(ListenerSpec::new("edge", "round-robin", &["db"]))
        .pool(pool);
    let fx = ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap();
    await_roles(&fx, primary.addr(), replica.addr(), 0.0).await;

    // Fail over: the replica takes the writes, the old primary follows it.
    replica.promote().await.unwrap();
    primary.replica_of(&replica).await.unwrap();
    replica.client().await.unwrap().set("k", "2").await.unwrap();
    primary.wait_for_sync("k", "2").await.unwrap();
    assert_eq!(
        replica.client().await.unwrap().role().await.unwrap(),
        "master"
    );
    assert_eq!(
        primary.client().await.unwrap().role().await.unwrap(),
        "slave"
    );

    let passed = seen(&fx, replica.addr()).await.passed;
    await_roles(&fx, replica.addr(), primary.addr(), passed).await;
}
