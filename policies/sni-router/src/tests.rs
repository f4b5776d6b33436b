//! The routing `sni-router` documents, on the SDK's native test host, and its
//! config checks.

use super::*;

#[test]
fn authority_host_drops_port_case_and_trailing_dot() {
    let host = |a: &str| authority_host(a.to_string());
    assert_eq!(host("A.Test:8443"), "a.test");
    assert_eq!(host("a.test."), "a.test");
    assert_eq!(host("a.test"), "a.test");
    assert_eq!(host("[::1]:80"), "[::1]");
}

mod routing {
    use super::super::SniRouter;
    use wasmroute_policy::PoolId;
    use wasmroute_policy::testing::{
        TestBackend, TestConnection, TestHost, TestPolicy, TestRequest,
    };

    const A: PoolId = PoolId(0);
    const B: PoolId = PoolId(1);
    const EU: PoolId = PoolId(2);
    const FALLBACK: PoolId = PoolId(3);

    fn host() -> TestHost {
        let two = || [TestBackend::up(), TestBackend::up()];
        TestHost::new()
            .pool("a", two())
            .pool("b", two())
            .pool("eu", two())
            .pool("fallback", two())
            .config("routes.a.test", "a")
            .config("routes.*.b.test", "b")
            .config("routes.*.eu.B.test", "eu")
    }

    fn with_default() -> TestPolicy<SniRouter> {
        host().config("default", "fallback").init().unwrap()
    }

    fn conn_pool(p: &mut TestPolicy<SniRouter>, conn: &TestConnection) -> Option<PoolId> {
        p.decide_connection(conn).target().map(|(pool, _)| pool)
    }

    #[test]
    fn connections_route_by_server_name_exact_then_longest_wildcard() {
        let mut p = with_default();
        let by_name = |p: &mut TestPolicy<SniRouter>, name: &str| {
            conn_pool(p, &TestConnection::new().server_name(name))
        };
        assert_eq!(by_name(&mut p, "a.test"), Some(A));
        assert_eq!(by_name(&mut p, "A.Test"), Some(A), "any case");
        assert_eq!(by_name(&mut p, "x.b.test"), Some(B));
        assert_eq!(by_name(&mut p, "x.y.b.test"), Some(B), "one or more labels");
        assert_eq!(
            by_name(&mut p, "x.eu.b.test"),
            Some(EU),
            "the longest suffix"
        );
        assert_eq!(by_name(&mut p, "eu.b.test"), Some(B));
        assert_eq!(by_name(&mut p, "b.test"), Some(FALLBACK), "* is not empty");
        assert_eq!(by_name(&mut p, "x.a.test"), Some(FALLBACK));
        assert_eq!(
            conn_pool(&mut p, &TestConnection::new()),
            Some(FALLBACK),
            "no ClientHello"
        );
        assert_eq!(
            conn_pool(&mut p, &TestConnection::new().tls()),
            Some(FALLBACK),
            "no SNI"
        );
    }

