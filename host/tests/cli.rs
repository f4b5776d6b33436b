//! The `wasmroute check --config FILE` contract (the contract in docs/config.md): exit
//! 1 with one `FILE: key: reason` line per error on stderr, exit 0 and a
//! short OK line for a valid config.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Upper bound for one run of the binary.
const RUN: Duration = Duration::from_secs(30);

/// Runs `wasmroute <args>`, killing it if it outlives [`RUN`].
fn wasmroute(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_wasmroute"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasmroute");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN) {
        Ok(output) => output.expect("wait for wasmroute"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("wasmroute {args:?} did not finish within {RUN:?}");
        }
    }
}

const VALID: &str = r#"[policies]
dir = "policies"
decision_timeout = "5ms"

[[listeners]]
name = "edge"
address = "127.0.0.1:0"
protocol = "http"
policy = "round-robin"
pools = ["web"]
on_error = "fallback"

[[listeners]]
name = "other"
address = "127.0.0.1:0"
policy = "round-robin"
pools = ["web", "video"]

[[pools]]
name = "web"
backends = [ { address = "127.0.0.1:9001", weight = 2 }, { address = "127.0.0.1:9002" } ]

[[pools]]
name = "video"
backends = [ { address = "127.0.0.1:9003" } ]
"#;

/// A folder with `policies/round-robin.wasm` and `wasmroute.toml` holding
/// `config`; returns (folder, config path).
fn setup(config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let module = wasmroute::bundled::get("round-robin").expect("round-robin is bundled");
    std::fs::write(dir.path().join("policies/round-robin.wasm"), module).unwrap();
    let path = dir.path().join("wasmroute.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

fn check(path: &Path) -> (Option<i32>, String, String) {
    let out = wasmroute(&["check", "--config", path.to_str().unwrap()]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that `check` fails with exit 1 and a `FILE: <key>: reason` line
/// for every key (the key path may continue with an index or a subkey).
fn assert_rejected(label: &str, config: &str, keys: &[&str]) {
    let (_dir, path) = setup(config);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(
        code,
        Some(1),
        "{label}: exit code (stdout: {stdout}, stderr: {stderr})"
    );
    for key in keys {
        let prefix = format!("wasmroute.toml: {key}");
        let line = stderr.lines().find(|l| l.contains(&prefix));
        let line =
            line.unwrap_or_else(|| panic!("{label}: no line naming `{key}` in stderr:\n{stderr}"));
        let rest = &line[line.find(&prefix).unwrap() + prefix.len()..];
        assert!(
            rest.starts_with(": ") || rest.starts_with('[') || rest.starts_with('.'),
            "{label}: `{key}` is not the key path in {line:?}"
        );
        let reason = rest.split_once(": ").map(|(_, r)| r.trim()).unwrap_or("");
        assert!(!reason.is_empty(), "{label}: no reason in {line:?}");
    }
}

#[test]
fn valid_config_passes() {
    let (_dir, path) = setup(VALID);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.trim().is_empty(), "an OK line on stdout");
    assert!(stdout.lines().count() <= 3, "a short OK line: {stdout}");
}

#[test]
fn unknown_key() {
    let config = VALID.replace(
        "on_error = \"fallback\"",
        "on_error = \"fallback\"\ncolour = \"blue\"",
    );
    assert_rejected("unknown key", &config, &["listeners[0].colour"]);
}

#[test]
fn listener_naming_a_missing_pool() {
    let config = VALID.replace(
        "pools = [\"web\", \"video\"]",
        "pools = [\"web\", \"audio\"]",
    );
    assert_rejected("missing pool", &config, &["listeners[1].pools"]);
}

#[test]
fn missing_policy_file() {
    let config = VALID.replacen("policy = \"round-robin\"", "policy = \"no-such-policy\"", 1);
    assert_rejected("missing policy", &config, &["listeners[0].policy"]);
}

#[test]
fn duplicate_listener_names() {
    let config = VALID.replace("name = \"other\"", "name = \"edge\"");
    assert_rejected("duplicate listener", &config, &["listeners[1].name"]);
}

#[test]
fn duplicate_pool_names() {
    let config = VALID.replace("name = \"video\"", "name = \"web\"");
    assert_rejected("duplicate pool", &config, &["pools[1].name"]);
}

#[test]
fn bad_address() {
    let config = VALID.replacen(
        "address = \"127.0.0.1:0\"",
        "address = \"127.0.0.1:99999\"",
        1,
    );
    assert_rejected("bad address", &config, &["listeners[0].address"]);
}

#[test]
fn bad_duration() {
    let config = VALID.replace("\"5ms\"", "\"5 parsecs\"");
    assert_rejected("bad duration", &config, &["policies.decision_timeout"]);
}

#[test]
fn zero_weight() {
    let config = VALID.replace("weight = 2", "weight = 0");
    assert_rejected("zero weight", &config, &["pools[0].backends[0].weight"]);
}

/// `VALID` with health, timeout, retry and passive keys on pool `web`.
fn with_health_keys(health: &str, passive: &str, pool_keys: &str) -> String {
    VALID.replace(
        "{ address = \"127.0.0.1:9002\" } ]\n",
        &format!(
            "{{ address = \"127.0.0.1:9002\" }} ]\n{pool_keys}\n[pools.health]\n{health}\n[pools.passive]\n{passive}\n"
        ),
    )
}

#[test]
fn health_timeout_and_retry_keys_pass() {
    let config = with_health_keys(
        "path = \"/healthz\"\ninterval = \"2s\"\ntimeout = \"1s\"\nrise = 3\nfall = 2\nexpect_status = \"200-299\"\nexpect_body = \"ok\"\njitter = \"200ms\"",
        "consecutive_failures = 3\nerror_rate_percent = 50\nmin_requests = 10\nejection_time = \"10s\"\nmax_ejection_time = \"2m\"\nmax_ejected_percent = 30",
        "connect_timeout = \"500ms\"\nresponse_timeout = \"10s\"\nidle_timeout = \"30s\"\nretries = 3",
    );
    let (_dir, path) = setup(&config);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
}

#[test]
fn bad_health_timeout_and_retry_keys() {
    let config = with_health_keys(
        "expect_status = \"200-99\"\nexpect_body = \"ok\"\ninterval = \"100ms\"\njitter = \"1s\"\nrise = 0",
        "error_rate_percent = 120\nmin_requests = 0\nejection_time = \"1m\"\nmax_ejection_time = \"1s\"\nmax_ejected_percent = 101\nconsecutive = 2",
        "connect_timeout = \"0s\"\nresponse_timeout = \"30\"\nidle_timeout = \"soon\"\nretries = 50",
    );
    // An unknown key stops parsing (a type-level error) and is reported alone.
    assert_rejected(
        "unknown passive key",
        &config,
        &["pools[0].passive.consecutive"],
    );
    let config = config.replace("\nconsecutive = 2", "");
    let keys = [
        "pools[0].health.expect_status",
        "pools[0].health.expect_body",
        "pools[0].health.jitter",
        "pools[0].health.rise",
        "pools[0].passive.error_rate_percent",
        "pools[0].passive.min_requests",
        "pools[0].passive.max_ejection_time",
        "pools[0].passive.max_ejected_percent",
        "pools[0].connect_timeout",
        "pools[0].response_timeout",
        "pools[0].idle_timeout",
        "pools[0].retries",
    ];
    assert_rejected("bad health keys", &config, &keys);
}

#[test]
fn every_error_gets_its_own_line() {
    let config = VALID
        .replace(
            "pools = [\"web\", \"video\"]",
            "pools = [\"web\", \"audio\"]",
        )
        .replace("weight = 2", "weight = 0")
        .replacen(
            "address = \"127.0.0.1:0\"",
            "address = \"127.0.0.1:99999\"",
            1,
        );
    let keys = [
        "listeners[0].address",
        "listeners[1].pools",
        "pools[0].backends[0].weight",
    ];
    assert_rejected("three errors", &config, &keys);
}

#[test]
fn missing_config_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = check(&dir.path().join("wasmroute.toml"));
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("wasmroute.toml"),
        "the file is named: {stderr}"
    );
}

/// A self-signed certificate for `name` and its key, as PEM (cert, key);
/// `expired` makes it valid only in 2020.
fn self_signed(name: &str, expired: bool) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 12, 31);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// `VALID` plus an https listener `secure` with one certificate per stem
/// (`<stem>.pem`, `<stem>.key` next to the config).
fn https_config(stems: &[&str]) -> String {
    let mut text = VALID.to_owned();
    text.push_str(
        "\n[[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\nprotocol = \"https\"\n\
         policy = \"round-robin\"\npools = [\"web\"]\n",
    );
    for stem in stems {
        text.push_str(&format!(
            "[[listeners.certificates]]\ncert = \"{stem}.pem\"\nkey = \"{stem}.key\"\n"
        ));
    }
    text
}

