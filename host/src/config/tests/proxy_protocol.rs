//! The PROXY protocol keys: `proxy_protocol` in `[[pools]]`.

use super::{assert_key, minimal_with, parse_ok};
use crate::config::ProxyProtocol;

const POOL_NAME: &str = "name = \"web\"";

#[test]
fn a_pool_sends_no_header_unless_told() {
    assert_eq!(
        parse_ok(&minimal_with("", "")).pools[0].proxy_protocol,
        None
    );
}

#[test]
fn a_pool_sends_v1_or_v2() {
    for (text, version) in [("v1", ProxyProtocol::V1), ("v2", ProxyProtocol::V2)] {
        let config = minimal_with(
            POOL_NAME,
            &format!("{POOL_NAME}\nproxy_protocol = \"{text}\""),
        );
        assert_eq!(parse_ok(&config).pools[0].proxy_protocol, Some(version));
    }
}

#[test]
fn another_version_is_refused_with_its_key() {
    let config = minimal_with(POOL_NAME, &format!("{POOL_NAME}\nproxy_protocol = \"v3\""));
    let shown = assert_key(&config, "pools[0].proxy_protocol");
    assert!(shown.contains("unknown variant `v3`"), "{shown}");
}
