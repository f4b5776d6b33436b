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
