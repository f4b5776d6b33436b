//! Operations on the real binary: SIGUSR1 reopening the access log after
//! a rotation, and the rate limit on the log lines of a policy that
//! fails every decision.
//!
//! Each test starts its own backend and proxy on 127.0.0.1 port 0 and
//! learns the proxy's port from its JSON log lines.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Backend, HANG, Proxy, config_text, get_once, is_ok, policy_folder};

/// Sends `GET {prefix}-{i}` for each `i` in `0..count`, each answered 200.
async fn send(proxy: SocketAddr, prefix: &str, count: usize) {
    for i in 0..count {
        let response = get_once(proxy, &format!("{prefix}-{i}")).await.unwrap();
        assert!(is_ok(&response), "{response}");
    }
}

/// The paths of the whole JSON access log lines in `file` (none when
/// missing); a line the writer is still writing is left out.
fn logged_paths(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|line| support::field(line, "path"))
        .collect()
}

/// Polls `file` (the writer is a background thread) until its lines hold
/// `count` paths starting with `prefix`; returns all its paths.
async fn await_lines(file: &Path, prefix: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + HANG;
    loop {
        let paths = logged_paths(file);
        if paths.iter().filter(|p| p.starts_with(prefix)).count() >= count {
            return paths;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {paths:?}, not {count} lines for {prefix}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// logrotate's move-then-signal: the lines before the move are in the
/// moved file, the lines after SIGUSR1 in a new file at the configured
/// path, none lost or mixed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log_after_a_move() {
    let backend = Backend::start().await;
    let dir = policy_folder();
    let config = dir.path().join("wasmroute.toml");
    let log = "\n[access_log]\npath = \"access.log\"\nformat = \"json\"\n";
    std::fs::write(&config, config_text(&[backend.addr], "30s", log)).unwrap();
    let (proxy, address) = Proxy::started(config, &[]).await;
    let (current, moved) = (
        dir.path().join("access.log"),
        dir.path().join("access.log.1"),
    );
    send(address, "/before", 20).await;
    await_lines(&current, "/before-", 20).await;
    std::fs::rename(&current, &moved).unwrap();

    proxy.signal("USR1");
    // Past this line the writer opens the path again before its next line.
    let proxy = proxy
        .after(&["SIGUSR1: the access log is reopened before its next line"])
        .await;
    send(address, "/after", 20).await;
    let fresh = await_lines(&current, "/after-", 20).await;
    let rotated = logged_paths(&moved);
    let expected = |prefix: &str| (0..20).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>();
    assert_eq!(rotated, expected("/before"), "the moved file");
    assert_eq!(fresh, expected("/after"), "the file opened again");
    drop(proxy);
}

/// The decision failure lines' message (warn, by `http::pipeline`).
const DECISION_FAILED: &str = "\"message\":\"policy decision failed (one line per 5s";

/// The number value of `"name":N` in a JSON log line.
fn number(line: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{name} is no number in {line}"))
}

/// A policy failing every decision (the `bad-decision` test policy: an
/// unknown pool, which does not trip the breaker, so every request calls
/// it) is logged once, then once per interval with the count of the
/// failures not logged: 300 failed requests in a row give one or two
/// lines per 5 s, not 300, and every failure is either logged or counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_failing_every_decision_logs_a_bounded_number_of_lines() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let module = wasmroute_e2e::guests::BAD_DECISION;
    std::fs::write(dir.path().join("policies/bad-decision.wasm"), module).unwrap();
    let config = dir.path().join("wasmroute.toml");
    let text = format!(
        "[policies]\ndir = \"policies\"\n\n[[listeners]]\nname = \"edge\"\n\
         address = \"127.0.0.1:0\"\npolicy = \"bad-decision\"\npools = [\"web\"]\n\
         on_error = \"reject\"\n\n[[pools]]\nname = \"web\"\n\
         backends = [ {{ address = \"{}\" }} ]\n",
        backend.addr
    );
    std::fs::write(&config, text).unwrap();
    let (proxy, address) = Proxy::started(config, &[]).await;

    let started = Instant::now();
    let mut failed = 0u64;
    let mut fail_once = async || {
        let response = get_once(address, "/").await.unwrap();
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        assert!(response.ends_with("routing policy failed\n"), "{response}");
        failed += 1;
    };
    for _ in 0..300 {
        fail_once().await;
    }
    // Until a line accounts for more than the 300 (a probe's, once the
    // interval has passed), one failing request per tick.
    let mut lines: Vec<String> = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(30);
    let accounted = |lines: &[String]| lines.iter().map(|l| 1 + number(l, "suppressed")).sum();
    while accounted(&lines) <= 300 {
        assert!(Instant::now() < deadline, "no summary line: {lines:?}");
        ticks.tick().await;
        fail_once().await;
        let arrived = proxy.arrived_lines().into_iter();
        lines.extend(arrived.filter(|line| line.contains(DECISION_FAILED)));
    }
    let elapsed = started.elapsed();
    let first = &lines[0];
    assert!(first.contains("\"level\":\"WARN\""), "{first}");
    assert!(first.contains("\"listener\":\"edge\""), "{first}");
    assert!(first.contains("\"policy\":\"bad-decision\""), "{first}");
    assert!(first.contains("invalid decision"), "{first}");
    assert_eq!(number(first, "suppressed"), 0, "the first failure: {first}");
    let last = lines.last().unwrap();
    assert!(number(last, "suppressed") > 0, "the summary line: {last}");
    // Each line accounts for itself and the failures suppressed before it.
    let accounted: u64 = accounted(&lines);
    assert!(
        accounted <= failed,
        "{accounted} accounted, {failed} failed"
    );
    let bound = 2 + elapsed.as_secs() / 5;
    assert!(
        lines.len() as u64 <= bound,
        "{} lines in {elapsed:?} for {failed} failures: {lines:#?}",
        lines.len()
    );
}
