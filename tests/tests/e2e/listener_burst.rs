//! A burst of new connections: thousands of clients connecting at the
//! same moment are all accepted and served. The listen queue (`backlog`,
//! 4096 by default) holds the burst while the accept loop drains it; with
//! std's and tokio's 128 the kernel dropped the SYNs past the queue and
//! those clients waited for SYN retransmits (1 s, 3 s, 7 s, ...).
//!
//! Each connection costs the test process two descriptors (the client's
//! socket and the one the in-process proxy accepted), so the count is cut
//! to what the open-files limit leaves room for (and says so).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wasmroute_e2e::{Backend, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled};

/// Connections in the burst, when the open-files limit allows.
const BURST: usize = 5_000;
/// Requests in flight at once once connected: bounds the proxy's
/// connections to the backend (two more descriptors each).
const IN_FLIGHT: usize = 64;
/// Descriptors left for everything else in this process (the other tests
/// of the binary run alongside).
const SPARE_FILES: usize = 1_000;
/// A connect may wait out a few SYN retransmits on a busy machine.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

const REQUEST: &[u8] = b"GET /burst HTTP/1.1\r\nHost: burst.test\r\nConnection: close\r\n\r\n";

/// The soft limit on open files, from `/proc/self/limits`.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Descriptors open in this process now.
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// [`BURST`], or fewer when the open-files limit has no room for it.
fn burst_size() -> usize {
    let limit = open_files_limit().unwrap_or(1024);
    let room = limit.saturating_sub(open_files() + SPARE_FILES + 2 * IN_FLIGHT) / 2;
    if room < BURST {
        eprintln!(
            "open-files limit {limit} (raise it with `ulimit -n`): a burst of {room} connections instead of {BURST}"
        );
    }
    room.min(BURST)
}

/// Connects, then (once one of the [`IN_FLIGHT`] slots is free) sends a
/// GET with `Connection: close` and reads the whole answer.
async fn connect_and_get(address: SocketAddr, slots: Arc<Semaphore>) -> Result<String, String> {
    let connect = TcpStream::connect(address);
    let mut stream = match tokio::time::timeout(CONNECT_WITHIN, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(format!("connect: {error}")),
        Err(_) => return Err(format!("not connected within {CONNECT_WITHIN:?}")),
    };
    let _slot = slots.acquire().await.map_err(|e| e.to_string())?;
    let exchange = async {
        stream.write_all(REQUEST).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(STEP, exchange).await {
        Ok(Ok(answer)) => Ok(String::from_utf8_lossy(&answer).into_owned()),
        Ok(Err(error)) => Err(format!("exchange: {error}")),
        Err(_) => Err(format!("no complete answer within {STEP:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connections_is_accepted_and_served() {
    let count = burst_size();
    assert!(count > 500, "too few open files for a burst: {count}");
    let web = Backend::start("web").await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(PoolSpec::new("web", &[&web]));
    let fx = ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap();
    let address = fx.addr("edge");
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // Every client connects at once; the requests follow IN_FLIGHT at a
    // time while the rest stay connected.
    let mut clients = JoinSet::new();
    for _ in 0..count {
        clients.spawn(connect_and_get(address, Arc::clone(&slots)));
    }
    let mut failures = Vec::new();
    let mut served = 0;
    while let Some(result) = clients.join_next().await {
        match result.expect("client task") {
            Ok(answer) if answer.starts_with("HTTP/1.1 200") && answer.ends_with("web") => {
                served += 1;
            }
            Ok(answer) => failures.push(format!("unexpected answer: {answer}")),
            Err(error) => failures.push(error),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} clients failed; first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(served, count);
    assert!(web.served() >= count as u64, "{} < {count}", web.served());
    fx.shutdown().await.unwrap();
}

/// `backlog` applies when a socket is bound: a reload that changes it but
/// keeps the address keeps the socket, so the port and the connections
/// already open stay; a bad value is refused with its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changing_backlog_keeps_the_socket() {
    let web = Backend::start("web").await.unwrap();
    let config = |extra: &str| {
        ConfigBuilder::new()
            .listener(ListenerSpec::new("edge", "round-robin", &["web"]).extra(extra))
            .pool(PoolSpec::new("web", &[&web]))
            .render()
    };
    let policies = [("round-robin", bundled("round-robin"))];
    let mut fx = ProxyFixture::start_with_text(&config("backlog = 16"), &policies)
        .await
        .unwrap();
    let before = fx.addr("edge");
    let client = wasmroute_e2e::Client::http1();
    let url = fx.url("edge", "/");
    assert_eq!(client.get(&url).await.unwrap().text(), "web");

    fx.rewrite_config(&config("backlog = 0")).unwrap();
    let refused = fx.reload().await.unwrap_err().to_string();
    assert!(refused.contains("listeners[0].backlog: 0: "), "{refused}");

    fx.rewrite_config(&config("backlog = 8192\nsend_timeout = \"5s\""))
        .unwrap();
    fx.clear_events();
    fx.reload().await.unwrap();
    assert_eq!(fx.addr("edge"), before, "the socket was kept");
    // The keep-alive connection opened before the reload still serves.
    assert_eq!(client.get(&url).await.unwrap().text(), "web");
    let fresh = wasmroute_e2e::get(&url).await.unwrap();
    assert_eq!(fresh.text(), "web");
    let unexpected = fx.pending_events();
    assert!(
        unexpected
            .iter()
            .all(|e| matches!(e, wasmroute::ServerEvent::ConfigReloaded)),
        "{unexpected:?}"
    );
    fx.shutdown().await.unwrap();
}
