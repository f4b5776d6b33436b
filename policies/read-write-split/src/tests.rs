//! The routing `read-write-split` documents, on the SDK's native test host, and its
//! config checks.

use super::*;
use wasmroute_policy::ConfigValue;

fn init(pools: &[&str], config: &[(&str, ConfigValue)]) -> Result<ReadWriteSplit, String> {
    let ctx = InitContext::from_parts(pools, config);
    ReadWriteSplit::init(&ctx)
}

#[test]
fn methods() {
    assert!(is_read(&Method::Get) && is_read(&Method::Head) && is_read(&Method::Options));
    for m in [
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Other("PURGE".into()),
    ] {
        assert!(!is_read(&m), "{m}");
    }
}

#[test]
fn config_is_checked() {
    let p = init(&["replicas", "primary"], &[]).unwrap();
    assert_eq!((p.primary.0, p.replicas.0), (PoolId(1), PoolId(0)));
    let text = |s: &str| ConfigValue::Text(s.into());
    let p = init(
        &["db", "ro"],
        &[("primary", text("db")), ("replicas", text("ro"))],
    )
    .unwrap();
    assert_eq!((p.primary.0, p.replicas.0), (PoolId(0), PoolId(1)));
    let err = init(&["web"], &[]).err().unwrap();
    assert!(err.starts_with("primary: unknown pool `primary`"), "{err}");
    let err = init(&["a"], &[("primary", text("a")), ("replicas", text("a"))])
        .err()
        .unwrap();
    assert_eq!(err, "replicas: must be another pool than primary");
    let err = init(&["primary", "replicas"], &[("balance", text("x"))])
        .err()
        .unwrap();
    assert!(err.starts_with("balance: unknown algorithm"), "{err}");
}

mod routing {
    use super::super::ReadWriteSplit;
    use wasmroute_policy::PoolId;
    use wasmroute_policy::testing::{TestBackend, TestHost, TestPolicy, TestRequest};

    const PRIMARY: PoolId = PoolId(0);
    const REPLICAS: PoolId = PoolId(1);

    fn host() -> TestHost {
        TestHost::new()
            .pool("primary", [TestBackend::up(), TestBackend::up()])
            .pool(
                "replicas",
                [TestBackend::up(), TestBackend::up(), TestBackend::up()],
            )
    }

    fn target(p: &mut TestPolicy<ReadWriteSplit>, method: &str) -> Option<(PoolId, u32)> {
        p.decide(&TestRequest::new(method, "/items/1")).target()
    }

    #[test]
    fn reads_go_to_the_replicas_in_turn_and_writes_to_the_primary() {
        let mut p = host().init::<ReadWriteSplit>().unwrap();
        let reads: Vec<_> = ["GET", "HEAD", "OPTIONS", "GET"]
            .map(|m| target(&mut p, m))
            .to_vec();
        assert_eq!(reads, [0, 1, 2, 0].map(|b| Some((REPLICAS, b))));
        let writes: Vec<_> = ["POST", "PUT", "PATCH", "DELETE", "PURGE"]
            .map(|m| target(&mut p, m))
            .to_vec();
        assert_eq!(writes, [0, 1, 0, 1, 0].map(|b| Some((PRIMARY, b))));
    }

    #[test]
    fn reads_fall_back_to_the_primary_unless_told_not_to() {
        let host = host();
        for i in 0..3 {
            host.update(REPLICAS, i, |b| b.healthy(false));
        }
        let mut p = host.clone().init::<ReadWriteSplit>().unwrap();
        assert_eq!(target(&mut p, "GET"), Some((PRIMARY, 0)));
        p.host().update(REPLICAS, 1, |b| b.healthy(true));
        assert_eq!(target(&mut p, "GET"), Some((REPLICAS, 1)));
        let mut strict = host
            .config("read_fallback", false)
            .init::<ReadWriteSplit>()
            .unwrap();
        assert_eq!(strict.decide(&TestRequest::get("/")).status(), Some(503));
        assert_eq!(target(&mut strict, "POST"), Some((PRIMARY, 0)));
    }

