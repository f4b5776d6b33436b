//! Active checks beyond HTTP GET and connect, end to end over real
//! sockets: a send/expect script (`steps`) against a tiny line server
//! decides up and down by what the server answers; a check on a side
//! `port` decides a backend whose own port serves normally; and
//! `on_down = "close-connections"` ends the connections the proxy holds
//! to a backend its check takes down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wasmroute::ServerEvent;
use wasmroute::health::HealthChange;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, bundled, eventually,
};

/// Bounds each wait for a checker's event or effect.
const WAIT: Duration = Duration::from_secs(10);

/// A line server like Redis's `PING`: answers each `PING` line with
/// `+PONG` (or `-ERR` while told to fail) and counts its answers.
struct PingServer {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl PingServer {
    async fn start(failing: bool) -> PingServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let failing = Arc::new(AtomicBool::new(failing));
        let answered = Arc::new(AtomicU64::new(0));
        let (f, a) = (Arc::clone(&failing), Arc::clone(&answered));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, Arc::clone(&f), Arc::clone(&a)));
            }
        });
        PingServer {
            addr,
            failing,
            answered,
            task,
        }
    }

    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }
}

impl Drop for PingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers the `PING` lines of one connection, then closes it after an
/// error answer (as a server refusing the command would).
async fn answer(stream: tokio::net::TcpStream, failing: Arc<AtomicBool>, answered: Arc<AtomicU64>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line != "PING" {
            return;
        }
        let fail = failing.load(Ordering::SeqCst);
        let reply: &[u8] = if fail { b"-ERR\r\n" } else { b"+PONG\r\n" };
        if write.write_all(reply).await.is_err() {
            return;
        }
        answered.fetch_add(1, Ordering::SeqCst);
        if fail {
            return;
        }
    }
}

fn is_change(event: &ServerEvent, backend: SocketAddr, change: HealthChange) -> bool {
    matches!(event, ServerEvent::BackendHealth { backend: b, change: c, .. }
        if *b == backend && *c == change)
}

