//! `[listeners.shadow]`: defaults, values, and every refusal with its key.

use std::time::Duration;

use super::{assert_key, minimal_with, parse_ok};

/// `MINIMAL` (listener `edge`, policy `rr`) with `table` after its pools.
fn with_shadow(table: &str) -> String {
    minimal_with(
        "pools = [\"web\"]\n",
        &format!("pools = [\"web\"]\n[listeners.policy_config]\nlive = 1\n{table}\n"),
    )
}

#[test]
fn a_listener_without_a_shadow_has_none() {
    assert_eq!(parse_ok(&with_shadow("")).listeners[0].shadow, None);
}

#[test]
fn a_shadow_takes_the_listener_defaults() {
    let config = parse_ok(&with_shadow("[listeners.shadow]\npolicy = \"candidate\""));
    let shadow = config.listeners[0].shadow.clone().expect("a shadow");
    assert_eq!(shadow.policy, "candidate");
    assert_eq!(shadow.sample, 1.0);
    assert_eq!(shadow.policy_config, config.listeners[0].policy_config);
    assert_eq!(shadow.decision_timeout, None);
}

#[test]
fn a_shadow_takes_its_own_values() {
    let table = "[listeners.shadow]\npolicy = \"candidate\"\nsample = 0.25\n\
                 decision_timeout = \"20ms\"\n[listeners.shadow.policy_config]\nmine = \"yes\"";
    let config = parse_ok(&with_shadow(table));
    let shadow = config.listeners[0].shadow.clone().expect("a shadow");
    assert_eq!(shadow.sample, 0.25);
    assert_eq!(shadow.decision_timeout, Some(Duration::from_millis(20)));
    assert_eq!(
        shadow.policy_config.get("mine").and_then(|v| v.as_str()),
        Some("yes")
    );
    assert!(!shadow.policy_config.contains_key("live"));
    let whole = parse_ok(&with_shadow(
        "[listeners.shadow]\npolicy = \"c\"\nsample = 0",
    ));
    assert_eq!(whole.listeners[0].shadow.as_ref().unwrap().sample, 0.0);
}

#[test]
fn the_live_policy_is_not_its_own_shadow() {
    let shown = assert_key(
        &with_shadow("[listeners.shadow]\npolicy = \"rr\""),
        "listeners[0].shadow.policy",
    );
    assert!(shown.contains("is the listener's live policy"), "{shown}");
}

#[test]
fn a_shadow_needs_a_valid_policy_name() {
    let shown = assert_key(
        &with_shadow("[listeners.shadow]\nsample = 0.5"),
        "listeners[0].shadow.policy",
    );
    assert!(shown.contains("missing"), "{shown}");
    assert_key(
        &with_shadow("[listeners.shadow]\npolicy = \"../x\""),
        "listeners[0].shadow.policy",
    );
}

#[test]
fn a_sample_outside_zero_to_one_is_refused() {
    for sample in ["1.5", "-0.1", "nan", "inf"] {
        let text = with_shadow(&format!(
            "[listeners.shadow]\npolicy = \"c\"\nsample = {sample}"
        ));
        let shown = assert_key(&text, "listeners[0].shadow.sample");
        assert!(shown.contains("from 0.0 to 1.0"), "{sample}: {shown}");
    }
}

#[test]
fn unknown_keys_and_zero_timeouts_are_refused() {
    assert_key(
        &with_shadow("[listeners.shadow]\npolicy = \"c\"\nsampel = 0.5"),
        "listeners[0].shadow.sampel",
    );
    let shown = assert_key(
        &with_shadow("[listeners.shadow]\npolicy = \"c\"\ndecision_timeout = \"0ms\""),
        "listeners[0].shadow.decision_timeout",
    );
    assert!(shown.contains("more than zero"), "{shown}");
}

#[test]
fn a_tcp_listener_has_no_shadow() {
    let text = minimal_with(
        "pools = [\"web\"]\n",
        "pools = [\"web\"]\nprotocol = \"tcp\"\n[listeners.shadow]\npolicy = \"c\"\n",
    );
    let shown = assert_key(&text, "listeners[0].shadow");
    assert!(
        shown.contains("tcp listener's connections are not shadowed"),
        "{shown}"
    );
}

#[test]
fn a_missing_candidate_file_is_reported_with_the_shadow_key() {
    let config = parse_ok(&with_shadow("[listeners.shadow]\npolicy = \"candidate\""));
    let keys: Vec<String> = config
        .check_policy_files()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["listeners[0].policy", "listeners[0].shadow.policy"]);
}

#[test]
fn a_redirecting_listener_has_no_shadow() {
    let text = minimal_with(
        "pools = [\"web\"]\n",
        "pools = [\"web\"]\nredirect_to_https = 443\n[listeners.shadow]\npolicy = \"c\"\n",
    );
    let shown = assert_key(&text, "listeners[0].shadow");
    assert!(shown.contains("makes no decisions to shadow"), "{shown}");
}
