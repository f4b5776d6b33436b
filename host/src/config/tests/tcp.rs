//! The keys of `tcp` listeners, and the HTTP-only keys they refuse.

use std::time::Duration;

use super::{assert_key, minimal_with, parse_ok};
use crate::config::TcpTimeouts;

const LISTENER_NAME: &str = "name = \"edge\"";

fn listener_with(keys: &str) -> String {
    minimal_with(LISTENER_NAME, &format!("{LISTENER_NAME}\n{keys}"))
}

fn tcp_with(keys: &str) -> String {
    listener_with(&format!("protocol = \"tcp\"\n{keys}"))
}

#[test]
fn a_tcp_listener_gets_the_default_timeouts() {
    let config = parse_ok(&tcp_with(""));
    let tcp = config.listeners[0].tcp;
    assert_eq!(tcp, TcpTimeouts::default());
    assert_eq!(tcp.peek, Duration::from_secs(5));
    assert_eq!(tcp.idle, Duration::from_secs(3600));
}

#[test]
fn a_tcp_listener_takes_its_timeouts() {
    let config = parse_ok(&tcp_with(
        "peek_timeout = \"250ms\"\nidle_timeout = \"90s\"",
    ));
    let tcp = config.listeners[0].tcp;
    assert_eq!(tcp.peek, Duration::from_millis(250));
    assert_eq!(tcp.idle, Duration::from_secs(90));
}

#[test]
fn zero_or_bad_timeouts_are_refused_with_their_key() {
    let shown = assert_key(
        &tcp_with("peek_timeout = \"0s\""),
        "listeners[0].peek_timeout",
    );
    assert!(shown.contains("must be more than zero"), "{shown}");
    let shown = assert_key(
        &tcp_with("idle_timeout = \"0ms\""),
        "listeners[0].idle_timeout",
    );
    assert!(shown.contains("must be more than zero"), "{shown}");
    assert_key(
        &tcp_with("idle_timeout = \"soon\""),
        "listeners[0].idle_timeout",
    );
}

#[test]
fn tcp_keys_on_an_http_listener_are_refused() {
    for key in ["peek_timeout", "idle_timeout"] {
        let text = listener_with(&format!("{key} = \"1s\""));
        let shown = assert_key(&text, &format!("listeners[0].{key}"));
        assert!(shown.contains("only used by tcp listeners"), "{shown}");
    }
}

#[test]
fn http_only_keys_on_a_tcp_listener_are_refused() {
    let shown = assert_key(
        &tcp_with("send_timeout = \"1s\""),
        "listeners[0].send_timeout",
    );
    assert!(
        shown.contains("only used by http and https listeners"),
        "{shown}"
    );
    let shown = assert_key(
        &tcp_with("redirect_to_https = 8443"),
        "listeners[0].redirect_to_https",
    );
    assert!(shown.contains("only an http listener"), "{shown}");
    for (key, value) in [
        ("handshake_timeout", "\"1s\""),
        ("unknown_sni", "\"refuse\""),
    ] {
        let shown = assert_key(
            &tcp_with(&format!("{key} = {value}")),
            &format!("listeners[0].{key}"),
        );
        assert!(shown.contains("only used by https listeners"), "{shown}");
    }
    let certificate = "[[listeners.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"";
    let shown = assert_key(&tcp_with(certificate), "listeners[0].certificates");
    assert!(shown.contains("only used by https listeners"), "{shown}");
}

#[test]
fn a_tcp_listener_may_accept_proxy_headers() {
    let text = tcp_with("accept_proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]");
    assert!(parse_ok(&text).listeners[0].accept_proxy_protocol);
}
