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