#[test]
fn https_config_with_good_certificates_passes() {
    let (dir, path) = setup(&https_config(&["a", "b"]));
    for (stem, name) in [("a", "a.test"), ("b", "*.b.test")] {
        let (cert, key) = self_signed(name, false);
        std::fs::write(dir.path().join(format!("{stem}.pem")), cert).unwrap();
        std::fs::write(dir.path().join(format!("{stem}.key")), key).unwrap();
    }
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
}

#[test]
fn bad_certificates_are_refused_with_file_and_reason() {
    let (dir, path) = setup(&https_config(&["good", "mismatched", "expired", "missing"]));
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    let (good_cert, good_key) = self_signed("good.test", false);
    let (_, other_key) = self_signed("other.test", false);
    let (expired_cert, expired_key) = self_signed("expired.test", true);
    write("good.pem", &good_cert);
    write("good.key", &good_key);
    write("mismatched.pem", &good_cert);
    write("mismatched.key", &other_key);
    write("expired.pem", &expired_cert);
    write("expired.key", &expired_key);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let expected = [
        (
            "listeners[2].certificates[1].key: ",
            "mismatched.key: private key does not match the certificate in",
        ),
        (
            "listeners[2].certificates[2].cert: ",
            "expired.pem: certificate expired at",
        ),
        (
            "listeners[2].certificates[3].cert: ",
            "missing.pem: cannot read:",
        ),
    ];
    for (key, reason) in expected {
        let line = stderr.lines().find(|l| l.contains(key));
        let line = line.unwrap_or_else(|| panic!("no line for {key} in:\n{stderr}"));
        assert!(line.contains("wasmroute.toml: "), "{line}");
        assert!(line.contains(reason), "{line}");
    }
    assert!(
        !stderr.contains("certificates[0]"),
        "the good pair is fine:\n{stderr}"
    );
}

