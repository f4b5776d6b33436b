//! The routing `sticky-cookie` documents, on the SDK's native test host, and its
//! config checks.

use super::*;
use wasmroute_policy::ConfigValue;

fn init(config: &[(&str, ConfigValue)]) -> Result<StickyCookie, String> {
    let ctx = InitContext::from_parts(&["web"], config);
    StickyCookie::init(&ctx)
}

fn text(s: &str) -> ConfigValue {
    ConfigValue::Text(s.into())
}

#[test]
fn config_is_checked() {
    let p = init(&[
        ("secret", text("0123456789abcdef")),
        ("cookie", text("lb")),
        ("balance", text("least-connections")),
        ("max_age", ConfigValue::Integer(3600)),
    ])
    .unwrap();
    assert_eq!(p.cookie, "lb");
    assert_eq!(p.max_age, Some(3600));
    assert!(matches!(p.inner, Balancer::LeastConnections));

    let err = |c: &[(&str, ConfigValue)]| init(c).err().unwrap();
    assert!(err(&[]).starts_with("secret: required"));
    assert_eq!(
        err(&[("secret", text("too short"))]),
        "secret: must be at least 16 bytes, got 9"
    );
    let secret = ("secret", text("0123456789abcdef"));
    assert!(err(&[secret.clone(), ("cookie", text("a b"))]).starts_with("cookie: "));
    assert!(err(&[secret.clone(), ("balance", text("fastest"))]).starts_with("balance: unknown"));
    assert!(err(&[secret.clone(), ("max_age", ConfigValue::Integer(0))]).starts_with("max_age: "));
    assert!(err(&[secret, ("ttl", ConfigValue::Integer(1))]).starts_with("ttl: unknown key"));
}

mod routing {
    use super::super::StickyCookie;
    use wasmroute_policy::PoolId;
    use wasmroute_policy::sticky::{CookieSigner, set_cookie};
    use wasmroute_policy::testing::{TestBackend, TestHost, TestPolicy, TestRequest};

    const SECRET: &str = "0123456789abcdef-secret";
    const COOKIE: &str = "wasmroute_backend";

    fn host() -> TestHost {
        let backends = [TestBackend::up(), TestBackend::up(), TestBackend::up()];
        TestHost::new()
            .pool("web", backends)
            .pool("api", [TestBackend::up()])
            .config("secret", SECRET)
    }

    /// The cookie value the policy signs for backend `index` of `web`.
    fn signed(p: &TestPolicy<StickyCookie>, index: u32) -> String {
        let signer = CookieSigner::new(SECRET.as_bytes(), "wasmroute_backend/web").unwrap();
        signer.sign(p.host().stable_id(PoolId(0), index))
    }

    /// (backend, the set-cookie values the response gets).
    fn decide(p: &mut TestPolicy<StickyCookie>, req: &TestRequest) -> (u32, Vec<String>) {
        let decision = p.decide(req);
        let Some((pool, backend)) = decision.target() else {
            panic!("not forwarded: {decision:?}");
        };
        assert_eq!(pool, PoolId(0));
        let cookie = decision.response_header("set-cookie").map(str::to_owned);
        (backend, cookie.into_iter().collect())
    }

    fn with_cookie(value: &str) -> TestRequest {
        TestRequest::get("/").cookie(COOKIE, value)
    }

    #[test]
    fn a_new_client_is_balanced_and_pinned_by_a_signed_cookie() {
        let mut p = host().init::<StickyCookie>().unwrap();
        let pin = |p: &TestPolicy<StickyCookie>, b| set_cookie(COOKIE, &signed(p, b), None, false);
        assert_eq!(
            decide(&mut p, &TestRequest::get("/")),
            (0, vec![pin(&p, 0)])
        );
        assert_eq!(
            decide(&mut p, &TestRequest::get("/")),
            (1, vec![pin(&p, 1)])
        );
        // The cookie brings the client back, without a new cookie.
        let back = with_cookie(&signed(&p, 1));
        for _ in 0..5 {
            assert_eq!(decide(&mut p, &back), (1, vec![]));
        }
        // Among other cookies, and with the value quoted.
        let quoted = TestRequest::get("/")
            .header("cookie", "theme=dark")
            .header("cookie", &format!("{COOKIE}=\"{}\"; x=1", signed(&p, 2)));
        assert_eq!(decide(&mut p, &quoted), (2, vec![]));
    }

    #[test]
    fn a_forged_or_foreign_cookie_is_ignored() {
        let mut p = host().init::<StickyCookie>().unwrap();
        let genuine = signed(&p, 2);
        let forged = format!(
            "{:016x}{}",
            p.host().stable_id(PoolId(0), 1),
            &genuine[16..]
        );
        let other_secret = CookieSigner::new(b"another secret, 16+ bytes", "wasmroute_backend/web");
        let other_secret = other_secret.unwrap().sign(p.host().stable_id(PoolId(0), 2));
        let other_pool = CookieSigner::new(SECRET.as_bytes(), "wasmroute_backend/api").unwrap();
        let other_pool = other_pool.sign(p.host().stable_id(PoolId(0), 2));
        let unknown = CookieSigner::new(SECRET.as_bytes(), "wasmroute_backend/web")
            .unwrap()
            .sign(42);
        for (i, value) in [forged, other_secret, other_pool, unknown, "garbage".into()]
            .iter()
            .enumerate()
        {
            let (backend, cookies) = decide(&mut p, &with_cookie(value));
            let expected = (i % 3) as u32; // balanced afresh, in turn
            let pin = set_cookie(COOKIE, &signed(&p, expected), None, false);
            assert_eq!((backend, cookies), (expected, vec![pin]), "cookie {i}");
        }
    }

