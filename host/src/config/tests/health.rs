//! `[pools.health]` scripts (`steps`), the check `port` and the pool's
//! `on_down`: what parses, and each mistake refused with its key.

use super::{MINIMAL, assert_key, minimal_with, parse_ok};
use crate::config::{HEALTH_EXPECT_LIMIT, HealthStep, OnDown};

fn health(lines: &str) -> String {
    format!("{MINIMAL}\n[pools.health]\n{lines}\n")
}

#[test]
fn steps_parse_in_order_with_escapes() {
    let config = parse_ok(&health(
        r#"steps = [{ send = "PING\r\n" }, { expect = "+PONG" }, { send = "\u0001" }]"#,
    ));
    let checks = config.pools[0].health.as_ref().unwrap();
    let expected = [
        HealthStep::Send(b"PING\r\n".to_vec()),
        HealthStep::Expect(b"+PONG".to_vec()),
        HealthStep::Send(vec![1]),
    ];
    assert_eq!(checks.steps, expected);
    assert_eq!(checks.path, None);
    assert_eq!(checks.port, None);
    assert_eq!(config.pools[0].on_down, OnDown::Keep);
}

#[test]
fn a_step_needs_exactly_one_of_send_or_expect() {
    for step in ["{}", r#"{ send = "a", expect = "b" }"#] {
        let text = health(&format!(r#"steps = [{{ send = "x" }}, {step}]"#));
        let shown = assert_key(&text, "pools[0].health.steps[1]");
        assert!(shown.contains("exactly one of send or expect"), "{shown}");
    }
}

#[test]
fn empty_steps_and_empty_strings_are_refused() {
    let shown = assert_key(&health("steps = []"), "pools[0].health.steps");
    assert!(shown.contains("must not be empty"), "{shown}");
    let text = health(r#"steps = [{ send = "" }, { expect = "" }]"#);
    let shown = assert_key(&text, "pools[0].health.steps[0].send");
    assert!(
        shown.contains("pools[0].health.steps[1].expect: must not be empty"),
        "{shown}"
    );
}

#[test]
fn an_expect_longer_than_the_buffer_is_refused() {
    let long = "x".repeat(HEALTH_EXPECT_LIMIT + 1);
    let text = health(&format!(r#"steps = [{{ expect = "{long}" }}]"#));
    let shown = assert_key(&text, "pools[0].health.steps[0].expect");
    assert!(shown.contains("longer than"), "{shown}");
}

#[test]
fn steps_with_path_are_refused() {
    let text = health("path = \"/\"\nsteps = [{ expect = \"+OK\" }]");
    let shown = assert_key(&text, "pools[0].health.steps");
    assert!(shown.contains("cannot be used with `path`"), "{shown}");
}

#[test]
fn unknown_step_key_is_refused() {
    assert_key(
        &health(r#"steps = [{ sned = "x" }]"#),
        "pools[0].health.steps[0].sned",
    );
}

#[test]
fn port_is_kept_and_must_be_in_range() {
    let config = parse_ok(&health("path = \"/primary\"\nport = 8008"));
    assert_eq!(config.pools[0].health.as_ref().unwrap().port, Some(8008));
    for port in ["0", "65536", "-1"] {
        let shown = assert_key(&health(&format!("port = {port}")), "pools[0].health.port");
        assert!(shown.contains("is not a port: 1 to 65535"), "{shown}");
    }
}

#[test]
fn on_down_values() {
    let backends = "backends = [{ address = \"127.0.0.1:9001\" }]";
    let text = minimal_with(
        backends,
        &format!("{backends}\non_down = \"close-connections\""),
    );
    assert_eq!(parse_ok(&text).pools[0].on_down, OnDown::CloseConnections);
    let text = minimal_with(backends, &format!("{backends}\non_down = \"keep\""));
    assert_eq!(parse_ok(&text).pools[0].on_down, OnDown::Keep);
    let text = minimal_with(backends, &format!("{backends}\non_down = \"shutdown\""));
    assert_key(&text, "pools[0].on_down");
}