async fn await_change(fx: &mut ProxyFixture, backend: SocketAddr, change: HealthChange) {
    fx.await_event(|e| is_change(e, backend, change), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{change:?} of {backend}: {e:#}"));
}

async fn proxy(pool: PoolSpec) -> ProxyFixture {
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(pool);
    ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap()
}

const PING_STEPS: &str = "[pools.health]\ninterval = \"20ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n\
     steps = [{ send = \"PING\\r\\n\" }, { expect = \"+PONG\" }]\n";

#[tokio::test]
async fn a_steps_check_follows_what_the_server_answers() {
    let pong = PingServer::start(false).await;
    let err = PingServer::start(true).await;
    let pool = PoolSpec::new("web", &[])
        .address(pong.addr)
        .address(err.addr)
        .extra(PING_STEPS);
    let mut fx = proxy(pool).await;
    await_change(&mut fx, err.addr, HealthChange::Down).await;
    // The answering server keeps passing: several more checks, no change.
    let seen = pong.answered();
    assert!(eventually(WAIT, || pong.answered() >= seen + 3).await);
    let pending = fx.pending_events();
    assert!(
        !pending
            .iter()
            .any(|e| is_change(e, pong.addr, HealthChange::Down)),
        "{pending:#?}"
    );
    // Its answer alone decides: `-ERR` takes it down, `+PONG` back up.
    pong.set_failing(true);
    await_change(&mut fx, pong.addr, HealthChange::Down).await;
    pong.set_failing(false);
    await_change(&mut fx, pong.addr, HealthChange::Up).await;
    err.set_failing(false);
    await_change(&mut fx, err.addr, HealthChange::Up).await;
}

#[tokio::test]
async fn a_check_on_a_side_port_decides_a_backend_that_serves() {
    let web = Backend::start("db-1").await.unwrap();
    let rest_api = Backend::start("patroni").await.unwrap();
    rest_api.set_status(Some(StatusCode::SERVICE_UNAVAILABLE));
    let checks = format!(
        "[pools.health]\npath = \"/primary\"\nport = {}\ninterval = \"20ms\"\n\
         timeout = \"1s\"\nrise = 1\nfall = 1\n",
        rest_api.addr().port()
    );
    let mut fx = proxy(PoolSpec::new("web", &[&web]).extra(&checks)).await;
    await_change(&mut fx, web.addr(), HealthChange::Down).await;
    let client = Client::http1();
    let reply = client.get(&fx.url("edge", "/")).await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "down: no backend"
    );
    rest_api.set_status(None);
    await_change(&mut fx, web.addr(), HealthChange::Up).await;
    let reply = client.get(&fx.url("edge", "/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "db-1");
    assert!(rest_api.health_checks() >= 2);
    assert_eq!(
        web.health_checks(),
        0,
        "no check went to the backend's own port"
    );
}

/// A pool of `web` checked on the side port of `rest_api` (so the checks
/// add no connection of their own to `web`), with `on_down`.
fn side_checked(web: &Backend, rest_api: &Backend, on_down: &str) -> PoolSpec {
    PoolSpec::new("web", &[web]).extra(&format!(
        "on_down = \"{on_down}\"\n[pools.health]\npath = \"/\"\nport = {}\n\
         interval = \"20ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n",
        rest_api.addr().port()
    ))
}

/// Starts a large response from `web` on `client` (HTTP/1.1: the fast
/// codec; HTTP/2: hyper's codec and client), read no further than its
/// head, and waits for `web` to hold `open` connections from the proxy.
async fn hold_a_download(
    fx: &ProxyFixture,
    client: &Client,
    web: &Backend,
    open: u64,
) -> http::Response<hyper::body::Incoming> {
    let request = http::Request::get(fx.url("edge", "/download?bytes=67108864"))
        .body(wasmroute_e2e::client::empty())
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(eventually(WAIT, || web.open_connections() == open).await);
    response
}

/// Asserts that `response`'s body ends in an error (cut, not complete).
async fn assert_cut(response: http::Response<hyper::body::Incoming>, what: &str) {
    let body = tokio::time::timeout(WAIT, response.into_body().collect()).await;
    assert!(
        matches!(body, Ok(Err(_))),
        "{what}: the response must end cut"
    );
}

#[tokio::test]
async fn close_connections_closes_pooled_connections_when_marked_down() {
    let web = Backend::start("web").await.unwrap();
    let rest_api = Backend::start("rest-api").await.unwrap();
    let mut fx = proxy(side_checked(&web, &rest_api, "close-connections")).await;
    let reply = Client::http1().get(&fx.url("edge", "/")).await.unwrap();
    assert_eq!(reply.body, "web");
    assert!(
        eventually(WAIT, || web.open_connections() == 1).await,
        "the fast codec keeps its upstream connection"
    );
    rest_api.set_status(Some(StatusCode::SERVICE_UNAVAILABLE));
    await_change(&mut fx, web.addr(), HealthChange::Down).await;
    assert!(
        eventually(WAIT, || web.open_connections() == 0).await,
        "the pooled connection was closed"
    );
}

#[tokio::test]
async fn close_connections_cuts_responses_in_flight_when_marked_down() {
    let web = Backend::start("web").await.unwrap();
    let rest_api = Backend::start("rest-api").await.unwrap();
    let mut fx = proxy(side_checked(&web, &rest_api, "close-connections")).await;
    let fast = hold_a_download(&fx, &Client::http1(), &web, 1).await;
    let hyper = hold_a_download(&fx, &Client::http2(), &web, 2).await;
    rest_api.set_status(Some(StatusCode::SERVICE_UNAVAILABLE));
    await_change(&mut fx, web.addr(), HealthChange::Down).await;
    assert!(
        eventually(WAIT, || web.open_connections() == 0).await,
        "the upstream connections carrying the responses were closed"
    );
    assert_cut(fast, "HTTP/1.1 (fast codec)").await;
    assert_cut(hyper, "HTTP/2 (hyper)").await;
}

#[tokio::test]
async fn keep_leaves_connections_open_when_marked_down() {
    let web = Backend::start("web").await.unwrap();
    let rest_api = Backend::start("rest-api").await.unwrap();
    let mut fx = proxy(side_checked(&web, &rest_api, "keep")).await;
    let _fast = hold_a_download(&fx, &Client::http1(), &web, 1).await;
    let _hyper = hold_a_download(&fx, &Client::http2(), &web, 2).await;
    let reply = Client::http1().get(&fx.url("edge", "/")).await.unwrap();
    assert_eq!(reply.body, "web");
    assert!(eventually(WAIT, || web.open_connections() == 3).await);
    rest_api.set_status(Some(StatusCode::SERVICE_UNAVAILABLE));
    await_change(&mut fx, web.addr(), HealthChange::Down).await;
    let checks = rest_api.health_checks();
    assert!(eventually(WAIT, || rest_api.health_checks() >= checks + 3).await);
    assert_eq!(
        web.open_connections(),
        3,
        "three checks after the down, the two busy and the pooled connection are still open"
    );
}
