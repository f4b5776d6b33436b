//! The routing `weighted-round-robin` documents, on the SDK's native test
//! host.

use super::WeightedRoundRobin;
use wasmroute_policy::PoolId;
use wasmroute_policy::testing::{TestBackend, TestConnection, TestHost, TestPolicy, TestRequest};

fn policy(weights: &[u32]) -> TestPolicy<WeightedRoundRobin> {
    let backends = weights.iter().map(|&w| TestBackend::up().weight(w));
    TestHost::new().pool("web", backends).init().unwrap()
}

/// The backends of `n` decisions of `req` (`None` for an answer).
fn turns(p: &mut TestPolicy<WeightedRoundRobin>, req: &TestRequest, n: usize) -> Vec<Option<u32>> {
    (0..n)
        .map(|_| p.decide(req).target().map(|(_, b)| b))
        .collect()
}

#[test]
fn weights_5_1_1_interleave_as_documented() {
    let mut p = policy(&[5, 1, 1]);
    let seq = turns(&mut p, &TestRequest::get("/"), 14);
    let a_a_b_a_c_a_a = [0, 0, 1, 0, 2, 0, 0].map(Some);
    assert_eq!(seq[..7], a_a_b_a_c_a_a);
    assert_eq!(seq[7..], a_a_b_a_c_a_a, "the next period repeats it");
}

#[test]
fn equal_weights_rotate() {
    let mut p = policy(&[1, 1, 1]);
    assert_eq!(
        turns(&mut p, &TestRequest::get("/"), 4),
        [0, 1, 2, 0].map(Some)
    );
}

#[test]
fn an_unhealthy_backend_is_skipped_without_disturbing_the_others() {
    let mut p = policy(&[2, 1, 1]);
    p.host().update(PoolId(0), 2, |b| b.healthy(false));
    let seq = turns(&mut p, &TestRequest::get("/"), 6);
    assert_eq!(
        seq,
        [0, 1, 0, 0, 1, 0].map(Some),
        "weights 2:1 between the others"
    );
    p.host().update(PoolId(0), 0, |b| b.healthy(false));
    p.host().update(PoolId(0), 1, |b| b.healthy(false));
    assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
}

#[test]
fn a_retry_goes_to_a_backend_not_tried() {
    let mut p = policy(&[5, 1, 1]);
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 0)]);
    let seq = turns(&mut p, &retry, 4);
    assert!(seq.iter().all(|b| matches!(b, Some(1 | 2))), "{seq:?}");
    assert_eq!(seq, [1, 2, 1, 2].map(Some));
    // Another pool's tries do not count.
    let other = TestRequest::get("/").retry_after(&[(PoolId(1), 0)]);
    assert_eq!(turns(&mut policy(&[1, 1]), &other, 2), [0, 1].map(Some));
}

#[test]
fn connections_take_the_same_turns() {
    let mut p = policy(&[2, 1]);
    let conn = TestConnection::new();
    let seq: Vec<_> = (0..3)
        .map(|_| p.decide_connection(&conn).target())
        .collect();
    assert_eq!(seq, [0, 1, 0].map(|b| Some((PoolId(0), b))));
    let retry = conn.retry_after(&[(PoolId(0), 0)]);
    assert_eq!(p.decide_connection(&retry).target(), Some((PoolId(0), 1)));
    p.host().update(PoolId(0), 0, |b| b.healthy(false));
    p.host().update(PoolId(0), 1, |b| b.healthy(false));
    assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
}

#[test]
fn pool_key_and_config_errors() {
    let host = TestHost::new()
        .pool("web", [TestBackend::up()])
        .pool("api", [TestBackend::up()]);
    let mut p = host
        .clone()
        .config("pool", "api")
        .init::<WeightedRoundRobin>()
        .unwrap();
    assert_eq!(
        p.decide(&TestRequest::get("/")).target(),
        Some((PoolId(1), 0))
    );
    let err = host
        .clone()
        .config("pool", "db")
        .init::<WeightedRoundRobin>()
        .err();
    assert_eq!(
        err.as_deref(),
        Some("pool: unknown pool `db`: this listener's pools are web, api")
    );
    let err = host
        .config("weights", "1")
        .init::<WeightedRoundRobin>()
        .err();
    assert_eq!(
        err.as_deref(),
        Some("weights: unknown key (known keys: pool)")
    );
}

// A pool re-resolved between instances (a DNS answer changed, a config
// commit): the host builds new instances over the new pool, in which an
// index may name another backend.

/// Backends of these (address, weight)s; each keeps its stable id.
fn at(backends: &[(&str, u32)]) -> TestPolicy<WeightedRoundRobin> {
    let up = |&(a, w): &(&str, u32)| TestBackend::up().address(a).weight(w);
    TestHost::new()
        .pool("web", backends.iter().map(up))
        .init()
        .unwrap()
}

#[test]
fn a_new_instance_shares_turns_by_weight_over_the_grown_or_shrunk_pool() {
    let (a, b, c) = ("10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80");
    let req = TestRequest::get("/");
    let mut old = at(&[(a, 2), (b, 1)]);
    assert_eq!(turns(&mut old, &req, 3), [0, 1, 0].map(Some));
    let mut grown = at(&[(a, 2), (b, 1), (c, 1)]);
    let period = [0, 1, 2, 0].map(Some);
    assert_eq!(turns(&mut grown, &req, 8), [period, period].concat());
    // `b` gone and the rest reordered: `a` (now index 1) keeps its 2 of 3.
    let mut shrunk = at(&[(c, 1), (a, 2)]);
    assert_eq!(turns(&mut shrunk, &req, 6), [1, 0, 1, 1, 0, 1].map(Some));
}

#[test]
fn an_empty_pool_is_503_and_closes_connections() {
    let mut p = at(&[]);
    let req = TestRequest::get("/");
    assert_eq!(p.decide(&req).status(), Some(503));
    let retry = req.retry_after(&[(PoolId(0), 1)]);
    assert_eq!(p.decide(&retry).status(), Some(503));
    assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
}
