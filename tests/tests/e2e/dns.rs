//! Backends by DNS name: `localhost:PORT` through the system resolver,
//! and a name served by a test DNS server whose answers change while the
//! proxy runs (`[resolver] nameservers`, a short `refresh`): traffic
//! spreads over every address, follows an address that appears or
//! vanishes (whose in-flight request completes, and whose pooled
//! connections then close), and stays on the last
//! good set when the server stops answering; an SRV name gives targets
//! on several ports; `/status` and `/metrics` show the names.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::StatusCode;
use wasmroute::ServerEvent;
use wasmroute::health::HealthChange;
use wasmroute_e2e::dns::DnsServer;
use wasmroute_e2e::wait::eventually;
use wasmroute_e2e::{Backend, Client, ProxyFixture, STEP, bundled};

use super::admin::{scrape, status_json};

/// A round-robin listener `edge` over pool `web` of `backends`, with a
/// `[resolver]` section when `resolver` is not empty.
fn config(backends: &str, resolver: &str) -> String {
    format!(
        r#"[policies]
dir = "policies"

[[listeners]]
name = "edge"
address = "127.0.0.1:0"
policy = "round-robin"
pools = ["web"]

[[pools]]
name = "web"
backends = [{backends}]
{resolver}
"#
    )
}

async fn start(text: &str) -> ProxyFixture {
    ProxyFixture::start_with_text(text, &[("round-robin", bundled("round-robin"))])
        .await
        .expect("the proxy starts")
}

