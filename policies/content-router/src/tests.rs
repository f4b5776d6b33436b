//! The routing `content-router` documents, on the SDK's native test host, and its
//! config checks.

use super::*;
use wasmroute_policy::ConfigValue;

fn router(pools: &[&str], config: &[(&str, ConfigValue)]) -> Result<ContentRouter, String> {
    let ctx = InitContext::from_parts(pools, config);
    ContentRouter::init(&ctx)
}

fn text(s: &str) -> ConfigValue {
    ConfigValue::Text(s.to_string())
}

#[test]
fn default_prefixes_route_on_segment_boundaries() {
    let r = router(&["web", "video", "billing"], &[]).unwrap();
    assert_eq!(r.route("/video"), PoolId(1));
    assert_eq!(r.route("/video/"), PoolId(1));
    assert_eq!(r.route("/video/1.mp4"), PoolId(1));
    assert_eq!(r.route("/billing/invoices"), PoolId(2));
    assert_eq!(r.route("/videos"), PoolId::DEFAULT);
    assert_eq!(r.route("/"), PoolId::DEFAULT);
    assert_eq!(r.route("/web"), PoolId::DEFAULT);
    assert_eq!(r.route("*"), PoolId::DEFAULT);
}

#[test]
fn configured_prefixes_longest_wins() {
    let r = router(
        &["web", "api", "api2", "assets"],
        &[
            ("api_prefix", text("/api")),
            ("api2_prefix", text("/api/v2")),
            ("assets_prefix", text("/static/")),
        ],
    )
    .unwrap();
    assert_eq!(r.route("/api/v1/x"), PoolId(1));
    assert_eq!(r.route("/api/v2"), PoolId(2));
    assert_eq!(r.route("/api/v2/x"), PoolId(2));
    assert_eq!(r.route("/api/v20"), PoolId(1));
    assert_eq!(r.route("/static/app.js"), PoolId(3));
    assert_eq!(r.route("/static"), PoolId::DEFAULT);
}

#[test]
fn single_pool_routes_everything_to_it() {
    let r = router(&["web"], &[]).unwrap();
    assert_eq!(r.route("/anything"), PoolId::DEFAULT);
}

#[test]
fn bad_config_names_the_key() {
    let pools = ["web", "video"];
    let err = |config: &[(&str, ConfigValue)]| router(&pools, config).err().unwrap();
    assert_eq!(
        err(&[("video_prefix", ConfigValue::Integer(5))]),
        "video_prefix: expected a string, found the integer 5"
    );
    assert_eq!(
        err(&[("video_prefix", text("video"))]),
        "video_prefix: must start with '/', got \"video\""
    );
    assert_eq!(
        err(&[("vidoe_prefix", text("/v"))]),
        "vidoe_prefix: unknown key (known keys: header, video_prefix)"
    );
    assert!(err(&[("web_prefix", text("/w"))]).starts_with("web_prefix: unknown key"));
    assert!(err(&[("header", ConfigValue::Boolean(true))]).starts_with("header: "));
    assert!(err(&[("header", text(""))]).starts_with("header: "));
    let dup = router(
        &["web", "a", "b"],
        &[("a_prefix", text("/x")), ("b_prefix", text("/x"))],
    );
    assert_eq!(
        dup.err().unwrap(),
        "b_prefix: prefix \"/x\" is already routed to pool `a`"
    );
}

mod routing {
    use super::super::ContentRouter;
    use wasmroute_policy::PoolId;
    use wasmroute_policy::testing::{TestBackend, TestHost, TestPolicy, TestRequest};

    const WEB: PoolId = PoolId(0);
    const VIDEO: PoolId = PoolId(1);
    const API2: PoolId = PoolId(3);

    fn host() -> TestHost {
        let up = TestBackend::up;
        TestHost::new()
            .pool("web", [up(), up()])
            .pool("video", [up().active(2), up().active(1), up().active(1)])
            .pool("api", [up()])
            .pool("api2", [up()])
            .config("api_prefix", "/api")
            .config("api2_prefix", "/api/v2")
            .config("header", "x-route-pool")
    }

    fn target(p: &mut TestPolicy<ContentRouter>, req: TestRequest) -> Option<(PoolId, u32)> {
        p.decide(&req).target()
    }

    #[test]
    fn paths_route_to_pools_longest_prefix_first() {
        let mut p = host().init::<ContentRouter>().unwrap();
        let pool =
            |p: &mut TestPolicy<ContentRouter>, path| target(p, TestRequest::get(path)).unwrap().0;
        assert_eq!(pool(&mut p, "/video/1.mp4?t=10"), VIDEO);
        assert_eq!(pool(&mut p, "/video"), VIDEO);
        assert_eq!(pool(&mut p, "/videos"), WEB);
        assert_eq!(pool(&mut p, "/api/v1/x"), PoolId(2));
        assert_eq!(pool(&mut p, "/api/v2/x"), API2);
        assert_eq!(pool(&mut p, "/?p=/video"), WEB, "the query plays no part");
    }