    #[test]
    fn a_cookie_for_an_unhealthy_or_tried_backend_is_rebalanced_and_repinned() {
        let mut p = host().init::<StickyCookie>().unwrap();
        let cookie = with_cookie(&signed(&p, 0));
        p.host().update(PoolId(0), 0, |b| b.healthy(false));
        let pin = |p: &TestPolicy<StickyCookie>, b| set_cookie(COOKIE, &signed(p, b), None, false);
        assert_eq!(decide(&mut p, &cookie), (1, vec![pin(&p, 1)]));
        p.host().update(PoolId(0), 0, |b| b.healthy(true));
        assert_eq!(
            decide(&mut p, &cookie),
            (0, vec![]),
            "back when healthy again"
        );
        let retry = cookie.clone().retry_after(&[(PoolId(0), 0)]);
        assert_eq!(decide(&mut p, &retry), (2, vec![pin(&p, 2)]));
        let retry = cookie.retry_after(&[(PoolId(0), 0), (PoolId(0), 2)]);
        assert_eq!(decide(&mut p, &retry), (1, vec![pin(&p, 1)]));
    }

    #[test]
    fn cookie_attributes_follow_the_config() {
        let host = host().config("cookie", "lb").config("max_age", 3600i64);
        let mut p = host.clone().init::<StickyCookie>().unwrap();
        let signer = CookieSigner::new(SECRET.as_bytes(), "lb/web").unwrap();
        let value = signer.sign(p.host().stable_id(PoolId(0), 0));
        let (_, cookies) = decide(&mut p, &TestRequest::get("/").tls());
        assert_eq!(
            cookies,
            [set_cookie("lb", &value, Some(3600), true)],
            "Secure over TLS"
        );
        let mut p = host.config("secure", true).init::<StickyCookie>().unwrap();
        let (_, cookies) = decide(&mut p, &TestRequest::get("/"));
        assert_eq!(cookies, [set_cookie("lb", &value, Some(3600), true)]);
        let back = TestRequest::get("/").cookie("lb", &value);
        assert_eq!(decide(&mut p, &back), (0, vec![]));
    }

    #[test]
    fn the_balance_key_places_new_clients() {
        let host = TestHost::new()
            .pool(
                "web",
                [TestBackend::up().active(5), TestBackend::up().active(1)],
            )
            .config("secret", SECRET)
            .config("balance", "least-connections");
        let mut p = host.init::<StickyCookie>().unwrap();
        for _ in 0..10 {
            assert_eq!(decide(&mut p, &TestRequest::get("/")).0, 1);
        }
    }

    #[test]
    fn the_pool_key_and_no_healthy_backend() {
        let mut p = host().config("pool", "api").init::<StickyCookie>().unwrap();
        let target = p.decide(&TestRequest::get("/")).target();
        assert_eq!(target, Some((PoolId(1), 0)));
        p.host().update(PoolId(1), 0, |b| b.healthy(false));
        assert_eq!(p.decide(&TestRequest::get("/")).status(), Some(503));
    }

    // A pool re-resolved between instances (a DNS answer changed, a config
    // commit): the host builds new instances over the new pool, in which an
    // index may name another backend. The cookie names a stable id.

    /// An instance over `web` backends at `addresses` (each keeps its
    /// stable id in every pool).
    fn web(addresses: &[&str]) -> TestPolicy<StickyCookie> {
        let backends = addresses.iter().map(|a| TestBackend::up().address(a));
        let host = TestHost::new().pool("web", backends);
        host.config("secret", SECRET).init().unwrap()
    }

    /// A new client's request, and the cookie its response pins it with
    /// (to backend `expected`).
    fn pinned_to(p: &mut TestPolicy<StickyCookie>, expected: u32) -> TestRequest {
        let (backend, cookies) = decide(p, &TestRequest::get("/"));
        assert_eq!((backend, cookies.len()), (expected, 1));
        let pair = cookies[0].split(';').next().unwrap();
        with_cookie(pair.strip_prefix("wasmroute_backend=").unwrap())
    }

    #[test]
    fn a_cookie_keeps_its_backend_as_the_pool_grows_or_shrinks_around_it() {
        let (a, b, c, d) = ("10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80", "10.9.0.4:80");
        // Clients placed by the old instance, in turn: on `a`, `b`, `c`.
        let mut old = web(&[a, b, c]);
        let [to_a, _, to_c] = [0, 1, 2].map(|i| pinned_to(&mut old, i));
        // `d` joins in front: `c` is index 3 now.
        let mut grown = web(&[d, a, b, c]);
        assert_eq!(decide(&mut grown, &to_c), (3, vec![]));
        // `a` leaves: `c` is index 1 now.
        let mut shrunk = web(&[b, c]);
        assert_eq!(decide(&mut shrunk, &to_c), (1, vec![]));
        let mut alone = web(&[c]);
        assert_eq!(decide(&mut alone, &to_c), (0, vec![]));
        // A cookie for the backend that left (index 0 before, and index 0
        // is still a backend) is balanced afresh and re-pinned.
        let (backend, cookies) = decide(&mut shrunk, &to_a);
        let pin = set_cookie(COOKIE, &signed(&shrunk, backend), None, false);
        assert_eq!(cookies, [pin]);
        assert!(backend < 2);
    }

    #[test]
    fn an_empty_pool_is_503_cookie_or_not() {
        let pinned = pinned_to(&mut web(&["10.9.0.1:80"]), 0);
        let mut empty = web(&[]);
        assert_eq!(empty.decide(&pinned).status(), Some(503));
        assert_eq!(empty.decide(&TestRequest::get("/")).status(), Some(503));
    }
}
