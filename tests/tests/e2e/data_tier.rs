//! The data tier over real Redis servers: a write listener over a pool of
//! every node whose check passes only on the primary, and a read listener
//! over the replica (read/write split by port). A write through the write
//! port is read back through the read port; after a failover (the replica
//! promoted, the old primary made its replica) new connections on the
//! write port reach the new primary, and `on_down = "close-connections"`
//! closed the one left open to the old primary.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use wasmroute_e2e::{
    ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, RedisClient, RedisServer, bundled,
    eventually_async,
};

/// Bounds each wait for the checks to catch up with the servers' roles.
const WAIT: Duration = Duration::from_secs(60);

/// The check's period and fall: a failover is noticed within
/// `FALL` x `INTERVAL` plus one check's time.
const INTERVAL_MS: u64 = 100;
const FALL: u32 = 2;

fn primary_only() -> String {
    format!(
        "on_down = \"close-connections\"\nconnect_timeout = \"1s\"\n\
         [pools.health]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"2s\"\nrise = 1\nfall = {FALL}\n\
         steps = [{{ send = \"PING\\r\\n\" }}, {{ expect = \"+PONG\" }}, \
         {{ send = \"INFO replication\\r\\nQUIT\\r\\n\" }}, {{ expect = \"role:master\" }}]\n"
    )
}

/// Whether four new connections in a row on the write port all reach a
/// server of `role`.
async fn writes_reach(fx: &ProxyFixture, role: &str) -> bool {
    RedisClient::all_reach(fx.addr("write"), role, 4).await
}

/// `GET key` on a new connection through the read port.
async fn read_through(fx: &ProxyFixture, key: &str) -> Option<String> {
    RedisClient::connect(fx.addr("read"))
        .await
        .ok()?
        .get(key)
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn writes_follow_the_primary_through_a_redis_failover() {
    let primary = RedisServer::start().await.expect("a redis primary");
    let replica = RedisServer::start().await.expect("a redis replica");
    replica.replica_of(&primary).await.unwrap();

    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("write", "round-robin", &["nodes"]).tcp())
        .listener(ListenerSpec::new("read", "round-robin", &["replicas"]).tcp())
        .pool(
            PoolSpec::new("nodes", &[])
                .address(primary.addr())
                .address(replica.addr())
                .extra(&primary_only()),
        )
        .pool(PoolSpec::new("replicas", &[]).address(replica.addr()));
    let fx = ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap();

    // Until the checks have run, the write pool may still count the
    // replica as up: wait until every new write connection is the primary.
    assert!(
        eventually_async(WAIT, || writes_reach(&fx, "master")).await,
        "write connections never all reached the primary"
    );

    let mut writer = RedisClient::connect(fx.addr("write")).await.unwrap();
    writer.set("k", "through-the-write-port").await.unwrap();
    assert_eq!(
        RedisClient::role_at(fx.addr("read")).await.as_deref(),
        Some("slave"),
        "reads go to the replica"
    );
    assert!(
        eventually_async(WAIT, || async {
            read_through(&fx, "k").await.as_deref() == Some("through-the-write-port")
        })
        .await,
        "the write never showed on the read port"
    );

    // A connection open on the write port (to the old primary) when the
    // failover happens.
    let mut held = tokio::net::TcpStream::connect(fx.addr("write"))
        .await
        .unwrap();
    let failover = Instant::now();
    replica.promote().await.unwrap();
    primary.replica_of(&replica).await.unwrap();

    assert!(
        eventually_async(WAIT, || writes_reach(&fx, "master")).await,
        "write connections never moved to the new primary"
    );
    let moved = failover.elapsed();
    let mut new_writer = RedisClient::connect(fx.addr("write")).await.unwrap();
    new_writer.set("k", "after-failover").await.unwrap();
    let direct = replica.client().await.unwrap().get("k").await.unwrap();
    assert_eq!(
        direct.as_deref(),
        Some("after-failover"),
        "written on the new primary"
    );

    // The held connection was closed by the proxy: EOF (or a reset), not
    // a reply, when it reads.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, held.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection to the old primary is still open: {read:?}"
    );
    println!(
        "failover noticed after {moved:?} (fall x interval = {} ms)",
        u64::from(FALL) * INTERVAL_MS
    );
}
