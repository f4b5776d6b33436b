//! The process lifecycle, on the real binary (`CARGO_BIN_EXE_wasmroute`,
//! which cargo sets only for this package's own tests, hence the file
//! lives here and not in `tests/`): a SIGTERM drain, the second signal,
//! and a zero-downtime `serve --upgrade` under continuous load, with and
//! without the admin endpoint.
//!
//! Each test starts its own backend and proxy on 127.0.0.1 port 0 and
//! learns the proxy's port from its JSON log lines.

mod support;

use std::sync::Arc;

use support::{
    Backend, Load, Proxy, config_text, field, get_once, is_ok, load_client, load_client_of,
    policy_folder, read_head, write_config,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// SIGTERM: the in-flight request finishes (told `connection: close`),
/// an idle keep-alive connection is closed during the drain, the process
/// exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let backend = Backend::start().await;
    let (_dir, config) = write_config(backend.addr, "60s");
    let proxy = Proxy::spawn(&config, &[]);
    let address = proxy.listening();
    // An idle keep-alive connection, after one request.
    let mut idle = TcpStream::connect(address).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let end = read_head(&mut idle, &mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..end]).starts_with("HTTP/1.1 200"));
    // An in-flight request, held by the backend.
    let arrived = backend.slow_arrived.notified();
    let slow = tokio::spawn(get_once(address, "/slow"));
    arrived.await;
    proxy.signal("TERM");
    let proxy = proxy.after(&["SIGTERM: draining"]).await;
    // The idle connection closes while the slow request is still held.
    let mut rest = [0u8; 64];
    let read = idle.read(&mut rest).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "idle connection left open: {read:?}"
    );
    backend.release.notify_one();
    let response = slow.await.unwrap().unwrap();
    assert!(is_ok(&response), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "a response while draining says connection: close: {response}"
    );
    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0));
}

/// A second SIGTERM during the drain exits at once (status 1), though a
/// request is still in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let backend = Backend::start().await;
    let (_dir, config) = write_config(backend.addr, "10m");
    let proxy = Proxy::spawn(&config, &[]);
    let address = proxy.listening();
    let arrived = backend.slow_arrived.notified();
    let slow = tokio::spawn(get_once(address, "/slow"));
    arrived.await;
    proxy.signal("TERM");
    let proxy = proxy.after(&["SIGTERM: draining"]).await;
    proxy.signal("TERM");
    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(1));
    // The held request was cut, not answered.
    let response = slow.await.unwrap().unwrap_or_default();
    assert!(!is_ok(&response), "{response}");
    backend.release.notify_one();
}

/// `serve --upgrade` under continuous load: the new instance takes the
/// listening socket over, the old one drains and exits 0, and not one
/// connection is refused or request failed across the handover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_hands_the_sockets_over_without_a_failed_request() {
    let backend = Backend::start().await;
    let (_dir, config) = write_config(backend.addr, "30s");
    let old = Proxy::spawn(&config, &[]);
    let address = old.listening();
    let new = upgrade_under_load(old, &config, address, "edge").await;
    // And the new one can be upgraded again in turn: its socket is there.
    let socket = config.parent().unwrap().join("upgrade.sock");
    assert!(socket.exists(), "the new instance listens on {socket:?}");
    new.signal("TERM");
    let status = new.exited().await;
    assert_eq!(status.code(), Some(0));
}

/// Upgrades `old` (serving `config`) while four clients send requests on
/// new connections to `address`, listener `listener`'s: the new instance
/// takes that listener's socket over, the old one drains and exits 0, and
/// not one request fails before or after. Returns the new instance.
async fn upgrade_under_load(
    old: Proxy,
    config: &std::path::Path,
    address: std::net::SocketAddr,
    listener: &'static str,
) -> Proxy {
    let old = old.after(&["upgrade socket listening"]).await;
    let load = Arc::new(Load::new());
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(load_client(address, Arc::clone(&load))))
        .collect();
    load.more_successes(100).await;

    let config = config.to_path_buf();
    let new = tokio::task::spawn_blocking(move || {
        let new = Proxy::spawn(&config, &["--upgrade"]);
        new.wait_for_listener(
            "listening socket taken over from the previous instance",
            listener,
        );
        new
    })
    .await
    .unwrap();
    let old = old
        .after(&["upgrade: the new instance is serving; draining"])
        .await;
    let status = old.exited().await;
    assert_eq!(status.code(), Some(0), "the old instance exits 0");
    // Only the new instance is left; it keeps serving the same address.
    load.more_successes(100).await;
    load.stop_and_check(clients, listener).await;
    new
}