    #[test]
    fn inside_a_pool_the_least_busy_wins_and_ties_rotate() {
        let mut p = host().init::<ContentRouter>().unwrap();
        let seq: Vec<_> = (0..4)
            .map(|_| target(&mut p, TestRequest::get("/video/x")))
            .collect();
        assert_eq!(seq, [2, 1, 2, 1].map(|b| Some((VIDEO, b))));
        p.host().update(VIDEO, 0, |b| b.active(0));
        assert_eq!(
            target(&mut p, TestRequest::get("/video/x")),
            Some((VIDEO, 0))
        );
    }

    #[test]
    fn the_header_names_a_pool() {
        let mut p = host().init::<ContentRouter>().unwrap();
        let req = |v: &str| TestRequest::get("/video/1").header("X-Route-Pool", v);
        assert_eq!(target(&mut p, req("api2")), Some((API2, 0)));
        assert_eq!(
            target(&mut p, req("web")).unwrap().0,
            WEB,
            "the first pool too"
        );
        assert_eq!(
            target(&mut p, req("Video")).unwrap().0,
            VIDEO,
            "unknown: by path"
        );
        let two = TestRequest::get("/")
            .header("x-route-pool", "api2")
            .header("x-route-pool", "video");
        assert_eq!(
            target(&mut p, two),
            Some((API2, 0)),
            "the first value counts"
        );
    }

    #[test]
    fn a_pool_without_a_healthy_backend_is_503_never_another_pool() {
        let mut p = host().init::<ContentRouter>().unwrap();
        p.host().update(API2, 0, |b| b.healthy(false));
        assert_eq!(p.decide(&TestRequest::get("/api/v2/x")).status(), Some(503));
        assert_eq!(
            target(&mut p, TestRequest::get("/api/v1")),
            Some((PoolId(2), 0))
        );
    }

    #[test]
    fn a_retry_goes_to_a_backend_of_the_pool_not_tried() {
        let mut p = host().init::<ContentRouter>().unwrap();
        let retry = TestRequest::get("/video/1").retry_after(&[(VIDEO, 1), (VIDEO, 2)]);
        assert_eq!(target(&mut p, retry), Some((VIDEO, 0)));
        let retry = TestRequest::get("/api/v2").retry_after(&[(API2, 0)]);
        assert_eq!(
            target(&mut p, retry),
            Some((API2, 0)),
            "the only backend, again"
        );
    }

    // A pool re-resolved between instances (a DNS answer changed, a config
    // commit): the host builds new instances over the new pools, in which
    // an index may name another backend.

    /// An instance whose `video` pool holds backends at these (address,
    /// in flight)s; `web` has one idle backend.
    fn with_video(video: &[(&str, u32)]) -> TestPolicy<ContentRouter> {
        let at = |&(a, n): &(&str, u32)| TestBackend::up().address(a).active(n);
        let host = TestHost::new().pool("web", [TestBackend::up()]);
        host.pool("video", video.iter().map(at)).init().unwrap()
    }

    #[test]
    fn a_grown_or_shrunk_pool_sends_to_its_least_busy_backend() {
        let (a, b, c) = ("10.9.0.1:80", "10.9.0.2:80", "10.9.0.3:80");
        let video = || TestRequest::get("/video/1");
        let mut grown = with_video(&[(a, 3), (b, 3), (c, 0)]);
        for _ in 0..5 {
            assert_eq!(target(&mut grown, video()), Some((VIDEO, 2)));
        }
        // `b` gone; ties rotate over the two left, never past them.
        let mut shrunk = with_video(&[(c, 1), (a, 1)]);
        let seq: Vec<_> = (0..4).map(|_| target(&mut shrunk, video())).collect();
        assert_eq!(seq, [1, 0, 1, 0].map(|b| Some((VIDEO, b))));
        let retry = video().retry_after(&[(VIDEO, 2)]);
        assert!(matches!(target(&mut shrunk, retry), Some((VIDEO, 0..=1))));
    }

    #[test]
    fn an_emptied_pool_is_503_never_another_pool() {
        let mut p = with_video(&[]);
        assert_eq!(p.decide(&TestRequest::get("/video/1")).status(), Some(503));
        let retry = TestRequest::get("/video/1").retry_after(&[(VIDEO, 0)]);
        assert_eq!(p.decide(&retry).status(), Some(503));
        assert_eq!(target(&mut p, TestRequest::get("/")), Some((WEB, 0)));
    }
}
