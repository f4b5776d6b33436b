//! The checker and passive ejection together, over real sockets: a
//! backend ejected by passive checking comes back on its active checks
//! long before its ejection time is over, and stays out while they fail.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

use super::HealthChange;
use super::active::check_backend;
use crate::config::{BackendConfig, HealthConfig, PassiveConfig, PoolConfig};
use crate::events::ServerEvent;
use crate::pool::outlier::Failure;
use crate::pool::{BackendPool, now_ms};

/// Longer than any test here may take, so only the checks can end it.
const EJECTION: Duration = Duration::from_secs(60);
/// Bounds one wait for a checker event.
const WAIT: Duration = Duration::from_secs(10);

/// Checks every 10 ms that bring a backend back after 2 passes and never
/// take it down (fall 1000), so the ejection is the only thing between
/// the backend and traffic.
fn checks(path: Option<&str>) -> HealthConfig {
    HealthConfig {
        path: path.map(str::to_owned),
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 1000,
        expect_status: (200, 399),
        expect_body: None,
        jitter: Duration::ZERO,
        steps: Vec::new(),
        port: None,
    }
}

/// A pool of `first` and a second backend (so 50% may be ejected), with
/// `health`; ejects `first` with three connect failures.
fn ejected_pool(first: SocketAddr, health: HealthConfig) -> Arc<BackendPool> {
    let backends = [first, "127.0.0.1:9".parse().unwrap()];
    let config = PoolConfig {
        name: "web".into(),
        backends: backends
            .iter()
            .map(|&address| BackendConfig { address, weight: 1 })
            .collect(),
        health: Some(health),
        passive: Some(PassiveConfig {
            consecutive_failures: 3,
            ejection_time: EJECTION,
            ..PassiveConfig::default()
        }),
        ..PoolConfig::default()
    };
    let pool = Arc::new(BackendPool::new(&config, None));
    let backend = &pool.backends[0];
    for _ in 0..3 {
        pool.outlier
            .record_failure(&backend.stats, first, Failure::Connect, now_ms());
    }
    assert!(backend.stats.ejected());
    pool
}

/// Starts checking the pool's first backend; its health events arrive on
/// the returned receiver.
fn start_checker(
    pool: &BackendPool,
    health: HealthConfig,
) -> (broadcast::Receiver<ServerEvent>, tokio::task::AbortHandle) {
    let (events, receiver) = broadcast::channel(16);
    pool.outlier.announce_to(events);
    let task = tokio::spawn(check_backend(
        Arc::clone(&pool.backends[0]),
        Arc::clone(&pool.outlier),
        Arc::new(health),
        pool.name.clone(),
    ));
    (receiver, task.abort_handle())
}

/// A listener that accepts and closes every connection: a TCP check
/// passes on the kernel's handshake; accepting keeps the queue from
/// filling.
async fn accepting_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    (address, accepting)
}

#[tokio::test]
async fn passing_checks_end_a_passive_ejection_long_before_its_time() {
    let (address, accepting) = accepting_listener().await;
    let pool = ejected_pool(address, checks(None));
    let (mut events, checker) = start_checker(&pool, checks(None));
    let event = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("no health event")
        .unwrap();
    let ServerEvent::BackendHealth {
        backend,
        change,
        reason,
        ..
    } = event
    else {
        panic!("{event:?}")
    };
    assert_eq!((backend, change), (address, HealthChange::Returned));
    assert_eq!(
        reason,
        "2 passing health checks in a row since the ejection"
    );
    let stats = &pool.backends[0].stats;
    assert!(!stats.ejected() && stats.healthy());
    assert!(
        stats.outlier.ejected_until_ms() > now_ms() + 30_000,
        "returned by the checks, not by the end of the ejection"
    );
    checker.abort();
    accepting.abort();
}

#[tokio::test]
async fn failing_checks_keep_the_backend_ejected() {
    // Accepts and closes at once: every HTTP check fails.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (checked, mut probes) = mpsc::unbounded_channel();
    let closing = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
            let _ = checked.send(());
        }
    });
    let health = checks(Some("/healthz"));
    let pool = ejected_pool(address, health.clone());
    let (mut events, checker) = start_checker(&pool, health);
    for _ in 0..6 {
        tokio::time::timeout(WAIT, probes.recv())
            .await
            .expect("the checker probes")
            .unwrap();
    }
    // The 6th probe reached the backend; the 5th has been judged.
    assert!(pool.backends[0].stats.ejected());
    assert!(
        matches!(
            events.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ),
        "no health change while the checks fail"
    );
    checker.abort();
    closing.abort();
}

#[tokio::test]
async fn the_check_that_brings_a_down_backend_up_ends_its_ejection_too() {
    let (address, accepting) = accepting_listener().await;
    let pool = ejected_pool(address, checks(None));
    // Killed under load: ejected by its failures, then down by its checks.
    let stats = &pool.backends[0].stats;
    stats.set_healthy(false);
    let (mut events, checker) = start_checker(&pool, checks(None));
    let mut changes = Vec::new();
    while changes.len() < 2 {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("only {changes:?}"))
            .unwrap();
        if let ServerEvent::BackendHealth { change, .. } = event {
            changes.push(change);
        }
    }
    assert_eq!(changes, [HealthChange::Up, HealthChange::Returned]);
    assert!(stats.healthy());
    checker.abort();
    accepting.abort();
}
