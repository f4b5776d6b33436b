//! Active health checks and passive ejection, end to end over real
//! sockets: a killed backend costs no client errors and gets no traffic
//! once it is marked down or ejected, and comes back after `rise` checks;
//! a backend answering 500 or answering too slowly is ejected; all
//! backends down is a quick 503; the ejection cap holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::task::JoinSet;
use wasmroute::ServerEvent;
use wasmroute::health::HealthChange;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, Faulty, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled,
    eventually,
};

/// Active checks every 50 ms, down after 2 failures, up after 2 passes.
const CHECKS: &str =
    "[pools.health]\npath = \"/\"\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n";

async fn proxy(backends: &[&Backend], pool_extra: &str) -> ProxyFixture {
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(PoolSpec::new("web", backends).extra(pool_extra));
    ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap()
}

fn is_change(event: &ServerEvent, backend: SocketAddr, changes: &[HealthChange]) -> bool {
    matches!(event, ServerEvent::BackendHealth { backend: b, change, .. }
        if *b == backend && changes.contains(change))
}

/// Waits until `change` was announced for every backend of `backends`
/// (in any order).
async fn await_each(fx: &mut ProxyFixture, backends: &[SocketAddr], change: HealthChange) {
    let mut missing = backends.to_vec();
    while !missing.is_empty() {
        let event = fx
            .await_event(
                |e| missing.iter().any(|&a| is_change(e, a, &[change])),
                Duration::from_secs(3),
            )
            .await
            .unwrap_or_else(|e| panic!("{change:?} of {missing:?}: {e:#}"));
        if let ServerEvent::BackendHealth { backend, .. } = event {
            missing.retain(|&a| a != backend);
        }
    }
}

/// The health events buffered now, as (backend, change, reason).
fn health_events(fx: &mut ProxyFixture) -> Vec<(SocketAddr, HealthChange, String)> {
    fx.pending_events()
        .into_iter()
        .filter_map(|e| match e {
            ServerEvent::BackendHealth {
                backend,
                change,
                reason,
                ..
            } => Some((backend, change, reason)),
            _ => None,
        })
        .collect()
}

/// GETs `/` and returns the reply (panics on a transport error).
async fn get(client: &Client, fx: &ProxyFixture) -> wasmroute_e2e::Reply {
    client
        .get(&fx.url("edge", "/"))
        .await
        .expect("request through the proxy")
}

/// A steady stream of GETs from `clients` concurrent clients, counting
/// answers per backend and every client-visible error.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    by_backend: Arc<HashMap<String, AtomicU64>>,
    errors: Arc<tokio::sync::Mutex<Vec<String>>>,
    tasks: JoinSet<()>,
}

