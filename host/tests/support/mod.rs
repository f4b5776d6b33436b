//! What the real-binary tests share: a backend, a config folder, the
//! spawned `wasmroute` with its stderr lines, plain HTTP/1.1 clients and
//! a continuous load. Each test crate uses a part of it.
#![allow(dead_code)]

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
pub const HANG: Duration = Duration::from_secs(120);

/// A backend answering `ok` (`/slow`: once the test releases it).
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Notified when a `/slow` request arrived.
    pub slow_arrived: Arc<Notify>,
    /// Releases a held `/slow` request.
    pub release: Arc<Notify>,
}

impl Backend {
    /// Listens on 127.0.0.1 port 0.
    pub async fn start() -> Backend {
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

/// Answers every request head on `stream` (keep-alive), and closes after
/// answering one that says `Connection: close` (as a client reaching it
/// through a `tcp` listener needs: nothing in between closes for it).
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
        if head
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n")
        {
            return;
        }
    }
}

/// Reads until `buffer` holds a whole head; its length with the blank line.
pub async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
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
pub fn write_config(backend: SocketAddr, drain_timeout: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = policy_folder();
    let path = dir.path().join("wasmroute.toml");
    std::fs::write(&path, config_text(&[backend], drain_timeout, "")).unwrap();
    (dir, path)
}

/// A temporary folder with `policies/round-robin.wasm`.
pub fn policy_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let module = wasmroute::bundled::get("round-robin").expect("round-robin is bundled");
    std::fs::write(dir.path().join("policies/round-robin.wasm"), module).unwrap();
    dir
}

/// A config: the listener `edge` on 127.0.0.1 port 0 with the
/// round-robin policy over `backends`, the upgrade socket `upgrade.sock`
/// next to it, and `extra` (more sections) at the end.
pub fn config_text(backends: &[SocketAddr], drain_timeout: &str, extra: &str) -> String {
    let backends: Vec<String> = backends
        .iter()
        .map(|address| format!("{{ address = \"{address}\" }}"))
        .collect();
    let backends = backends.join(", ");
    format!(
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
backends = [ {backends} ]
{extra}"#
    )
}

/// A running `wasmroute` whose stderr lines arrive on a channel.
pub struct Proxy {
    /// `None` once waited for.
    child: Option<Child>,
    /// The process id.
    pub pid: u32,
    lines: mpsc::Receiver<String>,
}

impl Proxy {
    /// `wasmroute --log-format json serve --workers 1 --config CONFIG EXTRA...`.
    pub fn spawn(config: &Path, extra: &[&str]) -> Proxy {
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

    /// [`spawn`](Self::spawn), then the listener's address
    /// ([`listening`](Self::listening)), waited for off the runtime's
    /// threads.
    pub async fn started(config: PathBuf, extra: &'static [&'static str]) -> (Proxy, SocketAddr) {
        tokio::task::spawn_blocking(move || {
            let proxy = Proxy::spawn(&config, extra);
            let address = proxy.listening();
            (proxy, address)
        })
        .await
        .unwrap()
    }

