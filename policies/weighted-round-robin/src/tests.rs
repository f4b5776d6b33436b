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