    #[test]
    fn without_default_unmatched_connections_are_rejected_and_requests_421() {
        let mut p = host().init::<SniRouter>().unwrap();
        assert_eq!(
            conn_pool(&mut p, &TestConnection::new().server_name("c.test")),
            None
        );
        assert_eq!(conn_pool(&mut p, &TestConnection::new()), None);
        assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(421));
        let other = TestRequest::get("/").header("host", "c.test");
        assert_eq!(p.decide(&other).status(), Some(421));
    }

    #[test]
    fn one_rotation_per_pool_and_retries_avoid_tried_backends() {
        let mut p = with_default();
        let a = TestConnection::new().server_name("a.test");
        let b = TestConnection::new().server_name("q.b.test");
        let seq = [&a, &b, &a, &b, &a].map(|c| p.decide_connection(c).target());
        assert_eq!(seq, [(A, 0), (B, 0), (A, 1), (B, 1), (A, 0)].map(Some));
        let retry = a.retry_after(&[(A, 1)]);
        assert_eq!(p.decide_connection(&retry).target(), Some((A, 0)));
        p.host().update(A, 0, |x| x.healthy(false));
        p.host().update(A, 1, |x| x.healthy(false));
        let a = TestConnection::new().server_name("a.test");
        assert_eq!(p.decide_connection(&a).target(), None, "never another pool");
    }

    #[test]
    fn requests_route_by_sni_else_by_the_authority_host() {
        let mut p = with_default();
        let pool = |p: &mut TestPolicy<SniRouter>, req: TestRequest| {
            p.decide(&req).target().map(|(pool, _)| pool)
        };
        assert_eq!(
            pool(&mut p, TestRequest::get("/").server_name("a.test")),
            Some(A)
        );
        let both = TestRequest::get("/")
            .server_name("x.b.test")
            .header("host", "a.test");
        assert_eq!(pool(&mut p, both), Some(B), "SNI wins over Host");
        assert_eq!(
            pool(&mut p, TestRequest::get("/").header("host", "A.TEST:8080")),
            Some(A)
        );
        assert_eq!(
            pool(&mut p, TestRequest::get("/").authority("y.eu.b.test.")),
            Some(EU)
        );
        assert_eq!(pool(&mut p, TestRequest::get("/")), Some(FALLBACK));
        p.host().update(B, 0, |x| x.healthy(false));
        p.host().update(B, 1, |x| x.healthy(false));
        let down = TestRequest::get("/").header("host", "x.b.test");
        assert_eq!(p.decide(&down).status(), Some(503));
    }

    #[test]
    fn config_errors_at_init() {
        let host = TestHost::new().pool("a", [TestBackend::up()]);
        let err = |h: TestHost| h.init::<SniRouter>().err().unwrap();
        assert_eq!(
            err(host.clone()),
            "routes: no route and no `default`: every connection would be rejected"
        );
        assert_eq!(
            err(host.clone().config("routes.a.test", "z")),
            "routes.a.test: unknown pool `z`: this listener's pools are a"
        );
        assert_eq!(
            err(host.config("route.a.test", "a")),
            "route.a.test: unknown key (known keys: `default`, `routes.<server name>`)"
        );
    }

    // A pool re-resolved between instances (a DNS answer changed, a config
    // commit): the host builds new instances over the new pools, in which
    // an index may name another backend.

    /// An instance routing `a.test` to pool `a` (backends at `addresses`)
    /// and the rest to `fallback` (one backend).
    fn a_at(addresses: &[&str]) -> TestPolicy<SniRouter> {
        let backends = addresses.iter().map(|a| TestBackend::up().address(a));
        let host = TestHost::new().pool("a", backends);
        let host = host.pool("fallback", [TestBackend::up()]);
        host.config("routes.a.test", "a")
            .config("default", "fallback")
            .init()
            .unwrap()
    }

    #[test]
    fn a_grown_or_shrunk_pool_rotates_over_exactly_its_backends() {
        let (x, y, z) = ("10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80");
        let conn = TestConnection::new().server_name("a.test");
        let mut grown = a_at(&[x, y, z]);
        let seq = [(); 4].map(|_| grown.decide_connection(&conn).target());
        assert_eq!(seq, [0, 1, 2, 0].map(|b| Some((A, b))));
        let mut shrunk = a_at(&[z]);
        let req = TestRequest::get("/").header("host", "a.test");
        assert_eq!(shrunk.decide(&req).target(), Some((A, 0)));
        let retry = conn.retry_after(&[(A, 2)]);
        assert_eq!(shrunk.decide_connection(&retry).target(), Some((A, 0)));
    }

    #[test]
    fn an_emptied_pool_closes_connections_and_is_503_never_another_pool() {
        let mut p = a_at(&[]);
        let conn = TestConnection::new().server_name("a.test");
        assert_eq!(p.decide_connection(&conn).target(), None);
        let req = TestRequest::get("/").header("host", "a.test");
        assert_eq!(p.decide(&req).status(), Some(503));
        let other = TestConnection::new().server_name("c.test");
        assert_eq!(p.decide_connection(&other).target(), Some((PoolId(1), 0)));
    }
}
