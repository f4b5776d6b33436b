//! The routing `least-connections` documents, on the SDK's native test
//! host.

use super::LeastConnections;
use wasmroute_policy::PoolId;
use wasmroute_policy::testing::{TestBackend, TestConnection, TestHost, TestPolicy, TestRequest};

fn policy(backends: impl IntoIterator<Item = TestBackend>) -> TestPolicy<LeastConnections> {
    TestHost::new().pool("web", backends).init().unwrap()
}

fn target(p: &mut TestPolicy<LeastConnections>, req: &TestRequest) -> Option<u32> {
    p.decide(req).target().map(|(_, b)| b)
}

#[test]
fn the_fewest_in_flight_wins() {
    let up = TestBackend::up;
    let mut p = policy([up().active(3), up().active(1), up().active(2)]);
    for _ in 0..20 {
        assert_eq!(target(&mut p, &TestRequest::get("/")), Some(1));
    }
    // The counts are live: the host's state at each decision.
    p.host().update(PoolId(0), 1, |b| b.active(5));
    assert_eq!(target(&mut p, &TestRequest::get("/")), Some(2));
}

#[test]
fn in_flight_counts_per_unit_of_weight() {
    let up = TestBackend::up;
    // 2/1 against 3/4: the heavier backend is less loaded.
    let mut p = policy([up().active(2), up().active(3).weight(4)]);
    assert_eq!(target(&mut p, &TestRequest::get("/")), Some(1));
    p.host().update(PoolId(0), 1, |b| b.active(9));
    assert_eq!(target(&mut p, &TestRequest::get("/")), Some(0), "9/4 > 2/1");
}

#[test]
fn ties_are_broken_by_weight() {
    let mut p = policy([
        TestBackend::up(),
        TestBackend::up().weight(3),
        TestBackend::down(),
    ]);
    let mut counts = [0usize; 3];
    for _ in 0..4000 {
        counts[target(&mut p, &TestRequest::get("/")).unwrap() as usize] += 1;
    }
    assert_eq!(counts[2], 0);
    assert!(
        counts[0].abs_diff(1000) < 100 && counts[1].abs_diff(3000) < 100,
        "{counts:?}"
    );
}

#[test]
fn a_retry_goes_to_a_backend_not_tried() {
    let up = TestBackend::up;
    let mut p = policy([up().active(4), up().active(1), up().active(2)]);
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 1)]);
    assert_eq!(target(&mut p, &retry), Some(2));
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 1), (PoolId(0), 2)]);
    assert_eq!(target(&mut p, &retry), Some(0));
    let all = TestRequest::get("/").retry_after(&[(PoolId(0), 0), (PoolId(0), 1), (PoolId(0), 2)]);
    assert_eq!(
        target(&mut p, &all),
        Some(1),
        "all tried: the least loaded again"
    );
}

#[test]
fn no_healthy_backend_is_503_or_a_rejected_connection() {
    let mut p = policy([TestBackend::down(), TestBackend::up().ejected(true)]);
    assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
    assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
}

#[test]
fn connections_go_to_the_backend_holding_the_fewest() {
    let up = TestBackend::up;
    let mut p = policy([up().active(10), up().active(7), up().active(12)]);
    assert_eq!(
        p.decide_connection(&TestConnection::new()).target(),
        Some((PoolId(0), 1))
    );
    let retry = TestConnection::new().retry_after(&[(PoolId(0), 1)]);
    assert_eq!(p.decide_connection(&retry).target(), Some((PoolId(0), 0)));
}

#[test]
fn pool_key_and_config_errors() {
    let host = TestHost::new()
        .pool("web", [TestBackend::up()])
        .pool("db", [TestBackend::up().active(1), TestBackend::up()]);
    let mut p = host
        .clone()
        .config("pool", "db")
        .init::<LeastConnections>()
        .unwrap();
    assert_eq!(
        p.decide(&TestRequest::get("/")).target(),
        Some((PoolId(1), 1))
    );
    let err = host.config("balance", "x").init::<LeastConnections>().err();
    assert_eq!(
        err.as_deref(),
        Some("balance: unknown key (known keys: pool)")
    );
}

// A pool re-resolved between instances (a DNS answer changed, a config
// commit): the host builds new instances over the new pool, in which an
// index may name another backend.

#[test]
fn a_new_instance_sends_to_the_least_loaded_of_the_grown_or_shrunk_pool() {
    let (a, b, c) = ("10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80");
    let at = |a: &str, active| TestBackend::up().address(a).active(active);
    let req = TestRequest::get("/");
    let mut old = policy([at(a, 5), at(b, 3)]);
    assert_eq!(target(&mut old, &req), Some(1));
    // The idle newcomer takes every request.
    let mut grown = policy([at(a, 5), at(b, 3), at(c, 0)]);
    for _ in 0..10 {
        assert_eq!(target(&mut grown, &req), Some(2));
    }
    // `b` gone: the least loaded of the rest, at its new index.
    let mut shrunk = policy([at(a, 5), at(c, 4)]);
    for _ in 0..10 {
        assert_eq!(target(&mut shrunk, &req), Some(1));
    }
    let retry = req.retry_after(&[(PoolId(0), 2)]);
    assert_eq!(target(&mut shrunk, &retry), Some(1));
}

#[test]
fn an_empty_pool_is_503_and_closes_connections() {
    let mut p = policy([]);
    assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 0)]);
    assert_eq!(p.decide(&retry).status(), Some(503));
    assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
}
