//! The routing `random` documents, on the SDK's native test host (whose
//! generator is seeded, so every run draws the same numbers).

use super::Random;
use wasmroute_policy::PoolId;
use wasmroute_policy::testing::{TestBackend, TestConnection, TestHost, TestPolicy, TestRequest};

fn policy(host: TestHost) -> TestPolicy<Random> {
    host.init().unwrap()
}

fn weighted(weights: &[u32]) -> TestHost {
    TestHost::new().pool("web", weights.iter().map(|&w| TestBackend::up().weight(w)))
}

/// How often each backend was chosen in `n` decisions of `req`.
fn tally(p: &mut TestPolicy<Random>, req: &TestRequest, n: usize, size: usize) -> Vec<usize> {
    let mut counts = vec![0; size];
    for _ in 0..n {
        let (_, backend) = p.decide(req).target().expect("forwarded");
        counts[backend as usize] += 1;
    }
    counts
}

fn within(count: usize, expected: usize) -> bool {
    count.abs_diff(expected) * 10 <= expected
}

#[test]
fn chosen_in_proportion_to_weight() {
    let mut p = policy(weighted(&[1, 3, 6]));
    let counts = tally(&mut p, &TestRequest::get("/"), 10_000, 3);
    let expected = [1000, 3000, 6000];
    assert!(
        counts.iter().zip(expected).all(|(&c, e)| within(c, e)),
        "{counts:?}"
    );
}

#[test]
fn weighted_false_is_uniform() {
    let mut p = policy(weighted(&[1, 9]).config("weighted", false));
    let counts = tally(&mut p, &TestRequest::get("/"), 10_000, 2);
    assert!(
        within(counts[0], 5000) && within(counts[1], 5000),
        "{counts:?}"
    );
}

#[test]
fn never_an_unhealthy_or_tried_backend() {
    for weighted_config in [true, false] {
        let host = weighted(&[1, 1, 1, 1]).config("weighted", weighted_config);
        host.update(PoolId(0), 1, |b| b.healthy(false));
        host.update(PoolId(0), 3, |b| b.ejected(true));
        let mut p = policy(host);
        let counts = tally(&mut p, &TestRequest::get("/"), 1000, 4);
        assert_eq!((counts[1], counts[3]), (0, 0), "{counts:?}");
        assert!(
            within(counts[0], 500) && within(counts[2], 500),
            "{counts:?}"
        );
        let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 0)]);
        assert_eq!(tally(&mut p, &retry, 200, 4), [0, 0, 200, 0]);
        p.host().update(PoolId(0), 0, |b| b.healthy(false));
        p.host().update(PoolId(0), 2, |b| b.healthy(false));
        assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
    }
}

#[test]
fn the_same_seed_draws_the_same_backends() {
    let draws = |host: TestHost| {
        let mut p = policy(host);
        let req = TestRequest::get("/");
        (0..32)
            .map(|_| p.decide(&req).target().unwrap().1)
            .collect::<Vec<_>>()
    };
    let seeded = |seed| weighted(&[1, 1, 1, 1]).seed(seed);
    assert_eq!(draws(seeded(7)), draws(seeded(7)));
    assert_ne!(draws(seeded(7)), draws(seeded(8)));
}

#[test]
fn connections_are_drawn_the_same_way() {
    let mut p = policy(weighted(&[1, 1]));
    let retry = TestConnection::new().retry_after(&[(PoolId(0), 1)]);
    for _ in 0..50 {
        assert_eq!(p.decide_connection(&retry).target(), Some((PoolId(0), 0)));
    }
    let mut seen = [0; 2];
    for _ in 0..200 {
        let (_, b) = p
            .decide_connection(&TestConnection::new())
            .target()
            .unwrap();
        seen[b as usize] += 1;
    }
    assert!(within(seen[0], 100) && within(seen[1], 100), "{seen:?}");
    p.host().update(PoolId(0), 0, |b| b.healthy(false));
    p.host().update(PoolId(0), 1, |b| b.healthy(false));
    assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
}

#[test]
fn pool_key_and_config_errors() {
    let host = weighted(&[1]).pool("api", [TestBackend::down(), TestBackend::up()]);
    let mut p = policy(host.clone().config("pool", "api"));
    assert_eq!(
        p.decide(&TestRequest::get("/")).target(),
        Some((PoolId(1), 1))
    );
    let err = |h: TestHost| h.init::<Random>().err().unwrap();
    assert_eq!(
        err(host.clone().config("weighted", "yes")),
        "weighted: expected a boolean, found the string \"yes\""
    );
    assert_eq!(
        err(host.config("seed", 1i64)),
        "seed: unknown key (known keys: pool, weighted)"
    );
}

// A pool re-resolved between instances (a DNS answer changed, a config
// commit): the host builds new instances over the new pool, in which an
// index may name another backend.

/// A host over backends at `addresses` (each keeps its stable id).
fn at(addresses: &[&str], weighted_config: bool) -> TestHost {
    let backends = addresses.iter().map(|a| TestBackend::up().address(a));
    let host = TestHost::new().pool("web", backends);
    host.config("weighted", weighted_config)
}

#[test]
fn draws_cover_exactly_the_grown_or_shrunk_pool() {
    let (a, b, c, d) = ("10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80", "10.9.0.4:80");
    let req = TestRequest::get("/");
    for weighted_config in [true, false] {
        let mut grown = policy(at(&[a, b, c, d], weighted_config));
        let counts = tally(&mut grown, &req, 4000, 4);
        assert!(counts.iter().all(|&n| within(n, 1000)), "{counts:?}");
        // `tally` panics on an index past the pool's end.
        let mut shrunk = policy(at(&[d, b], weighted_config));
        let counts = tally(&mut shrunk, &req, 2000, 2);
        assert!(counts.iter().all(|&n| within(n, 1000)), "{counts:?}");
        let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 3)]);
        tally(&mut shrunk, &retry, 100, 2);
    }
}

#[test]
fn an_empty_pool_is_503_and_closes_connections() {
    for weighted_config in [true, false] {
        let mut p = policy(at(&[], weighted_config));
        assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
        let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 0)]);
        assert_eq!(p.decide(&retry).status(), Some(503));
        assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
    }
}
