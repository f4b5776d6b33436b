//! Config tests: a full valid file, then one test per kind of mistake
//! (in `invalid`), each asserting the exact key in the error text.

mod health;
mod invalid;
mod names;
mod proxy_protocol;
mod server;
mod shadow;
mod tcp;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The README config example, with the pools it names defined.
const FULL: &str = r#"
[admin]
address = "127.0.0.1:9901"

[policies]
dir = "policies.d"
decision_timeout = "5ms"
memory_limit = "16MiB"

[[listeners]]
name = "edge"
address = "127.0.0.1:8080"
protocol = "http"
policy = "content-router"
pools = ["web", "video", "billing"]
on_error = "fallback"
[listeners.policy_config]
video_prefix = "/video"

[[listeners]]
name = "secure"
address = "127.0.0.1:8443"
protocol = "https"
policy = "round-robin"
pools = ["web"]
[[listeners.certificates]]
cert = "certs/example.pem"
key = "/etc/wasmroute/example.key"

[[pools]]
name = "web"
backends = [ { address = "127.0.0.1:9001", weight = 2 }, { address = "127.0.0.1:9002" } ]
[pools.health]
path = "/healthz"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2

[[pools]]
name = "video"
backends = [ { address = "[::1]:9003" } ]
[pools.health]

[[pools]]
name = "billing"
backends = [ { address = "127.0.0.1:9004", weight = 5 } ]
"#;

/// The smallest valid file; `invalid` tests break one thing in it.
pub(super) const MINIMAL: &str = r#"
[policies]
dir = "policies.d"

[[listeners]]
name = "edge"
address = "127.0.0.1:8080"
policy = "rr"
pools = ["web"]

[[pools]]
name = "web"
backends = [{ address = "127.0.0.1:9001" }]
"#;

fn file() -> PathBuf {
    PathBuf::from("/srv/wasmroute/wasmroute.toml")
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

pub(super) fn parse_ok(text: &str) -> Config {
    Config::parse(text, &file()).unwrap_or_else(|e| panic!("should parse:\n{e}"))
}

/// The error text for `text`, which must fail to parse.
pub(super) fn errors(text: &str) -> String {
    match Config::parse(text, &file()) {
        Ok(config) => panic!("should fail, parsed: {config:#?}"),
        Err(e) => e.to_string(),
    }
}

/// `MINIMAL` with `from` replaced by `to` (`from` must occur).
pub(super) fn minimal_with(from: &str, to: &str) -> String {
    assert!(MINIMAL.contains(from), "{from:?} not in MINIMAL");
    MINIMAL.replacen(from, to, 1)
}

/// Asserts that parsing `text` fails with an error at `key`; returns the text.
#[track_caller]
pub(super) fn assert_key(text: &str, key: &str) -> String {
    let shown = errors(text);
    let want = format!("/srv/wasmroute/wasmroute.toml: {key}: ");
    assert!(shown.contains(&want), "expected key `{key}` in:\n{shown}");
    shown
}

#[test]
fn full_config_parses_with_values_and_defaults() {
    let config = parse_ok(FULL);
    assert_eq!(config.file, file());
    assert_eq!(
        config.admin,
        Some(AdminConfig {
            address: addr("127.0.0.1:9901"),
            token: None,
        })
    );
    let policies = PoliciesConfig {
        dir: PathBuf::from("/srv/wasmroute/policies.d"),
        decision_timeout: Duration::from_millis(5),
        memory_limit: 16 * 1024 * 1024,
    };
    assert_eq!(config.policies, policies);
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.pools.len(), 3);
}

#[test]
fn full_config_listeners() {
    let config = parse_ok(FULL);
    let edge = config.listener("edge").unwrap();
    assert_eq!(edge.address, addr("127.0.0.1:8080"));
    assert_eq!(edge.protocol, Protocol::Http);
    assert_eq!(edge.policy, "content-router");
    assert_eq!(edge.pools, ["web", "video", "billing"]);
    assert_eq!(edge.on_error, OnError::Fallback);
    let prefix = edge
        .policy_config
        .get("video_prefix")
        .and_then(|v| v.as_str());
    assert_eq!(prefix, Some("/video"));
    assert!(edge.certificates.is_empty());

    let secure = config.listener("secure").unwrap();
    assert_eq!(secure.protocol, Protocol::Https);
    assert!(secure.policy_config.is_empty());
    let cert = CertificateConfig {
        cert: PathBuf::from("/srv/wasmroute/certs/example.pem"),
        key: PathBuf::from("/etc/wasmroute/example.key"),
    };
    assert_eq!(secure.certificates, [cert]);
    assert!(config.listener("nope").is_none());
}

