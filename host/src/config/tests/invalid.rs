//! One test per kind of mistake; each asserts the key in the error text.

use super::{MINIMAL, assert_key, errors, minimal_with};

const SECOND_LISTENER: &str = r#"
[[listeners]]
name = "two"
address = "127.0.0.1:8081"
policy = "rr"
pools = ["web"]
"#;

const SECOND_POOL: &str = r#"
[[pools]]
name = "api"
backends = [{ address = "127.0.0.1:9002" }]
"#;

const HEALTH: &str = "\n[pools.health]\n";

#[test]
fn unknown_key_names_its_path() {
    let shown = assert_key(
        &minimal_with("address =", "adress ="),
        "listeners[0].adress",
    );
    assert!(
        shown.contains("unknown field `adress`, expected one of"),
        "{shown}"
    );
    assert!(shown.contains("(line 7, column 1)"), "{shown}");
}

#[test]
fn unknown_top_level_section() {
    assert_key(&format!("[admn]\n{MINIMAL}"), "admn");
}

#[test]
fn ill_typed_value_names_its_path() {
    let text = minimal_with("9001\" }", "9001\", weight = \"two\" }");
    assert_key(&text, "pools[0].backends[0].weight");
}

#[test]
fn syntax_error_has_line_and_column() {
    let shown = assert_key(
        &minimal_with("name = \"edge\"", "name = \"edge"),
        "(syntax)",
    );
    assert!(shown.contains("line 6, column"), "{shown}");
}

#[test]
fn no_listeners() {
    let text = "[policies]\ndir = \"p\"\n[[pools]]\nname = \"web\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n";
    assert_key(text, "listeners");
}

#[test]
fn duplicate_listener_name() {
    let text = MINIMAL.to_owned() + &SECOND_LISTENER.replace("\"two\"", "\"edge\"");
    let shown = assert_key(&text, "listeners[1].name");
    assert!(shown.contains("also listeners[0]"), "{shown}");
}

#[test]
fn duplicate_pool_name() {
    let text = MINIMAL.to_owned() + &SECOND_POOL.replace("\"api\"", "\"web\"");
    assert_key(&text, "pools[1].name");
}

#[test]
fn duplicate_listener_address() {
    let text = MINIMAL.to_owned() + &SECOND_LISTENER.replace("8081", "8080");
    assert_key(&text, "listeners[1].address");
}

#[test]
fn empty_and_invalid_names() {
    assert_key(
        &minimal_with("name = \"edge\"", "name = \"\""),
        "listeners[0].name",
    );
    assert_key(&minimal_with("name = \"edge\"", ""), "listeners[0].name");
    let shown = assert_key(
        &minimal_with("name = \"web\"", "name = \"we b\""),
        "pools[0].name",
    );
    assert!(shown.contains("invalid name `we b`"), "{shown}");
}

#[test]
fn listener_without_pools() {
    assert_key(
        &minimal_with("pools = [\"web\"]", "pools = []"),
        "listeners[0].pools",
    );
}

#[test]
fn listener_naming_undefined_pool() {
    let text = minimal_with("pools = [\"web\"]", "pools = [\"web\", \"nope\"]");
    let shown = assert_key(&text, "listeners[0].pools[1]");
    assert!(shown.contains("unknown pool `nope`"), "{shown}");
}

#[test]
fn listener_naming_a_pool_twice() {
    let text = minimal_with("pools = [\"web\"]", "pools = [\"web\", \"web\"]");
    assert_key(&text, "listeners[0].pools[1]");
}

#[test]
fn missing_or_invalid_policy() {
    assert_key(&minimal_with("policy = \"rr\"", ""), "listeners[0].policy");
    assert_key(
        &minimal_with("policy = \"rr\"", "policy = \"\""),
        "listeners[0].policy",
    );
    assert_key(&minimal_with("\"rr\"", "\"../rr\""), "listeners[0].policy");
}

#[test]
fn pool_without_backends() {
    let text = minimal_with("[{ address = \"127.0.0.1:9001\" }]", "[]");
    assert_key(&text, "pools[0].backends");
}

#[test]
fn duplicate_backend_address() {
    let text = minimal_with("9001\" }", "9001\" }, { address = \"127.0.0.1:9001\" }");
    assert_key(&text, "pools[0].backends[1].address");
}

#[test]
fn zero_weight() {
    let text = minimal_with("9001\" }", "9001\", weight = 0 }");
    assert_key(&text, "pools[0].backends[0].weight");
}

#[test]
fn https_without_certificates() {
    let text = minimal_with("policy =", "protocol = \"https\"\npolicy =");
    assert_key(&text, "listeners[0].certificates");
}

#[test]
fn certificates_on_http_listener() {
    let cert = "\n[[listeners.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n";
    let text = minimal_with("\n[[pools]]", &format!("{cert}\n[[pools]]"));
    assert_key(&text, "listeners[0].certificates");
}