    /// Waits, off the runtime's threads, for log lines with each of
    /// `messages` in turn ([`wait_for`](Self::wait_for)).
    pub async fn after(self, messages: &'static [&'static str]) -> Proxy {
        tokio::task::spawn_blocking(move || {
            for message in messages {
                self.wait_for(message);
            }
            self
        })
        .await
        .unwrap()
    }

    /// [`exit_status`](Self::exit_status), waited for off the runtime's
    /// threads.
    pub async fn exited(mut self) -> ExitStatus {
        tokio::task::spawn_blocking(move || self.exit_status())
            .await
            .unwrap()
    }

    /// Waits for a log line whose `message` is `message`; returns it.
    pub fn wait_for(&self, message: &str) -> String {
        let want = format!("\"message\":\"{message}\"");
        self.next_line(HANG, |line| line.contains(&want))
            .unwrap_or_else(|error| panic!("no log line `{message}` ({error})"))
    }

    /// [`wait_for`](Self::wait_for) a line about listener `listener`.
    pub fn wait_for_listener(&self, message: &str, listener: &str) -> String {
        let want = format!("\"message\":\"{message}\"");
        let about = |line: &str| line.contains(&want) && field(line, "listener") == listener;
        self.next_line(HANG, about)
            .unwrap_or_else(|error| panic!("no log line `{message}` of `{listener}` ({error})"))
    }

    /// The next stderr line that `wanted` accepts, skipping the others;
    /// an error when none came within `within`.
    pub fn next_line(
        &self,
        within: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<String, mpsc::RecvTimeoutError> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left)?;
            if wanted(&line) {
                return Ok(line);
            }
        }
    }

    /// The stderr lines that arrived and were not read yet.
    pub fn arrived_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits for the `listening` line and returns the listener's address.
    pub fn listening(&self) -> SocketAddr {
        let line = self.wait_for("listening");
        field(&line, "address").parse().unwrap()
    }

    /// The address of listener `listener`, from its `listening` line.
    pub fn listening_on(&self, listener: &str) -> SocketAddr {
        let line = self.wait_for_listener("listening", listener);
        field(&line, "address").parse().unwrap()
    }

    /// Sends signal `name` (`TERM`, `USR1`...) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit (killing it past [`HANG`]).
    pub fn exit_status(&mut self) -> ExitStatus {
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
pub fn field(line: &str, name: &str) -> String {
    let key = format!("\"{name}\":\"");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    line[start..].split('"').next().unwrap().to_owned()
}

/// One request on a new connection; the whole response.
pub async fn get_once(proxy: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(proxy).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// A 200 from [`Backend`].
pub fn is_ok(response: &str) -> bool {
    response.starts_with("HTTP/1.1 200") && response.ends_with("ok")
}

/// Counts of the load clients.
pub struct Load {
    /// Successful requests so far.
    pub ok: tokio::sync::watch::Sender<u64>,
    /// Failed requests so far.
    pub failed: AtomicU64,
    /// The first few failures, for the assertion message.
    pub failures: tokio::sync::Mutex<Vec<String>>,
    /// Tells the clients to stop.
    pub stop: AtomicBool,
}

impl Load {
    /// No request yet.
    pub fn new() -> Load {
        Load {
            ok: tokio::sync::watch::channel(0).0,
            failed: AtomicU64::new(0),
            failures: tokio::sync::Mutex::default(),
            stop: AtomicBool::new(false),
        }
    }

    /// How many succeeded.
    pub fn ok(&self) -> u64 {
        *self.ok.borrow()
    }

    /// Waits until `count` more requests succeeded than now (or one failed).
    pub async fn more_successes(&self, count: u64) {
        let target = self.ok() + count;
        let mut ok = self.ok.subscribe();
        let reached = ok.wait_for(|&n| n >= target || self.failed.load(Ordering::Relaxed) > 0);
        tokio::time::timeout(HANG, reached)
            .await
            .expect("the load made no progress")
            .unwrap();
    }
}

/// Requests for `/` on new connections, one after another, until
/// `load.stop`; a success is a 200 `ok` from [`Backend`].
pub async fn load_client(proxy: SocketAddr, load: Arc<Load>) {
    load_client_of(proxy, "/", is_ok, load).await;
}

/// Requests for `path` on new connections, one after another, until
/// `load.stop`; `success` tells a good response.
pub async fn load_client_of(
    address: SocketAddr,
    path: &str,
    success: fn(&str) -> bool,
    load: Arc<Load>,
) {
    while !load.stop.load(Ordering::Relaxed) {
        match get_once(address, path).await {
            Ok(response) if success(&response) => {
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

impl Load {
    /// Stops the clients, waits for them, and fails the test if one
    /// request failed.
    pub async fn stop_and_check(&self, clients: Vec<tokio::task::JoinHandle<()>>, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
        let failed = self.failed.load(Ordering::Relaxed);
        assert_eq!(
            failed,
            0,
            "{what}: {failed} failed of {} requests: {:?}",
            self.ok() + failed,
            self.failures.lock().await
        );
    }
}