#[test]
fn full_config_pools() {
    let config = parse_ok(FULL);
    let web = config.pool("web").unwrap();
    let backends = [
        BackendConfig {
            address: addr("127.0.0.1:9001"),
            weight: 2,
        },
        BackendConfig {
            address: addr("127.0.0.1:9002"),
            weight: 1,
        },
    ];
    assert_eq!(web.backends, backends);
    let health = HealthConfig {
        path: Some("/healthz".to_owned()),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 2,
        expect_status: (200, 399),
        expect_body: None,
        jitter: Duration::from_millis(100),
        steps: Vec::new(),
        port: None,
    };
    assert_eq!(web.health, Some(health));

    let video = config.pool("video").unwrap();
    assert!(video.backends[0].address.is_ipv6());
    let default_health = HealthConfig {
        path: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 2,
        expect_status: (200, 399),
        expect_body: None,
        jitter: Duration::from_millis(100),
        steps: Vec::new(),
        port: None,
    };
    assert_eq!(video.health, Some(default_health));
    assert_eq!(config.pool("billing").unwrap().health, None);
    assert!(config.pool("nope").is_none());
}

#[test]
fn minimal_config_gets_defaults() {
    let config = parse_ok(MINIMAL);
    assert_eq!(config.admin, None);
    assert_eq!(config.policies.decision_timeout, Duration::from_millis(5));
    assert_eq!(config.policies.memory_limit, 16 << 20);
    let edge = &config.listeners[0];
    assert_eq!(edge.protocol, Protocol::Http);
    assert_eq!(edge.on_error, OnError::Fallback);
    assert_eq!(edge.backlog, 4096);
    assert_eq!(edge.send_timeout, Duration::from_secs(60));
    assert_eq!(config.pools[0].backends[0].weight, 1);
    assert_eq!(config.pools[0].upstream, UpstreamConfig::default());
    assert_eq!(config.pools[0].passive, Some(PassiveConfig::default()));
}

#[test]
fn health_timeout_retry_and_passive_keys() {
    let text = MINIMAL.to_owned()
        + "connect_timeout = \"150ms\"\nresponse_timeout = \"2s\"\nidle_timeout = \"10s\"\nretries = 0\n"
        + "[pools.health]\npath = \"/up\"\ninterval = \"200ms\"\nexpect_status = \"200-204\"\nexpect_body = \"ok\"\njitter = \"0s\"\n"
        + "[pools.passive]\nconsecutive_failures = 3\nerror_rate_percent = 40\nmin_requests = 5\nejection_time = \"1s\"\nmax_ejection_time = \"4s\"\nmax_ejected_percent = 34\n";
    let config = parse_ok(&text);
    let pool = &config.pools[0];
    assert_eq!(
        pool.upstream,
        UpstreamConfig {
            connect_timeout: Duration::from_millis(150),
            response_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            retries: 0,
        }
    );
    let health = pool.health.as_ref().unwrap();
    assert_eq!(health.expect_status, (200, 204));
    assert_eq!(health.expect_body.as_deref(), Some("ok"));
    assert_eq!(health.jitter, Duration::ZERO);
    assert_eq!(health.interval, Duration::from_millis(200));
    assert_eq!(
        pool.passive,
        Some(PassiveConfig {
            consecutive_failures: 3,
            error_rate_percent: 40,
            min_requests: 5,
            ejection_time: Duration::from_secs(1),
            max_ejection_time: Duration::from_secs(4),
            max_ejected_percent: 34,
        })
    );
    let single = MINIMAL.to_owned() + "[pools.health]\npath = \"/\"\nexpect_status = 204\n";
    assert_eq!(
        parse_ok(&single).pools[0]
            .health
            .as_ref()
            .unwrap()
            .expect_status,
        (204, 204)
    );
    let off = MINIMAL.to_owned() + "[pools.passive]\nenabled = false\n";
    assert_eq!(parse_ok(&off).pools[0].passive, None);
}