impl Load {
    fn start(url: String, clients: usize, names: &[&str]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let by_backend: Arc<HashMap<String, AtomicU64>> = Arc::new(
            names
                .iter()
                .map(|n| (n.to_string(), AtomicU64::new(0)))
                .collect(),
        );
        let errors = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        for _ in 0..clients {
            let (stop, ok, by_backend, errors, url) = (
                stop.clone(),
                ok.clone(),
                by_backend.clone(),
                errors.clone(),
                url.clone(),
            );
            tasks.spawn(async move {
                let client = Client::http1();
                while !stop.load(Ordering::SeqCst) {
                    match client.get(&url).await {
                        Ok(reply) if reply.status == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            if let Some(n) = reply.backend().and_then(|b| by_backend.get(b)) {
                                n.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Ok(reply) => {
                            errors
                                .lock()
                                .await
                                .push(format!("{}: {}", reply.status, reply.text()))
                        }
                        Err(e) => errors.lock().await.push(format!("{e:#}")),
                    }
                }
            });
        }
        Load {
            stop,
            ok,
            by_backend,
            errors,
            tasks,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    fn served_by(&self, name: &str) -> u64 {
        self.by_backend[name].load(Ordering::SeqCst)
    }

    async fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        while self.tasks.join_next().await.is_some() {}
        self.errors.lock().await.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_costs_no_client_errors_and_returns_after_rise_checks() {
    let mut web = Backend::start_many("web", 3).await.unwrap();
    // `rise = 5`: a proxy that put the backend back on its first passing
    // check would send it traffic for 200 ms before the Up event.
    let checks = CHECKS.replace("rise = 2", "rise = 5");
    let extra = format!("{checks}[pools.passive]\nejection_time = \"100ms\"\n");
    let mut fx = proxy(&[&web[0], &web[1], &web[2]], &extra).await;
    let load = Load::start(fx.url("edge", "/"), 2, &["web-1", "web-2", "web-3"]);
    let names = ["web-1", "web-2", "web-3"];
    assert!(eventually(STEP, || names.iter().all(|n| load.served_by(n) > 0)).await);

    fx.clear_events();
    let dead = web[1].addr();
    web[1].stop().await;
    let killed = Instant::now();
    // Taken out by passive ejection or by `fall` checks, whichever is first;
    // the active check takes it down within a few intervals in any case.
    let first = fx
        .await_event(
            |e| is_change(e, dead, &[HealthChange::Down, HealthChange::Ejected]),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    if !is_change(&first, dead, &[HealthChange::Down]) {
        fx.await_event(
            |e| is_change(e, dead, &[HealthChange::Down]),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    }
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "down after {:?}",
        killed.elapsed()
    );
    let ok = load.ok();
    assert!(
        eventually(STEP, || load.ok() >= ok + 50).await,
        "traffic goes on"
    );

    // Back: only after `rise` passing checks.
    let before = load.served_by("web-2");
    web[1].restart().await.unwrap();
    fx.await_event(
        |e| is_change(e, dead, &[HealthChange::Up]),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    // The count is read when the test sees the Up event, a moment after the
    // backend went back into rotation: the requests of that moment (a few
    // at most; several were seen on a busy machine) are allowed, not the
    // 200 ms of traffic that skipping `rise` would bring.
    let at_up = load.served_by("web-2");
    assert!(
        at_up <= before + 10,
        "web-2 got {} requests before it was up again",
        at_up - before
    );
    assert!(
        eventually(STEP, || load.served_by("web-2") >= at_up + 20).await,
        "web-2 serves again"
    );

    let errors = load.finish().await;
    assert!(errors.is_empty(), "client-visible errors: {errors:#?}");
    fx.shutdown().await.unwrap();
}

/// Replaces `web[1]` by a backend that accepts and closes without
/// answering, sends GETs one by one until `change` is announced for it,
/// then asserts it gets no further request. Every GET must succeed.
async fn no_traffic_after(pool_extra: &str, change: HealthChange) -> u64 {
    let mut web = Backend::start_many("web", 3).await.unwrap();
    let mut fx = proxy(&[&web[0], &web[1], &web[2]], pool_extra).await;
    let client = Client::http1();
    for _ in 0..6 {
        assert_eq!(get(&client, &fx).await.status, StatusCode::OK);
    }
    fx.clear_events();
    web[1].stop().await;
    let faulty = Faulty::start(web[1].addr()).await.unwrap();
    let mut sent = 0;
    loop {
        let reply = get(&client, &fx).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let events = health_events(&mut fx);
        if events
            .iter()
            .any(|(b, c, _)| *b == faulty.addr() && *c == change)
        {
            break;
        }
        sent += 1;
        assert!(sent < 2000, "no {change:?} event; events: {events:?}");
    }
    let hits = faulty.requests();
    assert!(hits >= 1, "the faulty backend was never tried");
    for _ in 0..60 {
        let reply = get(&client, &fx).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert_eq!(
        faulty.requests(),
        hits,
        "requests reached the backend after {change:?}"
    );
    fx.shutdown().await.unwrap();
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_traffic_after_fall_checks() {
    let extra = format!("{CHECKS}[pools.passive]\nenabled = false\n");
    no_traffic_after(&extra, HealthChange::Down).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_traffic_after_passive_ejection() {
    let extra = "[pools.passive]\nconsecutive_failures = 3\nejection_time = \"30s\"\n";
    let hits = no_traffic_after(extra, HealthChange::Ejected).await;
    assert_eq!(
        hits, 3,
        "ejected after exactly consecutive_failures failures"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answering_500_is_ejected() {
    let web = Backend::start_many("web", 3).await.unwrap();
    let extra = "[pools.passive]\nconsecutive_failures = 3\nejection_time = \"30s\"\n";
    let mut fx = proxy(&[&web[0], &web[1], &web[2]], extra).await;
    web[1].set_status(Some(StatusCode::INTERNAL_SERVER_ERROR));
    let client = Client::http1();
    let mut errors = 0;
    for _ in 0..30 {
        let reply = get(&client, &fx).await;
        match reply.status {
            StatusCode::OK => assert_ne!(reply.backend(), Some("web-2")),
            StatusCode::INTERNAL_SERVER_ERROR => errors += 1,
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!(errors, 3, "a 5xx is not retried; the 3rd in a row ejects");
    let served = web[1].served();
    for _ in 0..30 {
        assert_eq!(get(&client, &fx).await.status, StatusCode::OK);
    }
    assert_eq!(web[1].served(), served, "no traffic after ejection");
    let events = health_events(&mut fx);
    let ejected: Vec<_> = events
        .iter()
        .filter(|(_, c, _)| *c == HealthChange::Ejected)
        .collect();
    assert_eq!(ejected.len(), 1, "{events:?}");
    assert_eq!(ejected[0].0, web[1].addr());
    assert!(ejected[0].2.contains("status 500"), "{}", ejected[0].2);
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_gives_504_past_the_response_timeout_and_is_ejected() {
    let web = Backend::start_many("web", 3).await.unwrap();
    let extra = "response_timeout = \"200ms\"\n[pools.passive]\nconsecutive_failures = 2\nejection_time = \"30s\"\n";
    let mut fx = proxy(&[&web[0], &web[1], &web[2]], extra).await;
    web[1].set_delay(Duration::from_secs(3));
    let client = Client::http1();
    let mut timeouts = 0;
    for _ in 0..30 {
        let started = Instant::now();
        let reply = get(&client, &fx).await;
        let took = started.elapsed();
        match reply.status {
            StatusCode::OK => assert_ne!(reply.backend(), Some("web-2")),
            StatusCode::GATEWAY_TIMEOUT => {
                timeouts += 1;
                assert!(
                    took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
                    "504 after {took:?}"
                );
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!(
        timeouts, 2,
        "a timeout is not retried; the 2nd in a row ejects"
    );
    let events = health_events(&mut fx);
    let ejected: Vec<_> = events
        .iter()
        .filter(|(_, c, _)| *c == HealthChange::Ejected)
        .collect();
    assert_eq!(ejected.len(), 1, "{events:?}");
    assert_eq!(ejected[0].0, web[1].addr());
    assert!(
        ejected[0].2.contains("response timeout"),
        "{}",
        ejected[0].2
    );
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_is_a_quick_503_with_retry_after() {
    let mut web = Backend::start_many("web", 2).await.unwrap();
    let mut fx = proxy(&[&web[0], &web[1]], CHECKS).await;
    let client = Client::http1();
    assert_eq!(get(&client, &fx).await.status, StatusCode::OK);
    fx.clear_events();
    web[0].stop().await;
    web[1].stop().await;
    // Before the checks notice: every attempt fails to connect.
    let started = Instant::now();
    let reply = get(&client, &fx).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(reply.headers.contains_key("retry-after"));
    // Once both are down the policy answers at once.
    await_each(&mut fx, &[web[0].addr(), web[1].addr()], HealthChange::Down).await;
    let started = Instant::now();
    let reply = get(&client, &fx).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.text(), "no healthy backend\n");
    assert!(reply.headers.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_millis(500));
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_cap_keeps_half_the_pool_in() {
    let web = Backend::start_many("web", 4).await.unwrap();
    let extra = "[pools.passive]\nconsecutive_failures = 2\nejection_time = \"30s\"\nmax_ejected_percent = 50\n";
    let mut fx = proxy(&[&web[0], &web[1], &web[2], &web[3]], extra).await;
    for b in &web {
        b.set_status(Some(StatusCode::INTERNAL_SERVER_ERROR));
    }
    let client = Client::http1();
    for _ in 0..40 {
        let reply = get(&client, &fx).await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the pool is never black-holed: {}",
            reply.text()
        );
    }
    let events = health_events(&mut fx);
    let ejected = events
        .iter()
        .filter(|(_, c, _)| *c == HealthChange::Ejected)
        .count();
    assert_eq!(ejected, 2, "at most 50% of 4 backends: {events:?}");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_expects_status_and_body() {
    let web = Backend::start_many("web", 3).await.unwrap();
    // Only web-1's body contains "web-1": the other two go down.
    let extra = format!("{CHECKS}expect_body = \"web-1\"\n[pools.passive]\nenabled = false\n");
    let mut fx = proxy(&[&web[0], &web[1], &web[2]], &extra).await;
    await_each(&mut fx, &[web[1].addr(), web[2].addr()], HealthChange::Down).await;
    let client = Client::http1();
    for _ in 0..10 {
        let reply = get(&client, &fx).await;
        assert_eq!(reply.backend(), Some("web-1"));
    }
    let events = health_events(&mut fx);
    assert!(
        !events.iter().any(|(a, _, _)| *a == web[0].addr()),
        "web-1 passes: {events:?}"
    );
    // A status outside expect_status fails the check too.
    web[0].set_status(Some(StatusCode::SERVICE_UNAVAILABLE));
    let addr = web[0].addr();
    let event = fx
        .await_event(
            |e| is_change(e, addr, &[HealthChange::Down]),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    let ServerEvent::BackendHealth { reason, .. } = event else {
        unreachable!()
    };
    assert!(reason.contains("status 503"), "{reason}");
    fx.shutdown().await.unwrap();
}

/// The utilization a backend reports in a health-check response updates
/// its signals: with reports only on checks (never on proxied responses),
/// the utilization-weighted policy still moves traffic off the busy one.
/// Without the check path both would count as unreported (an even split).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_responses_carry_the_load_report() {
    let busy = Backend::start("busy").await.unwrap();
    let idle = Backend::start("idle").await.unwrap();
    busy.set_check_load_report(Some("cpu=0.95, mem=0.30")).await;
    idle.set_check_load_report(Some("cpu=0.10, mem=0.10")).await;
    let policy = "weighted-random-by-utilization";
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", policy, &["web"]))
        .pool(PoolSpec::new("web", &[&busy, &idle]).extra(CHECKS));
    let fx = ProxyFixture::start(&config, &[(policy, bundled(policy))])
        .await
        .unwrap();
    let checked = eventually(Duration::from_secs(3), || {
        busy.health_checks() >= 2 && idle.health_checks() >= 2
    })
    .await;
    assert!(checked, "both backends were health-checked");

    let client = Client::http1();
    let mut to_busy = 0;
    for _ in 0..400 {
        let reply = get(&client, &fx).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        to_busy += usize::from(reply.backend() == Some("busy"));
    }
    // Expected busy share 0.05 / (0.05 + 0.9) = 5.3 % (sd 1.1 %); an even
    // split would be 50 %.
    assert!(to_busy < 60, "busy got {to_busy} of 400");
    fx.shutdown().await.unwrap();
}
