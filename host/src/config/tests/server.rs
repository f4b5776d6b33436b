//! `[server]`: defaults, values, and each mistake with its key.

use std::path::PathBuf;
use std::time::Duration;

use super::{MINIMAL, assert_key, parse_ok};

#[test]
fn server_section_is_optional_with_defaults() {
    let config = parse_ok(MINIMAL);
    assert_eq!(config.server.drain_timeout, Duration::from_secs(30));
    assert_eq!(config.server.upgrade_socket, None);
}

#[test]
fn server_values_are_read_and_paths_resolved() {
    let text = format!(
        "[server]\ndrain_timeout = \"2.5s\"\nupgrade_socket = \"run/edge.sock\"\n{MINIMAL}"
    );
    let config = parse_ok(&text);
    assert_eq!(config.server.drain_timeout, Duration::from_millis(2500));
    assert_eq!(
        config.server.upgrade_socket,
        Some(PathBuf::from("/srv/wasmroute/run/edge.sock"))
    );
}

#[test]
fn bad_server_keys_are_refused_with_their_key() {
    assert_key(
        &format!("[server]\ndrain_timeout = \"0s\"\n{MINIMAL}"),
        "server.drain_timeout",
    );
    assert_key(
        &format!("[server]\ndrain_timeout = \"soon\"\n{MINIMAL}"),
        "server.drain_timeout",
    );
    let long = "x".repeat(120);
    assert_key(
        &format!("[server]\nupgrade_socket = \"/{long}.sock\"\n{MINIMAL}"),
        "server.upgrade_socket",
    );
    let shown = assert_key(
        &format!("[server]\ndrain_timeot = \"1s\"\n{MINIMAL}"),
        "server.drain_timeot",
    );
    assert!(shown.contains("unknown field"), "{shown}");
}