#[test]
fn certificate_without_key() {
    let cert = "\n[[listeners.certificates]]\ncert = \"a.pem\"\n";
    let text = minimal_with("policy =", "protocol = \"https\"\npolicy =")
        .replace("\n[[pools]]", &format!("{cert}\n[[pools]]"));
    assert_key(&text, "listeners[0].certificates[0].key");
}

#[test]
fn health_rise_and_fall_zero() {
    let text = MINIMAL.to_owned() + HEALTH + "rise = 0\nfall = 0\n";
    let shown = assert_key(&text, "pools[0].health.rise");
    assert!(shown.contains("pools[0].health.fall: "), "{shown}");
}

#[test]
fn health_path_without_slash() {
    let text = MINIMAL.to_owned() + HEALTH + "path = \"healthz\"\n";
    assert_key(&text, "pools[0].health.path");
}

#[test]
fn health_zero_interval_and_timeout() {
    let text = MINIMAL.to_owned() + HEALTH + "interval = \"0s\"\ntimeout = \"0ms\"\n";
    let shown = assert_key(&text, "pools[0].health.interval");
    assert!(shown.contains("pools[0].health.timeout: "), "{shown}");
}

#[test]
fn health_bad_expect_status_body_and_jitter() {
    for status in [
        "\"200-\"",
        "\"399-200\"",
        "\"ok\"",
        "99",
        "600",
        "\"200-700\"",
    ] {
        let text =
            MINIMAL.to_owned() + HEALTH + &format!("path = \"/\"\nexpect_status = {status}\n");
        let shown = assert_key(&text, "pools[0].health.expect_status");
        assert!(shown.contains("not a status or range"), "{shown}");
    }
    let text = MINIMAL.to_owned() + HEALTH + "expect_body = \"ok\"\nexpect_status = 200\n";
    let shown = assert_key(&text, "pools[0].health.expect_body");
    assert!(shown.contains("needs an HTTP check"), "{shown}");
    assert!(
        shown.contains("pools[0].health.expect_status: needs an HTTP check"),
        "{shown}"
    );
    let text = MINIMAL.to_owned() + HEALTH + "path = \"/\"\nexpect_body = \"\"\n";
    assert_key(&text, "pools[0].health.expect_body");
    let text = MINIMAL.to_owned() + HEALTH + "interval = \"100ms\"\njitter = \"200ms\"\n";
    let shown = assert_key(&text, "pools[0].health.jitter");
    assert!(shown.contains("longer than the interval"), "{shown}");
}

#[test]
fn bad_timeouts_and_retries() {
    let text = MINIMAL.to_owned()
        + "connect_timeout = \"0s\"\nresponse_timeout = \"5\"\nidle_timeout = \"1 fortnight\"\nretries = 11\n";
    let shown = assert_key(&text, "pools[0].connect_timeout");
    for key in ["response_timeout", "idle_timeout", "retries"] {
        assert!(
            shown.contains(&format!("pools[0].{key}: ")),
            "{key}: {shown}"
        );
    }
    assert!(shown.contains("at most 10"), "{shown}");
}

#[test]
fn bad_passive_keys() {
    let text = MINIMAL.to_owned()
        + "[pools.passive]\nerror_rate_percent = 101\nmax_ejected_percent = 200\nmin_requests = 0\nejection_time = \"10s\"\nmax_ejection_time = \"1s\"\n";
    let shown = assert_key(&text, "pools[0].passive.error_rate_percent");
    for key in ["max_ejected_percent", "min_requests", "max_ejection_time"] {
        assert!(
            shown.contains(&format!("pools[0].passive.{key}: ")),
            "{key}: {shown}"
        );
    }
    let text = MINIMAL.to_owned() + "[pools.passive]\nconsecutive = 3\n";
    assert_key(&text, "pools[0].passive.consecutive");
}

#[test]
fn hostname_listener_address_is_refused() {
    let text = minimal_with("127.0.0.1:8080", "localhost:8080");
    let shown = assert_key(&text, "listeners[0].address");
    assert!(shown.contains("expected IP:port"), "{shown}");
    assert_key(
        &minimal_with("127.0.0.1:9001", "::1:9001"),
        "pools[0].backends[0].address",
    );
    assert_key(
        &minimal_with("address = \"127.0.0.1:8080\"", ""),
        "listeners[0].address",
    );
}

#[test]
fn bad_admin_address() {
    assert_key(
        &format!("[admin]\naddress = \"127.0.0.1\"\n{MINIMAL}"),
        "admin.address",
    );
}

#[test]
fn short_or_spaced_admin_tokens() {
    let short = assert_key(
        &format!("[admin]\ntoken = \"short\"\n{MINIMAL}"),
        "admin.token",
    );
    assert!(short.contains("16 to 256 characters"), "{short}");
    let spaced = assert_key(
        &format!("[admin]\ntoken = \"0123456789 abcdefgh\"\n{MINIMAL}"),
        "admin.token",
    );
    assert!(spaced.contains("visible ASCII"), "{spaced}");
}