#[test]
fn garbage_key_file_is_refused() {
    let (dir, path) = setup(&https_config(&["a"]));
    let (cert, _) = self_signed("a.test", false);
    std::fs::write(dir.path().join("a.pem"), cert).unwrap();
    std::fs::write(dir.path().join("a.key"), "not a key\n").unwrap();
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("listeners[2].certificates[0].key: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("a.key: no usable PEM private key"),
        "{stderr}"
    );
}

/// A module that is not a component is refused on one line (wasmtime's
/// parse error prints its byte arrays over many).
#[test]
fn a_refused_module_is_one_line() {
    let (dir, path) = setup(VALID);
    std::fs::write(
        dir.path().join("policies/round-robin.wasm"),
        b"not wasm\0\x01",
    )
    .unwrap();
    let (code, _stdout, stderr) = check(&path);
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "no error printed");
    for line in &lines {
        assert!(
            line.contains("wasmroute.toml: listeners["),
            "not a FILE: key: reason line: {line:?}\n{stderr}"
        );
    }
}

/// `VALID` with its `edge` listener turned into a `tcp` one running
/// `policy`.
fn tcp_config(policy: &str) -> String {
    VALID
        .replacen(
            "protocol = \"http\"",
            "protocol = \"tcp\"\nidle_timeout = \"10m\"",
            1,
        )
        .replacen(
            "policy = \"round-robin\"",
            &format!("policy = \"{policy}\""),
            1,
        )
}

#[test]
fn check_prints_a_tcp_listener() {
    let (_dir, path) = setup(&tcp_config("round-robin"));
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("listener `edge`: tcp on 127.0.0.1:0, policy `round-robin`, pools [web]"),
        "{stdout}"
    );
    assert!(stdout.contains("listener `other`: http on"), "{stdout}");
}

