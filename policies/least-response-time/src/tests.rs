//! The routing `least-response-time` documents, on the SDK's native test
//! host: two distinct healthy backends drawn, the lower
//! `ewma * (in flight + 1) / weight` wins.

use super::LeastResponseTime;
use wasmroute_policy::PoolId;
use wasmroute_policy::testing::{TestBackend, TestConnection, TestHost, TestPolicy, TestRequest};

fn policy(backends: impl IntoIterator<Item = TestBackend>) -> TestPolicy<LeastResponseTime> {
    TestHost::new().pool("web", backends).init().unwrap()
}

fn tally(p: &mut TestPolicy<LeastResponseTime>, req: &TestRequest, n: usize) -> Vec<usize> {
    let mut counts = vec![0; 4];
    for _ in 0..n {
        counts[p.decide(req).target().expect("forwarded").1 as usize] += 1;
    }
    counts
}

#[test]
fn of_two_backends_the_cheaper_always_wins() {
    let up = TestBackend::up;
    let mut p = policy([up().ewma_us(1000), up().ewma_us(100)]);
    assert_eq!(tally(&mut p, &TestRequest::get("/"), 100), [0, 100, 0, 0]);
    // In flight counts: 100 us x 21 is more than 1000 us x 1.
    p.host().update(PoolId(0), 1, |b| b.active(20));
    assert_eq!(tally(&mut p, &TestRequest::get("/"), 100), [100, 0, 0, 0]);
    // And weight divides: 2100 / 4 < 1000.
    p.host().update(PoolId(0), 1, |b| b.weight(4));
    assert_eq!(tally(&mut p, &TestRequest::get("/"), 100), [0, 100, 0, 0]);
}

#[test]
fn the_slowest_of_several_loses_every_draw() {
    let up = TestBackend::up;
    let mut p = policy([
        up().ewma_us(200),
        up().ewma_us(200),
        up().ewma_us(200),
        up().ewma_us(5000),
    ]);
    let counts = tally(&mut p, &TestRequest::get("/"), 3000);
    assert_eq!(counts[3], 0, "{counts:?}");
    assert!(
        counts[..3].iter().all(|&c| c.abs_diff(1000) < 150),
        "{counts:?}"
    );
}

#[test]
fn an_unmeasured_backend_counts_as_the_pool_mean() {
    // Backend 2 never answered: it reports (300 + 900) / 2 = 600, so it
    // beats 900 and loses to 300.
    let up = TestBackend::up;
    let mut p = policy([up().ewma_us(300), up().ewma_us(900), up()]);
    let counts = tally(&mut p, &TestRequest::get("/"), 3000);
    // Backend 0 wins both its pairs, 2 wins against 1 only, 1 never.
    assert_eq!(counts[1], 0, "{counts:?}");
    assert!(
        counts[0].abs_diff(2000) < 150 && counts[2].abs_diff(1000) < 150,
        "{counts:?}"
    );
}

#[test]
fn unhealthy_and_tried_backends_are_skipped() {
    let up = TestBackend::up;
    let mut p = policy([
        up().ewma_us(100),
        up().ewma_us(900),
        up().ewma_us(50).healthy(false),
    ]);
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 0)]);
    assert_eq!(
        tally(&mut p, &retry, 50),
        [0, 50, 0, 0],
        "the only fresh healthy one"
    );
    p.host().update(PoolId(0), 0, |b| b.healthy(false));
    p.host().update(PoolId(0), 1, |b| b.ejected(true));
    assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
    assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
}

#[test]
fn connections_use_the_same_draw() {
    let up = TestBackend::up;
    let mut p = policy([up().ewma_us(800).active(2), up().ewma_us(700).active(3)]);
    // 800 x 3 = 2400 against 700 x 4 = 2800.
    for _ in 0..20 {
        assert_eq!(
            p.decide_connection(&TestConnection::new()).target(),
            Some((PoolId(0), 0))
        );
    }
    let retry = TestConnection::new().retry_after(&[(PoolId(0), 0)]);
    assert_eq!(p.decide_connection(&retry).target(), Some((PoolId(0), 1)));
}

#[test]
fn config_errors_at_init() {
    let host = TestHost::new().pool("web", [TestBackend::up()]);
    let err = host
        .clone()
        .config("pool", "api")
        .init::<LeastResponseTime>()
        .err();
    assert_eq!(
        err.as_deref(),
        Some("pool: unknown pool `api`: this listener's pools are web")
    );
    let err = host.config("decay", 0.2).init::<LeastResponseTime>().err();
    assert_eq!(
        err.as_deref(),
        Some("decay: unknown key (known keys: pool)")
    );
}

// A pool re-resolved between instances (a DNS answer changed, a config
// commit): the host builds new instances over the new pool, in which an
// index may name another backend.

#[test]
fn a_newcomer_gets_its_share_and_a_shrunk_pool_stays_in_range() {
    let (a, b, c) = ("10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80");
    let at = |a: &str| TestBackend::up().address(a);
    let req = TestRequest::get("/");
    // The newcomer has no latency yet: seeded with the others' mean, it
    // ties with them (neither flooded nor starved).
    let mut grown = policy([at(a).ewma_us(1000), at(b).ewma_us(1000), at(c)]);
    let counts = tally(&mut grown, &req, 900);
    assert!((200..400).contains(&counts[2]), "{counts:?}");
    assert_eq!(counts[3], 0);
    // `a` gone, `c` now measured fast: it wins every draw, at index 0.
    let mut shrunk = policy([at(c).ewma_us(100), at(b).ewma_us(1000)]);
    assert_eq!(tally(&mut shrunk, &req, 100), [100, 0, 0, 0]);
    let retry = req.retry_after(&[(PoolId(0), 2)]);
    assert_eq!(tally(&mut shrunk, &retry, 10), [10, 0, 0, 0]);
}

#[test]
fn an_empty_pool_is_503_and_closes_connections() {
    let mut p = policy([]);
    assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
    let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 0)]);
    assert_eq!(p.decide(&retry).status(), Some(503));
    assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
}
