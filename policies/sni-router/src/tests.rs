//! The routing `sni-router` documents, on the SDK's native test host, and its
//! config checks.

use super::*;

#[test]
fn authority_host_drops_port_case_and_trailing_dot() {
    let host = |a: &str| authority_host(a.to_string());
    assert_eq!(host("A.Test:8443"), "a.test");
    assert_eq!(host("a.test."), "a.test");
    assert_eq!(host("a.test"), "a.test");
    assert_eq!(host("[::1]:80"), "[::1]");
}