/// `content-router` decides HTTP requests only (its policy type has no
/// `ConnectionPolicy`: it routes by path); `check` names the module and
/// why.
#[test]
fn check_refuses_a_tcp_listener_whose_module_decides_no_connections() {
    let (dir, path) = setup(&tcp_config("content-router"));
    let module = wasmroute::bundled::get("content-router").expect("content-router is bundled");
    std::fs::write(dir.path().join("policies/content-router.wasm"), module).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let want = format!(
        "{}: listeners[0].policy: listener `edge`: module `content-router` (wasmroute:policy@0.3) \
         does not decide TCP connections: its policy type does not implement ConnectionPolicy",
        path.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
}

/// `VALID` with `[listeners.shadow]` holding `keys` on its `edge`
/// listener (live policy `round-robin`).
fn shadow_config(keys: &str) -> String {
    VALID.replacen(
        "on_error = \"fallback\"",
        &format!("on_error = \"fallback\"\n[listeners.shadow]\n{keys}"),
        1,
    )
}

/// [`setup`] plus `policies/candidate.wasm` (the shipped `content-router`).
fn setup_with_candidate(config: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = setup(config);
    let module = wasmroute::bundled::get("content-router").expect("content-router is bundled");
    std::fs::write(dir.path().join("policies/candidate.wasm"), module).unwrap();
    (dir, path)
}

#[test]
fn check_prints_a_shadow() {
    let (_dir, path) = setup_with_candidate(&shadow_config("policy = \"candidate\"\nsample = 0.5"));
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("policy `round-robin`, shadow `candidate` (sample 0.5), pools [web]"),
        "{stdout}"
    );
}

#[test]
fn check_refuses_bad_shadows() {
    let cases = [
        (
            "shadow equal to live",
            "policy = \"round-robin\"",
            "listeners[0].shadow.policy",
        ),
        (
            "missing shadow module",
            "policy = \"no-such\"",
            "listeners[0].shadow.policy",
        ),
        (
            "sample above 1",
            "policy = \"round-robin-2\"\nsample = 1.5",
            "listeners[0].shadow.sample",
        ),
        (
            "NaN sample",
            "policy = \"round-robin-2\"\nsample = nan",
            "listeners[0].shadow.sample",
        ),
        (
            "unknown shadow key",
            "policy = \"x\"\nweight = 2",
            "listeners[0].shadow.weight",
        ),
    ];
    for (label, keys, key) in cases {
        assert_rejected(label, &shadow_config(keys), &[key]);
    }
}

/// A candidate whose `init` refuses the listener does not stop `serve`
/// (its listener serves, the shadow counts errors) but fails `check`.
#[test]
fn check_refuses_a_candidate_whose_init_fails() {
    let keys = "policy = \"candidate\"\n[listeners.shadow.policy_config]\nunknown_key = 1";
    let (_dir, path) = setup_with_candidate(&shadow_config(keys));
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let want = format!(
        "{}: listeners[0].shadow.policy: shadow policy `candidate` refused listener `edge`: init refused the config",
        path.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
}

/// `check` looks the backend names up and says what they give; a name
/// that does not resolve now is a warning, not a failure (the server
/// starts its pool without it and keeps asking).
#[test]
fn check_reports_backend_names_and_passes_with_one_that_does_not_resolve() {
    let named = VALID.replace("127.0.0.1:9003", "localhost:9003");
    let (_dir, path) = setup(&named);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let line = stdout.lines().find(|l| l.starts_with("name localhost: "));
    let line = line.unwrap_or_else(|| panic!("no line for localhost in:\n{stdout}"));
    assert!(line.contains("127.0.0.1"), "{line}");

    // A nameserver on a loopback port nobody answers on.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nameserver = closed.local_addr().unwrap();
    drop(closed);
    // (The resolver answers `localhost` itself, so another name.)
    let unanswered = VALID.replace("127.0.0.1:9003", "web.internal:9003");
    let config = format!("{unanswered}\n[resolver]\nnameservers = [\"{nameserver}\"]\n");
    let (_dir, path) = setup(&config);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("warning: name web.internal: does not resolve now"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
}