/// Sends `n` requests; how many each of `backends` answered.
async fn spread(fx: &ProxyFixture, backends: &[&Backend], n: usize) -> Vec<usize> {
    let client = Client::http1();
    let mut counts = vec![0; backends.len()];
    for _ in 0..n {
        let reply = client.get(&fx.url("edge", "/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let at = (backends.iter())
            .position(|b| Some(b.name()) == reply.backend())
            .unwrap_or_else(|| panic!("answered by {:?}", reply.backend()));
        counts[at] += 1;
    }
    counts
}

/// Asserts which of `backends` answer some of 20 requests.
async fn assert_serving<const N: usize>(fx: &ProxyFixture, backends: &[&Backend], want: [bool; N]) {
    let counts = spread(fx, backends, 20).await;
    let serving: Vec<bool> = counts.iter().map(|&n| n > 0).collect();
    assert_eq!(serving, want, "answers per backend: {counts:?}");
}

fn total_served(backends: &[Backend]) -> u64 {
    backends.iter().map(Backend::served).sum()
}

/// Backends on 127.0.0.1, .2, .3, all on one port (that a name gives).
async fn three_backends() -> Vec<Backend> {
    for _ in 0..20 {
        let first = Backend::start("b1").await.unwrap();
        let port = first.addr().port();
        let second = Backend::start_at("b2", SocketAddr::from(([127, 0, 0, 2], port))).await;
        let third = Backend::start_at("b3", SocketAddr::from(([127, 0, 0, 3], port))).await;
        if let (Ok(second), Ok(third)) = (second, third) {
            return vec![first, second, third];
        }
    }
    panic!("no port free on 127.0.0.1, .2 and .3 at once");
}

fn ips(backends: &[&Backend]) -> Vec<IpAddr> {
    backends.iter().map(|b| b.addr().ip()).collect()
}

/// `total_requests` of `backend` in `/status`.
async fn total_requests(fx: &ProxyFixture, backend: &Backend) -> u64 {
    let status = status_json(fx).await;
    let address = backend.addr().to_string();
    let backends = status["pools"][0]["backends"].as_array().unwrap();
    let found = backends.iter().find(|b| b["address"] == address.as_str());
    found.unwrap_or_else(|| panic!("{address} not in {status}"))["total_requests"]
        .as_u64()
        .unwrap()
}

async fn await_lookup(fx: &mut ProxyFixture, want: &'static str) {
    fx.await_event(
        |e| matches!(e, ServerEvent::NameResolved { name, result } if name == "web.test" && *result == want),
        STEP,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn localhost_resolves_through_the_system_resolver() {
    let backend = Backend::start("local").await.unwrap();
    let port = backend.addr().port();
    let fx = start(&config(
        &format!("{{ address = \"localhost:{port}\" }}"),
        "",
    ))
    .await;
    assert_eq!(spread(&fx, &[&backend], 4).await, [4]);
    fx.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_name_follows_its_answers() {
    let dns = DnsServer::start().await.unwrap();
    let backends = three_backends().await;
    let [b1, b2, b3] = [&backends[0], &backends[1], &backends[2]];
    dns.set("web.test", &ips(&[b1, b2])).await;
    let port = b1.addr().port();
    let resolver = format!(
        "[resolver]\nnameservers = [\"{}\"]\nrefresh = \"50ms\"",
        dns.addr()
    );
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n{}",
        config(&format!("{{ address = \"web.test:{port}\" }}"), &resolver)
    );
    let mut fx = start(&text).await;
    // Two addresses: both serve.
    assert_serving(&fx, &[b1, b2, b3], [true, true, false]).await;
    let b1_total = total_requests(&fx, b1).await;
    assert!(b1_total > 0);

    // A third appears: it gets its share once the change is applied; an
    // address that stays keeps its stats and its pooled connections.
    fx.clear_events();
    dns.set("web.test", &ips(&[b1, b2, b3])).await;
    await_lookup(&mut fx, "changed").await;
    assert!(total_requests(&fx, b1).await >= b1_total);
    assert!(
        b1.open_connections() > 0,
        "b1's pooled connections were closed"
    );
    assert_serving(&fx, &[b1, b2, b3], [true, true, true]).await;

    // b2 vanishes with a request in flight: that one completes, no new
    // request goes to b2.
    b2.set_delay(Duration::from_millis(500));
    let before = b2.served();
    let url = fx.url("edge", "/");
    let mut in_flight = Vec::new();
    while b2.served() == before && in_flight.len() < 50 {
        let arrived = total_served(&backends);
        let url = url.clone();
        in_flight.push(tokio::spawn(async move { Client::http1().get(&url).await }));
        assert!(eventually(STEP, || total_served(&backends) > arrived).await);
    }
    assert!(b2.served() > before, "no request reached b2");
    fx.clear_events();
    dns.set("web.test", &ips(&[b1, b3])).await;
    await_lookup(&mut fx, "changed").await;
    let replies: Vec<_> = futures_util::future::join_all(in_flight).await;
    for reply in replies {
        assert_eq!(reply.unwrap().unwrap().status, StatusCode::OK);
    }
    // Its pooled connections close once their requests are done.
    let closed = eventually(STEP, || b2.open_connections() == 0).await;
    assert!(closed, "b2 keeps {} connections", b2.open_connections());
    let served = b2.served();
    assert_serving(&fx, &[b1, b2, b3], [true, false, true]).await;
    assert_eq!(b2.served(), served);

    // The server stops answering: the last good set keeps serving.
    dns.set_silent(true);
    fx.clear_events();
    await_lookup(&mut fx, "failed").await;
    assert_serving(&fx, &[b1, b2, b3], [true, false, true]).await;
    fx.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unresolvable_name_starts_its_pool_empty_until_it_resolves() {
    let dns = DnsServer::start().await.unwrap();
    let backend = Backend::start("late").await.unwrap();
    let port = backend.addr().port();
    let resolver = format!(
        "[resolver]\nnameservers = [\"{}\"]\nrefresh = \"50ms\"",
        dns.addr()
    );
    let text = config(&format!("{{ address = \"web.test:{port}\" }}"), &resolver);
    let mut fx = start(&text).await;
    let reply = Client::http1().get(&fx.url("edge", "/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    fx.clear_events();
    dns.set("web.test", &[backend.addr().ip()]).await;
    await_lookup(&mut fx, "changed").await;
    assert_eq!(spread(&fx, &[&backend], 2).await, [2]);
    fx.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_srv_name_gives_each_target_on_its_port_as_status_and_metrics_show() {
    let dns = DnsServer::start().await.unwrap();
    let (first, second) = (
        Backend::start("p1").await.unwrap(),
        Backend::start("p2").await.unwrap(),
    );
    let (p1, p2) = (first.addr().port(), second.addr().port());
    dns.set("host.test", &[first.addr().ip()]).await;
    dns.set_srv(
        "_http._tcp.web.test",
        &[("host.test", p1), ("host.test", p2)],
    )
    .await;
    let resolver = format!(
        "[resolver]\nnameservers = [\"{}\"]\nrefresh = \"50ms\"",
        dns.addr()
    );
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n{}",
        config("{ srv = \"_http._tcp.web.test\" }", &resolver)
    );
    let fx = start(&text).await;
    assert_serving(&fx, &[&first, &second], [true, true]).await;

    let status = status_json(&fx).await;
    let names = &status["pools"][0]["names"];
    assert_eq!(names[0]["name"], "_http._tcp.web.test", "{status}");
    assert_eq!(names[0]["srv"], true);
    let mut want = [first.addr(), second.addr()];
    want.sort();
    let want = want.map(|a| a.to_string());
    assert_eq!(names[0]["addresses"], serde_json::json!(want), "{status}");

    let metrics = scrape(&fx).await;
    let changed = (metrics.lines())
        .find(|l| l.starts_with("wasmroute_dns_resolutions_total{pool=\"web\",result=\"changed\"}"))
        .unwrap_or_else(|| panic!("no changed count in:\n{metrics}"));
    assert!(changed.ends_with(" 1"), "{changed}");
    fx.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_address_that_joins_is_health_checked_like_any_backend() {
    let dns = DnsServer::start().await.unwrap();
    let live = Backend::start("live").await.unwrap();
    let port = live.addr().port();
    // Nothing listens on 127.0.0.9 at that port.
    let dead = SocketAddr::from(([127, 0, 0, 9], port));
    dns.set("web.test", &[live.addr().ip()]).await;
    let resolver = format!(
        "[resolver]\nnameservers = [\"{}\"]\nrefresh = \"50ms\"",
        dns.addr()
    );
    let health = "[pools.health]\npath = \"/\"\ninterval = \"50ms\"\ntimeout = \"1s\"\nfall = 1";
    let pool = config(&format!("{{ address = \"web.test:{port}\" }}"), &resolver);
    let mut fx = start(&format!("{pool}\n{health}\n")).await;
    fx.clear_events();
    dns.set("web.test", &[live.addr().ip(), dead.ip()]).await;
    let down = |e: &ServerEvent| matches!(e, ServerEvent::BackendHealth { backend, change: HealthChange::Down, .. } if *backend == dead);
    fx.await_event(down, STEP).await.unwrap();
    assert_eq!(spread(&fx, &[&live], 10).await, [10]);
    fx.shutdown().await.unwrap();
}
