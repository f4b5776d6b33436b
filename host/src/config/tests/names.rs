//! Backends by name (`address = "name:port"`, `srv = "..."`) and `[resolver]`.

use std::time::Duration;

use super::{MINIMAL, assert_key, minimal_with, parse_ok};
use crate::config::NamedBackend;

const KEY: &str = "pools[0].backends[0].address";

fn with_backend(address: &str) -> String {
    minimal_with("127.0.0.1:9001", address)
}

#[test]
fn a_name_with_a_port_is_a_named_backend() {
    let text = minimal_with(
        "backends = [{ address = \"127.0.0.1:9001\" }]",
        "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"api.internal.:8080\", weight = 3 }, { address = \"localhost:81\" }]",
    );
    let config = parse_ok(&text);
    let pool = &config.pools[0];
    assert_eq!(pool.backends.len(), 1);
    assert_eq!(
        pool.names,
        [
            NamedBackend {
                name: "api.internal".into(),
                port: Some(8080),
                weight: 3
            },
            NamedBackend {
                name: "localhost".into(),
                port: Some(81),
                weight: 1
            },
        ]
    );
    assert_eq!(config.resolver, crate::config::ResolverConfig::default());
    assert_eq!(config.resolver.refresh, Duration::from_secs(5));
}

#[test]
fn a_pool_of_names_only_is_valid() {
    let config = parse_ok(&with_backend("web.svc:80"));
    assert!(config.pools[0].backends.is_empty());
    assert_eq!(config.pools[0].names.len(), 1);
}

#[test]
fn malformed_names_are_refused() {
    let shown = assert_key(&with_backend("exa mple:80"), KEY);
    assert!(shown.contains("` ` in label `exa mple`"), "{shown}");
    let shown = assert_key(&with_backend("a..b:80"), KEY);
    assert!(shown.contains("empty label"), "{shown}");
    let long = format!("{}.example:80", vec!["a".repeat(60); 5].join("."));
    let shown = assert_key(&with_backend(&long), KEY);
    assert!(shown.contains("at most 253"), "{shown}");
    let shown = assert_key(&with_backend(&format!("{}.b:80", "a".repeat(64))), KEY);
    assert!(shown.contains("longer than 63"), "{shown}");
    assert_key(&with_backend("-a.example:80"), KEY);
}

#[test]
fn a_name_without_a_port_is_refused() {
    let shown = assert_key(&with_backend("api.internal"), KEY);
    assert!(shown.contains("missing port"), "{shown}");
    let shown = assert_key(&with_backend("api.internal:0"), KEY);
    assert!(shown.contains("is not a port"), "{shown}");
    assert_key(&with_backend("api.internal:http"), KEY);
}

#[test]
fn the_same_name_twice_is_a_duplicate() {
    let text = minimal_with(
        "backends = [{ address = \"127.0.0.1:9001\" }]",
        "backends = [{ address = \"a.example:80\" }, { address = \"A.example:80\" }]",
    );
    assert_key(&text, "pools[0].backends[1].address");
}

/// A pool whose only backend entry is `entry` (TOML inline-table body).
fn with_entry(entry: &str) -> String {
    minimal_with(
        "backends = [{ address = \"127.0.0.1:9001\" }]",
        &format!("backends = [{{ {entry} }}]"),
    )
}

#[test]
fn an_srv_name_is_a_named_backend_without_a_port() {
    let config = parse_ok(&with_entry(
        "srv = \"_http._tcp.Web.internal.\", weight = 2",
    ));
    assert_eq!(
        config.pools[0].names,
        [NamedBackend {
            name: "_http._tcp.Web.internal".into(),
            port: None,
            weight: 2
        }]
    );
    assert_eq!(config.pools[0].names[0].text(), "_http._tcp.Web.internal");
}

#[test]
fn bad_srv_entries_are_refused() {
    let key = "pools[0].backends[0].srv";
    let shown = assert_key(&with_entry("srv = \"_http._tcp.a..b\""), key);
    assert!(shown.contains("empty label"), "{shown}");
    let shown = assert_key(&with_entry("srv = \"_http._tcp.web:80\""), key);
    assert!(shown.contains("`:` in label"), "{shown}");
    let both = "address = \"web.internal:80\", srv = \"_http._tcp.web.internal\"";
    let shown = assert_key(&with_entry(both), key);
    assert!(shown.contains("not both"), "{shown}");
    let shown = assert_key(&with_entry("weight = 2"), KEY);
    assert!(shown.contains("missing"), "{shown}");
    let twice = minimal_with(
        "backends = [{ address = \"127.0.0.1:9001\" }]",
        "backends = [{ srv = \"_a._tcp.x\" }, { srv = \"_A._tcp.x\" }]",
    );
    let shown = assert_key(&twice, "pools[0].backends[1].srv");
    assert!(shown.contains("duplicate SRV name"), "{shown}");
}

#[test]
fn resolver_settings_are_read() {
    let text = format!(
        "{MINIMAL}\n[resolver]\nnameservers = [\"10.0.0.2:53\", \"[::1]:5353\"]\nrefresh = \"250ms\"\n"
    );
    let config = parse_ok(&text);
    let servers: Vec<String> = (config.resolver.nameservers.iter())
        .map(ToString::to_string)
        .collect();
    assert_eq!(servers, ["10.0.0.2:53", "[::1]:5353"]);
    assert_eq!(config.resolver.refresh, Duration::from_millis(250));
}

#[test]
fn a_zero_refresh_is_refused() {
    let text = format!("{MINIMAL}\n[resolver]\nrefresh = \"0s\"\n");
    let shown = assert_key(&text, "resolver.refresh");
    assert!(shown.contains("more than zero"), "{shown}");
}

#[test]
fn a_nameserver_that_is_not_ip_port_is_refused() {
    for bad in ["10.0.0.2", "dns.example:53", "10.0.0.2:99999"] {
        let text = format!("{MINIMAL}\n[resolver]\nnameservers = [\"10.0.0.2:53\", \"{bad}\"]\n");
        let shown = assert_key(&text, "resolver.nameservers[1]");
        assert!(shown.contains("expected IP:port"), "{shown}");
    }
}
