//! The TLS keys of listeners: `handshake_timeout`, `unknown_sni`
//! (https only) and `redirect_to_https` (http only).

use std::time::Duration;

use super::{FULL, assert_key, minimal_with, parse_ok};
use crate::config::UnknownSni;

/// `MINIMAL` turned into an https listener with one certificate and `extra` lines.
fn https_with(extra: &str) -> String {
    minimal_with(
        "pools = [\"web\"]\n",
        &format!(
            "pools = [\"web\"]\nprotocol = \"https\"\n{extra}\n\
             [[listeners.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n"
        ),
    )
}

/// `MINIMAL` (an http listener) with `extra` lines.
fn http_with(extra: &str) -> String {
    minimal_with(
        "pools = [\"web\"]\n",
        &format!("pools = [\"web\"]\n{extra}\n"),
    )
}

#[test]
fn defaults() {
    let config = parse_ok(FULL);
    let secure = config.listener("secure").unwrap();
    assert_eq!(secure.handshake_timeout, Duration::from_secs(10));
    assert_eq!(secure.unknown_sni, UnknownSni::Default);
    assert_eq!(secure.redirect_to_https, None);
    assert_eq!(config.listener("edge").unwrap().redirect_to_https, None);
}

#[test]
fn values() {
    let config = parse_ok(&https_with(
        "handshake_timeout = \"200ms\"\nunknown_sni = \"refuse\"",
    ));
    let listener = &config.listeners[0];
    assert_eq!(listener.handshake_timeout, Duration::from_millis(200));
    assert_eq!(listener.unknown_sni, UnknownSni::Refuse);
    let config = parse_ok(&http_with("redirect_to_https = 443"));
    assert_eq!(config.listeners[0].redirect_to_https, Some(443));
}

#[test]
fn tls_keys_on_an_http_listener() {
    assert_key(
        &http_with("handshake_timeout = \"1s\""),
        "listeners[0].handshake_timeout",
    );
    assert_key(
        &http_with("unknown_sni = \"refuse\""),
        "listeners[0].unknown_sni",
    );
}

#[test]
fn bad_tls_values() {
    assert_key(
        &https_with("unknown_sni = \"maybe\""),
        "listeners[0].unknown_sni",
    );
    assert_key(
        &https_with("handshake_timeout = \"0s\""),
        "listeners[0].handshake_timeout",
    );
    assert_key(
        &https_with("handshake_timeout = 5"),
        "listeners[0].handshake_timeout",
    );
}

#[test]
fn bad_redirects() {
    let shown = assert_key(
        &https_with("redirect_to_https = 443"),
        "listeners[0].redirect_to_https",
    );
    assert!(shown.contains("only an http listener"), "{shown}");
    assert_key(
        &http_with("redirect_to_https = 0"),
        "listeners[0].redirect_to_https",
    );
    assert_key(
        &http_with("redirect_to_https = 70000"),
        "listeners[0].redirect_to_https",
    );
}

/// `MINIMAL` with a `[pools.tls]` table of `lines`.
fn pool_tls(lines: &str) -> String {
    minimal_with(
        "backends = [{ address = \"127.0.0.1:9001\" }]\n",
        &format!("backends = [{{ address = \"127.0.0.1:9001\" }}]\n[pools.tls]\n{lines}\n"),
    )
}

#[test]
fn pool_tls_values_and_defaults() {
    let config = parse_ok(&pool_tls(
        "ca = \"certs/ca.pem\"\nserver_name = \"api.internal\"",
    ));
    let tls = config.pools[0].tls.clone().unwrap();
    assert_eq!(tls.ca, Some("/srv/wasmroute/certs/ca.pem".into()));
    assert_eq!(tls.server_name.as_deref(), Some("api.internal"));
    let config = parse_ok(&pool_tls(""));
    assert_eq!(config.pools[0].tls, Some(Default::default()));
    assert_eq!(parse_ok(FULL).pools[0].tls, None);
}

#[test]
fn bad_pool_tls() {
    assert_key(
        &pool_tls("server_name = \"not a name\""),
        "pools[0].tls.server_name",
    );
    assert_key(&pool_tls("ca = \"\""), "pools[0].tls.ca");
    assert_key(&pool_tls("verify = false"), "pools[0].tls.verify");
}