#[test]
fn admin_token_is_kept() {
    let token = "0123456789abcdef-token";
    let config = parse_ok(&format!("[admin]\ntoken = \"{token}\"\n{MINIMAL}"));
    assert_eq!(config.admin.unwrap().token.as_deref(), Some(token));
}

#[test]
fn admin_section_without_address_defaults_to_loopback() {
    let config = parse_ok(&format!("[admin]\n{MINIMAL}"));
    assert_eq!(
        config.admin,
        Some(AdminConfig {
            address: addr("127.0.0.1:9901"),
            token: None,
        })
    );
}

#[test]
fn access_log_paths_resolve_and_default_to_json() {
    let config = parse_ok(&format!("[access_log]\npath = \"logs/a.log\"\n{MINIMAL}"));
    assert_eq!(
        config.access_log,
        Some(AccessLogConfig {
            target: LogTarget::File(PathBuf::from("/srv/wasmroute/logs/a.log")),
            format: LogFormat::Json,
            queue: 8192,
        })
    );
    let text = format!("[access_log]\npath = \"-\"\nformat = \"combined\"\nqueue = 4\n{MINIMAL}");
    let log = parse_ok(&text).access_log.unwrap();
    assert_eq!(
        (log.target, log.format, log.queue),
        (LogTarget::Stdout, LogFormat::Combined, 4)
    );
    assert_eq!(parse_ok(MINIMAL).access_log, None);
}

#[test]
fn other_values_and_forms() {
    let text = minimal_with(
        "dir = \"policies.d\"",
        "dir = \"/abs/p\"\nmemory_limit = 2097152\ndecision_timeout = \"250us\"",
    )
    .replace(
        "pools = [\"web\"]",
        "pools = [\"web\"]\nprotocol = \"tcp\"\non_error = \"reject\"\nbacklog = 65535\npeek_timeout = \"1.5s\"",
    );
    let config = parse_ok(&text);
    assert_eq!(config.policies.dir, Path::new("/abs/p"));
    assert_eq!(config.policies.memory_limit, 2 << 20);
    assert_eq!(config.policies.decision_timeout, Duration::from_micros(250));
    assert_eq!(config.listeners[0].protocol, Protocol::Tcp);
    assert_eq!(config.listeners[0].on_error, OnError::Reject);
    assert_eq!(config.listeners[0].backlog, 65535);
    assert_eq!(config.listeners[0].tcp.peek, Duration::from_millis(1500));
}

#[test]
fn relative_file_name_resolves_to_relative_paths() {
    let config = Config::parse(MINIMAL, Path::new("wasmroute.toml")).unwrap();
    assert_eq!(config.policies.dir, Path::new("policies.d"));
}

#[test]
fn port_zero_listeners_may_share_an_address() {
    let second = "\n[[listeners]]\nname = \"two\"\naddress = \"127.0.0.1:0\"\npolicy = \"rr\"\npools = [\"web\"]\n";
    let text = minimal_with("127.0.0.1:8080", "127.0.0.1:0") + second;
    assert_eq!(parse_ok(&text).listeners.len(), 2);
}

#[test]
fn policy_files_are_checked_separately() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasmroute.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let config = Config::load(&path).expect("load does not need the policy file");
    let missing = config.check_policy_files();
    assert_eq!(missing.len(), 1);
    let shown = missing[0].to_string();
    assert!(shown.contains("listeners[0].policy: "), "{shown}");
    let expected = dir.path().join("policies.d").join("rr.wasm");
    assert!(shown.contains(&expected.display().to_string()), "{shown}");

    std::fs::create_dir(dir.path().join("policies.d")).unwrap();
    std::fs::write(&expected, b"\0asm").unwrap();
    assert!(config.check_policy_files().is_empty());
}

#[test]
fn unreadable_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let shown = Config::load(&path).unwrap_err().to_string();
    assert!(
        shown.contains("missing.toml: (file): cannot read"),
        "{shown}"
    );
}