/// An admin answer `200 live`.
fn is_live(response: &str) -> bool {
    response.starts_with("HTTP/1.1 200") && response.ends_with("live\n")
}

/// `serve --upgrade` with `[admin]` on port 0: the admin socket is handed
/// over with the listener's, so neither the proxy nor the admin endpoint
/// refuses a connection or fails a request, under continuous load on
/// both; once the old instance has exited, the new one answers on the
/// same admin address (its `/status` shows its own config: a second
/// backend, in a config file the old instance never read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_hands_the_admin_socket_over_too() {
    let (backend, second) = (Backend::start().await, Backend::start().await);
    let admin = "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let dir = policy_folder();
    let config = dir.path().join("wasmroute.toml");
    std::fs::write(&config, config_text(&[backend.addr], "30s", admin)).unwrap();
    // Same folder, so the same `upgrade.sock`.
    let new_config = dir.path().join("wasmroute-new.toml");
    let both = [backend.addr, second.addr];
    std::fs::write(&new_config, config_text(&both, "30s", admin)).unwrap();

    let (old, address, admin_addr) = tokio::task::spawn_blocking(move || {
        let old = Proxy::spawn(&config, &[]);
        let address = old.listening();
        old.wait_for("upgrade socket listening");
        let line = old.wait_for("admin endpoint listening");
        let admin_addr: std::net::SocketAddr = field(&line, "address").parse().unwrap();
        (old, address, admin_addr)
    })
    .await
    .unwrap();
    let (proxy_load, admin_load) = (Arc::new(Load::new()), Arc::new(Load::new()));
    let proxy_clients: Vec<_> = (0..3)
        .map(|_| tokio::spawn(load_client(address, Arc::clone(&proxy_load))))
        .collect();
    let admin_client = load_client_of(admin_addr, "/live", is_live, Arc::clone(&admin_load));
    let admin_clients = vec![tokio::spawn(admin_client)];
    proxy_load.more_successes(50).await;
    admin_load.more_successes(20).await;

    let new = Proxy::spawn(&new_config, &["--upgrade"])
        .after(&["admin socket taken over from the previous instance"])
        .await;
    let old = old
        .after(&[
            "upgrade: the new instance is serving; draining",
            "admin socket handed over; no longer accepting on it",
        ])
        .await;
    let old_pid = old.pid;
    let status = old.exited().await;
    assert_eq!(status.code(), Some(0), "the old instance {old_pid} exits 0");
    proxy_load.more_successes(50).await;
    admin_load.more_successes(20).await;
    proxy_load.stop_and_check(proxy_clients, "proxy").await;
    admin_load.stop_and_check(admin_clients, "admin").await;

    let status = get_once(admin_addr, "/status").await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        status.contains(&format!("\"{}\"", second.addr)),
        "/status comes from the new instance's config: {status}"
    );
    new.signal("TERM");
    let status = new.exited().await;
    assert_eq!(status.code(), Some(0));
}

/// `serve --upgrade` with a `tcp` listener beside the HTTP one: its socket
/// is handed over too, and HTTP requests relayed through it at layer 4
/// (each on a new connection) keep succeeding across the handover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_hands_tcp_listener_sockets_over_too() {
    let backend = Backend::start().await;
    let dir = policy_folder();
    let config = dir.path().join("wasmroute.toml");
    let tcp_listener = "\n[[listeners]]\nname = \"l4\"\naddress = \"127.0.0.1:0\"\n\
                        protocol = \"tcp\"\npolicy = \"round-robin\"\npools = [\"web\"]\n";
    std::fs::write(&config, config_text(&[backend.addr], "30s", tcp_listener)).unwrap();
    let old = Proxy::spawn(&config, &[]);
    let address = old.listening_on("l4");
    let new = upgrade_under_load(old, &config, address, "l4").await;
    new.signal("TERM");
    assert_eq!(new.exited().await.code(), Some(0));
}
