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
