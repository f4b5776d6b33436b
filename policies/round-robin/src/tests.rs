//! The routing `round-robin` documents, on the SDK's native test host.

use super::RoundRobinPolicy;
use wasmroute_policy::testing::{TestBackend, TestConnection, TestHost, TestPolicy, TestRequest};
use wasmroute_policy::{Decision, PoolId};

fn policy(backends: impl IntoIterator<Item = TestBackend>) -> TestPolicy<RoundRobinPolicy> {
    TestHost::new().pool("web", backends).init().unwrap()
}

/// The backend index of each of `n` plain decisions (panics on an answer).
fn turns(p: &mut TestPolicy<RoundRobinPolicy>, n: usize) -> Vec<u32> {
    let target = |d: Decision| d.target().expect("forwarded").1;
    (0..n)
        .map(|_| target(p.decide(&TestRequest::get("/"))))
        .collect()
}

#[test]
fn one_turn_each_in_pool_order_whatever_the_weights() {
    let mut p = policy([
        TestBackend::up().weight(5),
        TestBackend::up(),
        TestBackend::up(),
    ]);
    assert_eq!(turns(&mut p, 7), [0, 1, 2, 0, 1, 2, 0]);
    let d = p.decide(&TestRequest::get("/"));
    assert_eq!(d.target(), Some((PoolId(0), 1)));
}

#[test]
fn unhealthy_backends_are_skipped_and_rejoin() {
    let mut p = policy([
        TestBackend::up(),
        TestBackend::down(),
        TestBackend::up().ejected(true),
    ]);
    assert_eq!(turns(&mut p, 3), [0, 0, 0]);
    p.host().update(PoolId(0), 1, |b| b.healthy(true));
    p.host().update(PoolId(0), 2, |b| b.ejected(false));
    assert_eq!(turns(&mut p, 4), [1, 2, 0, 1]);
}

#[test]
fn no_healthy_backend_is_503() {
    let mut p = policy([TestBackend::down(), TestBackend::down()]);
    assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
    p.host().update(PoolId(0), 1, |b| b.healthy(true));
    assert_eq!(turns(&mut p, 2), [1, 1]);
}

#[test]
fn a_retry_goes_to_a_backend_not_tried() {
    let mut p = policy([TestBackend::up(), TestBackend::up(), TestBackend::up()]);
    assert_eq!(turns(&mut p, 1), [0]);
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 0), (PoolId(0), 1)]);
    assert_eq!(p.decide(&retry).target(), Some((PoolId(0), 2)));
    // Every healthy backend tried: any healthy one again, in turn.
    let all = TestRequest::get("/").retry_after(&[(PoolId(0), 0), (PoolId(0), 1), (PoolId(0), 2)]);
    assert_eq!(p.decide(&all).target(), Some((PoolId(0), 0)));
}

#[test]
fn the_pool_key_picks_the_pool() {
    let host = TestHost::new()
        .pool("web", [TestBackend::up()])
        .pool("api", [TestBackend::down(), TestBackend::up()])
        .config("pool", "api");
    let mut p = host.init::<RoundRobinPolicy>().unwrap();
    assert_eq!(
        p.decide(&TestRequest::get("/")).target(),
        Some((PoolId(1), 1))
    );
}

#[test]
fn config_errors_at_init() {
    let host = TestHost::new().pool("web", [TestBackend::up()]);
    let err = host
        .clone()
        .config("pool", "nope")
        .init::<RoundRobinPolicy>()
        .err();
    assert_eq!(
        err.as_deref(),
        Some("pool: unknown pool `nope`: this listener's pools are web")
    );
    let err = host
        .clone()
        .config("pools", "web")
        .init::<RoundRobinPolicy>()
        .err();
    assert_eq!(
        err.as_deref(),
        Some("pools: unknown key (known keys: pool)")
    );
    let err = host.config("pool", 1i64).init::<RoundRobinPolicy>().err();
    assert_eq!(
        err.as_deref(),
        Some("pool: expected a string, found the integer 1")
    );
}

#[test]
fn connections_take_turns_and_are_rejected_without_a_backend() {
    let mut p = policy([TestBackend::up(), TestBackend::up()]);
    let conn = TestConnection::new();
    let seen: Vec<_> = (0..3)
        .map(|_| p.decide_connection(&conn).target())
        .collect();
    assert_eq!(
        seen,
        [
            Some((PoolId(0), 0)),
            Some((PoolId(0), 1)),
            Some((PoolId(0), 0))
        ]
    );
    let retry = conn.clone().retry_after(&[(PoolId(0), 1)]);
    assert_eq!(p.decide_connection(&retry).target(), Some((PoolId(0), 0)));
    p.host().update(PoolId(0), 0, |b| b.healthy(false));
    p.host().update(PoolId(0), 1, |b| b.healthy(false));
    assert_eq!(p.decide_connection(&conn).target(), None);
}

// A pool re-resolved between instances (a DNS answer changed, a config
// commit): the host builds new instances over the new pool, in which an
// index may name another backend.

/// Backends at these addresses (each keeps its stable id in every pool).
fn at(addresses: &[&str]) -> Vec<TestBackend> {
    let up = |a: &&str| TestBackend::up().address(a);
    addresses.iter().map(up).collect()
}

#[test]
fn a_new_instance_rotates_over_exactly_the_grown_or_shrunk_pool() {
    let mut old = policy(at(&["10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80"]));
    assert_eq!(turns(&mut old, 2), [0, 1]);
    let grown = at(&["10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80", "10.9.0.4:80"]);
    assert_eq!(turns(&mut policy(grown), 5), [0, 1, 2, 3, 0]);
    let mut shrunk = policy(at(&["10.9.0.3:80"]));
    assert_eq!(turns(&mut shrunk, 2), [0, 0]);
    // A retry naming an index of the larger pool stays in this one.
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 2)]);
    assert_eq!(shrunk.decide(&retry).target(), Some((PoolId(0), 0)));
}

#[test]
fn an_empty_pool_is_503_and_closes_connections() {
    let mut p = policy([]);
    assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 1)]);
    assert_eq!(p.decide(&retry).status(), Some(503));
    let conn = TestConnection::new();
    assert_eq!(p.decide_connection(&conn).target(), None);
}
