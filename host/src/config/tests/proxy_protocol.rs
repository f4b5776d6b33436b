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

const LISTENER_NAME: &str = "name = \"edge\"";

fn listener_with(keys: &str) -> String {
    minimal_with(LISTENER_NAME, &format!("{LISTENER_NAME}\n{keys}"))
}

#[test]
fn a_listener_accepts_headers_from_its_trusted_proxies() {
    let config = parse_ok(&listener_with(
        "accept_proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\", \"::1/128\"]",
    ));
    let listener = &config.listeners[0];
    assert!(listener.accept_proxy_protocol);
    let shown: Vec<String> = listener
        .trusted_proxies
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(shown, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
    let plain = parse_ok(&minimal_with("", ""));
    assert!(!plain.listeners[0].accept_proxy_protocol);
    assert!(plain.listeners[0].trusted_proxies.is_empty());
}

#[test]
fn an_entry_that_is_not_a_cidr_is_refused_with_its_index() {
    let config = listener_with(
        "accept_proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.1\", \"::1/129\"]",
    );
    let shown = assert_key(&config, "listeners[0].trusted_proxies[1]");
    assert!(shown.contains("not a CIDR"), "{shown}");
    assert_key(&config, "listeners[0].trusted_proxies[2]");
}

#[test]
fn accepting_needs_trusted_proxies_and_they_need_accepting() {
    for keys in [
        "accept_proxy_protocol = true",
        "accept_proxy_protocol = true\ntrusted_proxies = []",
        "trusted_proxies = [\"127.0.0.1/32\"]",
    ] {
        assert_key(&listener_with(keys), "listeners[0].trusted_proxies");
    }
}
