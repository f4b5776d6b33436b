//! `tcp` relays and the life of their backend and listener: a relay to a
//! backend its active check marks down is closed when the pool says
//! `on_down = "close-connections"`, kept otherwise; a drain waits for
//! open relays up to `drain_timeout`, then closes them.

use tokio::io::AsyncWriteExt as _;
use wasmroute::ServerEvent;
use wasmroute::health::HealthChange;
use wasmroute_e2e::tcp::{closes, connect_greeted, read_to_end};
use wasmroute_e2e::{
    ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, TcpBackend, bundled,
};

use crate::tcp::{ping, round_robin, start};

/// A TCP connect check every 50 ms, down after one failure.
const CHECK: &str = "[pools.health]\ninterval = \"50ms\"\ntimeout = \"200ms\"\nfall = 1\nrise = 1";

/// Stops `backend` accepting and waits until its check marks it down.
async fn mark_down(fx: &mut ProxyFixture, backend: &mut TcpBackend) {
    fx.clear_events();
    backend.stop_accepting().await;
    let address = backend.addr();
    fx.await_event(
        |e| matches!(e, ServerEvent::BackendHealth { backend, change: HealthChange::Down, .. } if *backend == address),
        STEP,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_to_a_backend_marked_down_is_closed() {
    let mut backend = TcpBackend::echo("a").await.unwrap();
    let pool = format!("on_down = \"close-connections\"\n{CHECK}");
    let mut fx = start(round_robin(), &[backend.addr()], "", &pool).await;
    let (mut stream, _) = connect_greeted(fx.addr("edge")).await.unwrap();
    ping(&mut stream).await;
    mark_down(&mut fx, &mut backend).await;
    assert!(closes(&mut stream).await, "the relay was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_to_a_backend_marked_down_is_kept_by_default() {
    let mut backend = TcpBackend::echo("a").await.unwrap();
    let mut fx = start(round_robin(), &[backend.addr()], "", CHECK).await;
    let (mut stream, _) = connect_greeted(fx.addr("edge")).await.unwrap();
    mark_down(&mut fx, &mut backend).await;
    ping(&mut stream).await;
}

/// The config text of `tcp` listeners `names` over one echo backend,
/// with `drain_timeout`.
fn draining_config(drain_timeout: &str, backend: &TcpBackend, names: &[&str]) -> String {
    let mut config = ConfigBuilder::new().pool(PoolSpec::new("db", &[]).address(backend.addr()));
    for name in names {
        config = config.listener(ListenerSpec::new(name, "round-robin", &["db"]).tcp());
    }
    format!(
        "[server]\ndrain_timeout = \"{drain_timeout}\"\n{}",
        config.render()
    )
}

/// A proxy with `drain_timeout` over one echo backend.
async fn draining(drain_timeout: &str, backend: &TcpBackend) -> ProxyFixture {
    let text = draining_config(drain_timeout, backend, &["edge"]);
    ProxyFixture::start_with_text(&text, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_an_open_relay() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let fx = draining("60s", &backend).await;
    let address = fx.addr("edge");
    let (mut stream, _) = connect_greeted(address).await.unwrap();
    let lifecycle = std::sync::Arc::clone(fx.server().lifecycle());
    let shutdown = tokio::spawn(fx.shutdown());
    assert!(wasmroute_e2e::eventually(STEP, || lifecycle.is_draining()).await);
    ping(&mut stream).await;
    assert!(!shutdown.is_finished(), "the drain waits for the relay");
    stream.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut stream).await.unwrap(), b"bye a\n");
    shutdown.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_still_open_after_the_drain_period_is_closed() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let fx = draining("200ms", &backend).await;
    let (mut stream, _) = connect_greeted(fx.addr("edge")).await.unwrap();
    ping(&mut stream).await;
    let shutdown = tokio::spawn(fx.shutdown());
    assert!(
        closes(&mut stream).await,
        "closed when the drain period ended"
    );
    shutdown.await.unwrap().unwrap();
}

/// A reload that removes a `tcp` listener drains it like a shutdown: its
/// open relay is closed once the drain period is over; the listeners it
/// keeps go on relaying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_closes_its_relays_after_the_drain_period() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let text = draining_config("200ms", &backend, &["edge", "kept"]);
    let fx = ProxyFixture::start_with_text(&text, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap();
    let (mut removed, _) = connect_greeted(fx.addr("edge")).await.unwrap();
    let (mut kept, _) = connect_greeted(fx.addr("kept")).await.unwrap();
    fx.rewrite_config(&draining_config("200ms", &backend, &["kept"]))
        .unwrap();
    fx.reload().await.unwrap();
    assert!(closes(&mut removed).await, "the removed listener's relay");
    ping(&mut kept).await;
}
