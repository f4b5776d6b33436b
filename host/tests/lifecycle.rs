//! The process lifecycle, on the real binary (`CARGO_BIN_EXE_wasmroute`,
//! which cargo sets only for this package's own tests, hence the file
//! lives here and not in `tests/`): a SIGTERM drain, the second signal,
//! and a zero-downtime `serve --upgrade` under continuous load.
//!
//! Each test starts its own backend and proxy on 127.0.0.1 port 0 and
//! learns the proxy's port from its JSON log lines.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Hang guard for one awaited event (a log line, an exit); never a
/// measure of speed.
const HANG: Duration = Duration::from_secs(120);

/// A backend answering `ok` (`/slow`: once the test releases it).
struct Backend {
    addr: SocketAddr,
    slow_arrived: Arc<Notify>,
    release: Arc<Notify>,
}

impl Backend {
    async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slow_arrived = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (arrived, released) = (Arc::clone(&slow_arrived), Arc::clone(&release));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (arrived, released) = (Arc::clone(&arrived), Arc::clone(&released));
                tokio::spawn(serve_backend(stream, arrived, released));
            }
        });
        Backend {
            addr,
            slow_arrived,
            release,
        }
    }
}

/// Answers every request head on `stream` (keep-alive).
async fn serve_backend(mut stream: TcpStream, arrived: Arc<Notify>, released: Arc<Notify>) {
    let mut buffer = Vec::new();
    loop {
        let Some(end) = read_head(&mut stream, &mut buffer).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        buffer.drain(..end);
        if head.starts_with("GET /slow") {
            let released = released.notified();
            arrived.notify_one();
            released.await;
        }
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Reads until `buffer` holds a whole head; its length with the blank line.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A folder with the round-robin policy and a config in front of `backend`.
fn write_config(backend: SocketAddr, drain_timeout: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let module = wasmroute::bundled::get("round-robin").expect("round-robin is bundled");
    std::fs::write(dir.path().join("policies/round-robin.wasm"), module).unwrap();
    let config = format!(
        r#"[server]
drain_timeout = "{drain_timeout}"
upgrade_socket = "upgrade.sock"

[policies]
dir = "policies"

[[listeners]]
name = "edge"
address = "127.0.0.1:0"
policy = "round-robin"
pools = ["web"]

[[pools]]
name = "web"
backends = [ {{ address = "{backend}" }} ]
"#
    );
    let path = dir.path().join("wasmroute.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

/// A running `wasmroute` whose stderr lines arrive on a channel.
struct Proxy {
    /// `None` once waited for.
    child: Option<Child>,
    pid: u32,
    lines: mpsc::Receiver<String>,
}

impl Proxy {
    fn spawn(config: &Path, extra: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmroute"))
            .args([
                "--log-format",
                "json",
                "serve",
                "--workers",
                "1",
                "--config",
            ])
            .arg(config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmroute");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[wasmroute] {line}");
                // The receiver may be gone; the lines are still echoed.
                let _ = tx.send(line);
            }
        });
        Proxy {
            pid: child.id(),
            child: Some(child),
            lines,
        }
    }

    /// Waits for a log line whose `message` is `message`; returns it.
    fn wait_for(&self, message: &str) -> String {
        let want = format!("\"message\":\"{message}\"");
        loop {
            match self.lines.recv_timeout(HANG) {
                Ok(line) if line.contains(&want) => return line,
                Ok(_) => {}
                Err(error) => panic!("no log line `{message}` ({error})"),
            }
        }
    }

    /// Waits for the `listening` line and returns the listener's address.
    fn listening(&self) -> SocketAddr {
        let line = self.wait_for("listening");
        field(&line, "address").parse().unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit (killing it past [`HANG`]).
    fn exit_status(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("not waited for yet");
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match exited.recv_timeout(HANG) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                self.signal("KILL");
                panic!("wasmroute did not exit");
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The string value of `"name":"..."` in a JSON log line.
fn field(line: &str, name: &str) -> String {
    let key = format!("\"{name}\":\"");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    line[start..].split('"').next().unwrap().to_owned()
}

/// One request on a new connection; the whole response.
async fn get_once(proxy: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(proxy).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn is_ok(response: &str) -> bool {
    response.starts_with("HTTP/1.1 200") && response.ends_with("ok")
}

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
    let lines = tokio::task::spawn_blocking(move || {
        proxy.wait_for("SIGTERM: draining");
        proxy
    });
    let mut proxy = lines.await.unwrap();
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
    let status = tokio::task::spawn_blocking(move || proxy.exit_status())
        .await
        .unwrap();
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
    let mut proxy = tokio::task::spawn_blocking(move || {
        proxy.wait_for("SIGTERM: draining");
        proxy.signal("TERM");
        proxy
    })
    .await
    .unwrap();
    let status = tokio::task::spawn_blocking(move || proxy.exit_status())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
    // The held request was cut, not answered.
    let response = slow.await.unwrap().unwrap_or_default();
    assert!(!is_ok(&response), "{response}");
    backend.release.notify_one();
}

/// Counts of the load clients.
struct Load {
    /// Successful requests so far.
    ok: tokio::sync::watch::Sender<u64>,
    failed: AtomicU64,
    /// The first few failures, for the assertion message.
    failures: tokio::sync::Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn new() -> Load {
        Load {
            ok: tokio::sync::watch::channel(0).0,
            failed: AtomicU64::new(0),
            failures: tokio::sync::Mutex::default(),
            stop: AtomicBool::new(false),
        }
    }

    fn ok(&self) -> u64 {
        *self.ok.borrow()
    }

    /// Waits until `count` more requests succeeded than now (or one failed).
    async fn more_successes(&self, count: u64) {
        let target = self.ok() + count;
        let mut ok = self.ok.subscribe();
        let reached = ok.wait_for(|&n| n >= target || self.failed.load(Ordering::Relaxed) > 0);
        tokio::time::timeout(HANG, reached)
            .await
            .expect("the load made no progress")
            .unwrap();
    }
}

/// Requests on new connections, one after another, until `load.stop`.
async fn load_client(proxy: SocketAddr, load: Arc<Load>) {
    while !load.stop.load(Ordering::Relaxed) {
        match get_once(proxy, "/").await {
            Ok(response) if is_ok(&response) => {
                load.ok.send_modify(|n| *n += 1);
            }
            outcome => {
                load.failed.fetch_add(1, Ordering::Relaxed);
                let mut failures = load.failures.lock().await;
                if failures.len() < 10 {
                    failures.push(format!("{outcome:?}"));
                }
                // Wakes a waiter to see the failure.
                load.ok.send_modify(|_| {});
            }
        }
    }
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
    let old = tokio::task::spawn_blocking(move || {
        old.wait_for("upgrade socket listening");
        old
    })
    .await
    .unwrap();
    let load = Arc::new(Load::new());
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(load_client(address, Arc::clone(&load))))
        .collect();
    load.more_successes(100).await;

    let config_again = config.clone();
    let new = tokio::task::spawn_blocking(move || {
        let new = Proxy::spawn(&config_again, &["--upgrade"]);
        new.wait_for("listening socket taken over from the previous instance");
        new
    })
    .await
    .unwrap();
    let mut old = tokio::task::spawn_blocking(move || {
        old.wait_for("upgrade: the new instance is serving; draining");
        old
    })
    .await
    .unwrap();
    let status = tokio::task::spawn_blocking(move || old.exit_status())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "the old instance exits 0");
    // Only the new instance is left; it keeps serving the same address.
    load.more_successes(100).await;
    load.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failed = load.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "{failed} failed of {} requests: {:?}",
        load.ok() + failed,
        load.failures.lock().await
    );
    // And the new one can be upgraded again in turn: its socket is there.
    let socket = config.parent().unwrap().join("upgrade.sock");
    assert!(socket.exists(), "the new instance listens on {socket:?}");
    new.signal("TERM");
    let mut new = new;
    let status = tokio::task::spawn_blocking(move || new.exit_status())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