#[test]
fn missing_policies_dir() {
    assert_key(&minimal_with("dir = \"policies.d\"", ""), "policies.dir");
}

#[test]
fn bare_number_duration_is_a_type_error() {
    let text = minimal_with("\"policies.d\"", "\"policies.d\"\ndecision_timeout = 5");
    let shown = assert_key(&text, "policies.decision_timeout");
    assert!(shown.contains("expected a duration string"), "{shown}");
}

#[test]
fn bad_durations() {
    let key = "policies.decision_timeout";
    for value in ["\"5\"", "\"5 fortnights\"", "\"0ms\""] {
        let text = minimal_with(
            "\"policies.d\"",
            &format!("\"policies.d\"\ndecision_timeout = {value}"),
        );
        assert_key(&text, key);
    }
}

#[test]
fn bad_memory_limits() {
    let key = "policies.memory_limit";
    for value in [
        "\"512KiB\"",
        "1024",
        "\"16 MiB\"",
        "\"8GiB\"",
        "-1",
        "\"1.5MiB\"",
    ] {
        let text = minimal_with(
            "\"policies.d\"",
            &format!("\"policies.d\"\nmemory_limit = {value}"),
        );
        assert_key(&text, key);
    }
}

#[test]
fn unknown_protocol_and_on_error() {
    let text = minimal_with("policy =", "protocol = \"udp\"\npolicy =");
    assert_key(&text, "listeners[0].protocol");
    let text = minimal_with("policy =", "on_error = \"ignore\"\npolicy =");
    assert_key(&text, "listeners[0].on_error");
}

#[test]
fn bad_backlogs() {
    let key = "listeners[0].backlog";
    for value in ["0", "-1", "65536", "4294967296"] {
        let text = minimal_with("policy =", &format!("backlog = {value}\npolicy ="));
        let shown = assert_key(&text, key);
        assert!(shown.contains("from 1 to 65535"), "{value}: {shown}");
    }
    let text = minimal_with("policy =", "backlog = \"4096\"\npolicy =");
    assert_key(&text, key);
}

#[test]
fn bad_send_timeouts() {
    for value in ["\"0s\"", "\"5\"", "5"] {
        let text = minimal_with("policy =", &format!("send_timeout = {value}\npolicy ="));
        assert_key(&text, "listeners[0].send_timeout");
    }
}

#[test]
fn policy_config_is_free_form() {
    let text = minimal_with(
        "\n[[pools]]",
        "[listeners.policy_config]\nanything = { nested = [1, 2] }\n[[pools]]",
    );
    super::parse_ok(&text);
}

#[test]
fn all_errors_are_reported_together() {
    let text = minimal_with("127.0.0.1:8080", "nowhere")
        .replace("pools = [\"web\"]", "pools = [\"nope\"]")
        .replace("9001\" }", "9001\", weight = 0 }")
        .replace(
            "\"policies.d\"",
            "\"policies.d\"\ndecision_timeout = \"0s\"",
        )
        + SECOND_LISTENER.replace("\"two\"", "\"edge\"").as_str();
    let shown = errors(&text);
    let keys = [
        "listeners[0].address",
        "listeners[0].pools[0]",
        "pools[0].backends[0].weight",
        "policies.decision_timeout",
        "listeners[1].name",
    ];
    for key in keys {
        assert!(
            shown.contains(&format!(": {key}: ")),
            "missing `{key}` in:\n{shown}"
        );
    }
    assert_eq!(shown.lines().count(), keys.len(), "{shown}");
}

/// A type error no longer hides the rest: the ill-typed key, an unknown
/// key and a bad value elsewhere are all reported by one load.
#[test]
fn type_errors_and_value_errors_are_reported_together() {
    let text = minimal_with("9001\" }", "9001\", weight = \"two\" }")
        .replace(
            "address = \"127.0.0.1:8080\"",
            "address = \"nowhere\"\nbacklog = \"big\"",
        )
        .replace(
            "dir = \"policies.d\"",
            "dir = \"policies.d\"\ndecision_timeout = \"soon\"\ncolour = 1",
        );
    let shown = errors(&text);
    for key in [
        "pools[0].backends[0].weight",
        "listeners[0].backlog",
        "policies.colour",
        "listeners[0].address",
        "policies.decision_timeout",
    ] {
        let want = format!("/srv/wasmroute/wasmroute.toml: {key}: ");
        assert!(shown.contains(&want), "expected key `{key}` in:\n{shown}");
    }
    assert_eq!(shown.lines().count(), 5, "one line each:\n{shown}");
    // The first carries its position.
    assert!(shown.lines().next().unwrap().contains("(line "), "{shown}");
}
