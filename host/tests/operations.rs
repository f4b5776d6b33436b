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
    let (proxy, address) = tokio::task::spawn_blocking(move || {
        let proxy = Proxy::spawn(&config, &[]);
        let address = proxy.listening();
        (proxy, address)
    })
    .await
    .unwrap();
    let (current, moved) = (
        dir.path().join("access.log"),
        dir.path().join("access.log.1"),
    );
    send(address, "/before", 20).await;
    await_lines(&current, "/before-", 20).await;
    std::fs::rename(&current, &moved).unwrap();

    proxy.signal("USR1");
    // Past this line the writer opens the path again before its next line.
    let proxy = tokio::task::spawn_blocking(move || {
        proxy.wait_for("SIGUSR1: the access log is reopened before its next line");
        proxy
    })
    .await
    .unwrap();
    send(address, "/after", 20).await;
    let fresh = await_lines(&current, "/after-", 20).await;
    let rotated = logged_paths(&moved);
    let expected = |prefix: &str| (0..20).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>();
    assert_eq!(rotated, expected("/before"), "the moved file");
    assert_eq!(fresh, expected("/after"), "the file opened again");
    drop(proxy);
}