    #[test]
    fn writes_never_go_to_a_replica() {
        let host = host();
        host.update(PRIMARY, 0, |b| b.healthy(false));
        host.update(PRIMARY, 1, |b| b.ejected(true));
        let mut p = host.init::<ReadWriteSplit>().unwrap();
        assert_eq!(p.decide(&TestRequest::post("/")).status(), Some(503));
        assert_eq!(target(&mut p, "GET"), Some((REPLICAS, 0)));
    }

    #[test]
    fn a_retry_goes_to_a_backend_not_tried() {
        let mut p = host().init::<ReadWriteSplit>().unwrap();
        let read = TestRequest::get("/").retry_after(&[(REPLICAS, 0), (REPLICAS, 1)]);
        assert_eq!(p.decide(&read).target(), Some((REPLICAS, 2)));
        let write = TestRequest::post("/").retry_after(&[(PRIMARY, 0)]);
        assert_eq!(p.decide(&write).target(), Some((PRIMARY, 1)));
        assert_eq!(p.decide(&write).target(), Some((PRIMARY, 1)));
    }

    #[test]
    fn named_pools_and_the_balance_key() {
        let host = TestHost::new()
            .pool(
                "ro",
                [TestBackend::up().active(4), TestBackend::up().active(1)],
            )
            .pool("rw", [TestBackend::up().active(2), TestBackend::up()])
            .config("primary", "rw")
            .config("replicas", "ro")
            .config("balance", "least-connections");
        let mut p = host.init::<ReadWriteSplit>().unwrap();
        for _ in 0..5 {
            assert_eq!(target(&mut p, "GET"), Some((PoolId(0), 1)));
            assert_eq!(target(&mut p, "POST"), Some((PoolId(1), 1)));
        }
        let err = TestHost::new()
            .pool("primary", [TestBackend::up()])
            .pool("replicas", [TestBackend::up()])
            .config("fallback", true)
            .init::<ReadWriteSplit>()
            .err();
        assert_eq!(
            err.as_deref(),
            Some("fallback: unknown key (known keys: primary, replicas, balance, read_fallback)")
        );
    }

    // A pool re-resolved between instances (a DNS answer changed, a config
    // commit): the host builds new instances over the new pools, in which
    // an index may name another backend.

    /// An instance over backends at these addresses.
    fn over(primary: &[&str], replicas: &[&str]) -> TestPolicy<ReadWriteSplit> {
        let at = |a: &&str| TestBackend::up().address(a);
        let host = TestHost::new().pool("primary", primary.iter().map(at));
        host.pool("replicas", replicas.iter().map(at))
            .init()
            .unwrap()
    }

    #[test]
    fn reads_take_turns_over_exactly_the_grown_or_shrunk_replicas() {
        let (p1, r1, r2, r3) = ("10.9.0.1:80", "10.9.1.1:80", "10.9.1.2:80", "10.9.1.3:80");
        let mut grown = over(&[p1], &[r1, r2, r3]);
        let reads: Vec<_> = (0..4).map(|_| target(&mut grown, "GET")).collect();
        assert_eq!(reads, [0, 1, 2, 0].map(|b| Some((REPLICAS, b))));
        let mut shrunk = over(&[p1], &[r3]);
        let reads: Vec<_> = (0..2).map(|_| target(&mut shrunk, "GET")).collect();
        assert_eq!(reads, [Some((REPLICAS, 0)); 2]);
        let retry = TestRequest::get("/").retry_after(&[(REPLICAS, 2)]);
        assert_eq!(shrunk.decide(&retry).target(), Some((REPLICAS, 0)));
        assert_eq!(target(&mut shrunk, "POST"), Some((PRIMARY, 0)));
    }

    #[test]
    fn emptied_pools_fall_back_for_reads_and_answer_503_for_writes() {
        let mut no_replicas = over(&["10.9.0.1:80"], &[]);
        assert_eq!(target(&mut no_replicas, "GET"), Some((PRIMARY, 0)));
        let mut no_primary = over(&[], &["10.9.1.1:80"]);
        assert_eq!(
            no_primary.decide(&TestRequest::post("/")).status(),
            Some(503)
        );
        assert_eq!(target(&mut no_primary, "GET"), Some((REPLICAS, 0)));
        let mut nothing = over(&[], &[]);
        assert_eq!(nothing.decide(&TestRequest::get("/")).status(), Some(503));
        assert_eq!(nothing.decide(&TestRequest::post("/")).status(), Some(503));
    }
}
