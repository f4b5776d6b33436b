//! The routing `shared-round-robin` documents, on the SDK's native test
//! host: one sequence across every worker's instance, through the host's
//! shared counters.

use super::SharedRoundRobin;
use wasmroute_policy::PoolId;
use wasmroute_policy::testing::{TestBackend, TestConnection, TestHost, TestPolicy, TestRequest};

fn host(weights: &[u32]) -> TestHost {
    let backends = weights.iter().map(|&w| TestBackend::up().weight(w));
    TestHost::new().pool("web", backends)
}

fn turn(p: &mut TestPolicy<SharedRoundRobin>) -> Option<u32> {
    p.decide(&TestRequest::get("/")).target().map(|(_, b)| b)
}

#[test]
fn two_workers_follow_one_sequence() {
    let host = host(&[1, 1, 1]);
    let mut a = host.init::<SharedRoundRobin>().unwrap();
    let mut b = host.init::<SharedRoundRobin>().unwrap();
    let seq = [
        turn(&mut a),
        turn(&mut b),
        turn(&mut b),
        turn(&mut a),
        turn(&mut b),
    ];
    assert_eq!(seq, [0, 1, 2, 0, 1].map(Some));
    assert_eq!(host.counter(0), 5, "one increment per decision");
}

#[test]
fn weights_5_1_1_across_workers() {
    let host = host(&[5, 1, 1]);
    let mut workers = [
        host.init::<SharedRoundRobin>().unwrap(),
        host.init().unwrap(),
    ];
    let seq: Vec<_> = (0..7).map(|i| turn(&mut workers[i % 2])).collect();
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0].map(Some));
}

#[test]
fn the_slot_is_configurable_and_its_value_survives_instances() {
    let host = host(&[1, 1, 1]).config("slot", 5i64);
    host.set_counter(5, 4);
    let mut p = host.init::<SharedRoundRobin>().unwrap();
    assert_eq!(turn(&mut p), Some(1), "cursor 4 of a period of 3");
    assert_eq!((host.counter(5), host.counter(0)), (5, 0));
    // A new instance (a reload) continues the sequence.
    let mut reloaded = host.init::<SharedRoundRobin>().unwrap();
    assert_eq!(turn(&mut reloaded), Some(2));
}

#[test]
fn unhealthy_backends_and_retries() {
    let host = host(&[1, 1, 1]);
    let mut p = host.init::<SharedRoundRobin>().unwrap();
    host.update(PoolId(0), 1, |b| b.healthy(false));
    assert_eq!(
        [turn(&mut p), turn(&mut p), turn(&mut p)],
        [0, 2, 0].map(Some)
    );
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 2)]);
    assert_eq!(p.decide(&retry).target(), Some((PoolId(0), 0)));
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 0)]);
    assert_eq!(p.decide(&retry).target(), Some((PoolId(0), 2)));
    host.update(PoolId(0), 0, |b| b.healthy(false));
    host.update(PoolId(0), 2, |b| b.healthy(false));
    assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
}

#[test]
fn connections_share_the_sequence_with_requests() {
    let host = host(&[1, 1]);
    let mut p = host.init::<SharedRoundRobin>().unwrap();
    let conn = TestConnection::new();
    assert_eq!(p.decide_connection(&conn).target(), Some((PoolId(0), 0)));
    assert_eq!(turn(&mut p), Some(1));
    assert_eq!(p.decide_connection(&conn).target(), Some((PoolId(0), 0)));
    let retry = conn.retry_after(&[(PoolId(0), 1)]);
    assert_eq!(p.decide_connection(&retry).target(), Some((PoolId(0), 0)));
}

#[test]
fn config_errors_at_init() {
    let host = host(&[1]);
    let err = |h: TestHost| h.init::<SharedRoundRobin>().err().unwrap();
    assert_eq!(
        err(host.clone().config("slot", 64i64)),
        "slot: slot 64 out of range: the host offers slots 0..64"
    );
    assert_eq!(
        err(host.clone().config("slot", -1i64)),
        "slot: must be between 0 and 4294967295, got -1"
    );
    assert_eq!(
        err(host.config("slots", 1i64)),
        "slots: unknown key (known keys: pool, slot)"
    );
}

// A pool re-resolved between instances (a DNS answer changed, a config
// commit): the host builds new instances over the new pool while the
// shared cursor keeps counting; an index may then name another backend.

/// A host over backends at `addresses` whose cursor (slot 0) is where
/// `before` left it: the next instance after a commit.
fn after(before: &TestHost, addresses: &[&str]) -> TestHost {
    let backends = addresses.iter().map(|a| TestBackend::up().address(a));
    let next = TestHost::new().pool("web", backends);
    next.set_counter(0, before.counter(0));
    next
}

#[test]
fn the_cursor_carries_over_to_a_grown_or_shrunk_pool_in_range() {
    let (a, b, c, d) = ("10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80", "10.9.0.4:80");
    let old = after(&TestHost::new(), &[a, b, c]);
    let mut p = old.init::<SharedRoundRobin>().unwrap();
    assert_eq!([turn(&mut p), turn(&mut p)], [0, 1].map(Some));
    // Cursor 2 of a period of 4: the new backend in its turn.
    let grown = after(&old, &[a, b, c, d]);
    let mut p = grown.init::<SharedRoundRobin>().unwrap();
    let seq: Vec<_> = (0..5).map(|_| turn(&mut p)).collect();
    assert_eq!(seq, [2, 3, 0, 1, 2].map(Some));
    // Cursor 7 of a period of 2, then the only backend left.
    let shrunk = after(&grown, &[d, b]);
    let mut p = shrunk.init::<SharedRoundRobin>().unwrap();
    assert_eq!([turn(&mut p), turn(&mut p)], [1, 0].map(Some));
    let mut p = after(&shrunk, &[b]).init::<SharedRoundRobin>().unwrap();
    assert_eq!([turn(&mut p), turn(&mut p)], [0, 0].map(Some));
}

#[test]
fn an_empty_pool_is_503_and_closes_connections_whatever_the_cursor() {
    let old = host(&[1, 1, 1]);
    old.set_counter(0, i64::MAX);
    let mut p = after(&old, &[]).init::<SharedRoundRobin>().unwrap();
    assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
    assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
    // The cursor wrapped to negative: still one turn each, in range.
    let mut p = after(p.host(), &["10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80"])
        .init::<SharedRoundRobin>()
        .unwrap();
    let mut seq: Vec<_> = (0..3).map(|_| turn(&mut p)).collect();
    seq.sort();
    assert_eq!(seq, [0, 1, 2].map(Some));
}
