//! The routing `weighted-random-by-utilization` documents, on the SDK's native test host, and its
//! config checks.

use super::*;
use wasmroute_policy::ConfigValue;

fn init(config: &[(&str, ConfigValue)]) -> Result<ByUtilization, String> {
    let ctx = InitContext::from_parts(&["web"], config);
    ByUtilization::init(&ctx)
}

#[test]
fn config_is_checked() {
    let p = init(&[
        ("max_report_age_ms", ConfigValue::Integer(2000)),
        ("unreported_spare", ConfigValue::Float(0.25)),
    ])
    .unwrap();
    assert_eq!(p.how.max_age_ms, 2000);
    assert_eq!(p.how.unreported_spare, 0.25);
    assert_eq!(p.how.min_spare, 0.01);
    let err = |c: &[(&str, ConfigValue)]| init(c).err().unwrap();
    assert_eq!(
        err(&[("min_spare", ConfigValue::Float(1.5))]),
        "min_spare: must be between 0 and 1, got 1.5"
    );
    assert!(
        err(&[("max_report_age_ms", ConfigValue::Integer(0))]).starts_with("max_report_age_ms: ")
    );
    assert!(err(&[("pool", ConfigValue::Text("nope".into()))]).starts_with("pool: unknown pool"));
    assert!(err(&[("max_age", ConfigValue::Integer(1))]).starts_with("max_age: unknown key"));
}

mod routing {
    use super::super::ByUtilization;
    use wasmroute_policy::PoolId;
    use wasmroute_policy::testing::{
        TestBackend, TestConnection, TestHost, TestPolicy, TestRequest,
    };

    fn policy(host: TestHost) -> TestPolicy<ByUtilization> {
        host.init().unwrap()
    }

    fn web(backends: impl IntoIterator<Item = TestBackend>) -> TestHost {
        TestHost::new().pool("web", backends)
    }

    fn tally(p: &mut TestPolicy<ByUtilization>, n: usize) -> Vec<usize> {
        let mut counts = vec![0; 3];
        for _ in 0..n {
            let (_, b) = p
                .decide(&TestRequest::get("/"))
                .target()
                .expect("forwarded");
            counts[b as usize] += 1;
        }
        counts
    }

    /// Within four standard deviations of a binomial count (the draws are
    /// seeded: the same on every run).
    fn near(count: usize, expected: usize) -> bool {
        count.abs_diff(expected) as f64 <= 4.0 * (expected as f64).sqrt() + 10.0
    }

    #[test]
    fn traffic_follows_weight_times_spare_capacity() {
        let up = TestBackend::up;
        // Spare 1.0, 0.5 (memory counts) and 0.05 x weight 2 = 0.1.
        let mut p = policy(web([
            up().load(0.0, 0.0),
            up().load(0.1, 0.5),
            up().weight(2).load(0.95, 0.2),
        ]));
        let counts = tally(&mut p, 16_000);
        let expected = [10_000, 5_000, 1_000];
        assert!(
            counts.iter().zip(expected).all(|(&c, e)| near(c, e)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_saturated_backend_keeps_min_spare() {
        let up = TestBackend::up;
        let host = web([up().load(1.0, 1.0), up().load(0.0, 0.0)]).config("min_spare", 0.1);
        let counts = tally(&mut policy(host), 11_000);
        assert!(
            near(counts[0], 1000) && near(counts[1], 10_000),
            "{counts:?}"
        );
    }

    #[test]
    fn stale_and_missing_reports_count_as_unreported_spare() {
        let up = TestBackend::up;
        let host = web([up().load(0.0, 0.0), up().load_aged(0.0, 0.0, 2001), up()])
            .config("max_report_age_ms", 2000i64)
            .config("unreported_spare", 0.25);
        let counts = tally(&mut policy(host), 15_000);
        let expected = [10_000, 2_500, 2_500];
        assert!(
            counts.iter().zip(expected).all(|(&c, e)| near(c, e)),
            "{counts:?}"
        );
    }

    #[test]
    fn without_any_fresh_report_plain_weights() {
        let up = TestBackend::up;
        let host = web([up().weight(3).load_aged(0.99, 0.99, 10_000), up()]);
        let counts = tally(&mut policy(host), 8000);
        assert!(near(counts[0], 6000) && near(counts[1], 2000), "{counts:?}");
    }

    #[test]
    fn unhealthy_and_tried_backends_are_skipped() {
        let up = TestBackend::up;
        let host = web([
            up().load(0.0, 0.0),
            up().load(0.0, 0.0),
            up().healthy(false).load(0.0, 0.0),
        ]);
        let mut p = policy(host);
        let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 0)]);
        for _ in 0..50 {
            assert_eq!(p.decide(&retry).target(), Some((PoolId(0), 1)));
        }
        let conn = TestConnection::new().retry_after(&[(PoolId(0), 1)]);
        for _ in 0..50 {
            assert_eq!(p.decide_connection(&conn).target(), Some((PoolId(0), 0)));
        }
        p.host().update(PoolId(0), 0, |b| b.healthy(false));
        p.host().update(PoolId(0), 1, |b| b.ejected(true));
        assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
        assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
    }

    // A pool re-resolved between instances (a DNS answer changed, a config
    // commit): the host builds new instances over the new pool, in which an
    // index may name another backend.

    #[test]
    fn a_grown_or_shrunk_pool_is_drawn_by_its_own_reports_in_range() {
        let (a, b, c) = ("10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80");
        let at = |a: &str| TestBackend::up().address(a);
        // The newcomer reports idle: twice the share of the half-busy.
        let grown = web([
            at(a).load(0.5, 0.5),
            at(b).load(0.5, 0.5),
            at(c).load(0.0, 0.0),
        ]);
        let counts = tally(&mut policy(grown), 8000);
        let expected = [2000, 2000, 4000];
        assert!(
            counts.iter().zip(expected).all(|(&c, e)| near(c, e)),
            "{counts:?}"
        );
        // `a` gone: `c` at index 0 now, `b` at 1; nothing at 2.
        let shrunk = web([at(c).load(0.0, 0.0), at(b).load(0.5, 0.5)]);
        let mut p = policy(shrunk);
        let counts = tally(&mut p, 6000);
        assert!(near(counts[0], 4000) && near(counts[1], 2000), "{counts:?}");
        assert_eq!(counts[2], 0);
        let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 2)]);
        assert!(matches!(
            p.decide(&retry).target(),
            Some((PoolId(0), 0..=1))
        ));
    }

    #[test]
    fn an_empty_pool_is_503_and_closes_connections() {
        let mut p = policy(web([]));
        assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
        let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 0)]);
        assert_eq!(p.decide(&retry).status(), Some(503));
        assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
    }
}
