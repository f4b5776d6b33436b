//! The admin endpoint over real sockets: `/metrics` counts known traffic
//! (per backend, local answers, policy errors by kind), `/live`, `/ready`
//! through a drain, `/status`, `/reload` (accepted and refused), backend
//! drain and enable under load and across a reload, the token rules, and
//! 404 / 405 answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, StatusCode};
use wasmroute_e2e::client::empty;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, Reply, STEP, bundled,
    eventually_async, guests, sample,
};

const TOKEN: &str = "s3cret-admin-token-0123";

/// Listener `edge` (round robin over pool `web` of `backends`), with an
/// admin endpoint with `admin_extra` keys.
fn round_robin_config(backends: &[&Backend], admin_extra: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .admin(admin_extra)
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(PoolSpec::new("web", backends))
}

async fn start_round_robin(backends: &[&Backend], admin_extra: &str) -> ProxyFixture {
    let config = round_robin_config(backends, admin_extra);
    ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .expect("the proxy starts")
}

pub(crate) fn admin_url(fx: &ProxyFixture, path: &str) -> String {
    let address = fx.server().admin_addr().expect("an admin endpoint");
    format!("http://{address}{path}")
}

pub(crate) async fn admin_get(fx: &ProxyFixture, path: &str) -> Reply {
    Client::http1().get(&admin_url(fx, path)).await.unwrap()
}

pub(crate) async fn admin_post(fx: &ProxyFixture, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::post(admin_url(fx, path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Client::http1()
        .request(request.body(empty()).unwrap())
        .await
        .unwrap()
}

pub(crate) async fn scrape(fx: &ProxyFixture) -> String {
    let reply = admin_get(fx, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    reply.text()
}

pub(crate) async fn status_json(fx: &ProxyFixture) -> serde_json::Value {
    let reply = admin_get(fx, "/status").await;
    assert_eq!(reply.status, StatusCode::OK);
    serde_json::from_slice(&reply.body).unwrap()
}

fn backend_status<'a>(status: &'a serde_json::Value, backend: &Backend) -> &'a serde_json::Value {
    let address = backend.addr().to_string();
    status["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == address.as_str())
        .unwrap()
}

#[tokio::test]
async fn ten_requests_over_two_backends_count_five_and_five() {
    let backends = Backend::start_many("m", 2).await.unwrap();
    let fx = start_round_robin(&[&backends[0], &backends[1]], "").await;
    let client = Client::http1();
    for _ in 0..10 {
        let reply = client.get(&fx.url("edge", "/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let text = scrape(&fx).await;
    for backend in &backends {
        let address = backend.addr().to_string();
        let labels = [
            ("listener", "edge"),
            ("pool", "web"),
            ("backend", &address),
            ("code", "2xx"),
        ];
        assert_eq!(
            sample(&text, "wasmroute_requests_total", &labels),
            Some(5.0),
            "{text}"
        );
        let labels = [
            ("listener", "edge"),
            ("pool", "web"),
            ("backend", &address),
            ("code", "5xx"),
        ];
        assert_eq!(
            sample(&text, "wasmroute_requests_total", &labels),
            Some(0.0)
        );
        let labels = [("pool", "web"), ("backend", address.as_str())];
        let count = sample(&text, "wasmroute_upstream_response_seconds_count", &labels);
        assert_eq!(count, Some(5.0), "{text}");
        let inf = [
            ("pool", "web"),
            ("backend", address.as_str()),
            ("le", "+Inf"),
        ];
        assert_eq!(
            sample(&text, "wasmroute_upstream_response_seconds_bucket", &inf),
            Some(5.0)
        );
        assert_eq!(sample(&text, "wasmroute_backend_up", &labels), Some(1.0));
        assert_eq!(
            sample(&text, "wasmroute_backend_active_requests", &labels),
            Some(0.0)
        );
    }
    let edge = [("listener", "edge"), ("pool", "web")];
    assert_eq!(
        sample(&text, "wasmroute_request_duration_seconds_count", &edge),
        Some(10.0)
    );
    let policy = [("listener", "edge"), ("policy", "round-robin")];
    assert_eq!(
        sample(&text, "wasmroute_policy_decisions_total", &policy),
        Some(10.0)
    );
    assert_eq!(
        sample(&text, "wasmroute_policy_decision_seconds_count", &policy),
        Some(10.0)
    );
    let trap = [
        ("listener", "edge"),
        ("policy", "round-robin"),
        ("kind", "trap"),
    ];
    assert_eq!(
        sample(&text, "wasmroute_policy_errors_total", &trap),
        Some(0.0)
    );
    let listener = [("listener", "edge")];
    assert!(sample(&text, "wasmroute_connections_total", &listener).unwrap() >= 1.0);
    assert_eq!(
        sample(&text, "wasmroute_tls_handshake_errors_total", &listener),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "wasmroute_retries_total", &[("pool", "web")]),
        Some(0.0)
    );
    for family in [
        "wasmroute_requests_total counter",
        "wasmroute_request_duration_seconds histogram",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}:\n{text}"
        );
    }
    assert!(text.contains("# HELP wasmroute_requests_total "));
    assert!(text.contains("wasmroute_build_info{version=\"0.1.0\",wit=\""));
    assert!(text.contains("wasmroute_policy_info{policy=\"round-robin\",version=\""));
    assert!(sample(&text, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(sample(&text, "process_open_fds", &[]).unwrap() > 0.0);
    assert!(sample(&text, "process_cpu_seconds_total", &[]).is_some());
}

/// HTTP/2 goes through hyper's codec, which counts a request when its
/// response body ends.
#[tokio::test]
async fn http2_requests_count_like_http1_ones() {
    let backends = Backend::start_many("h", 2).await.unwrap();
    let fx = start_round_robin(&[&backends[0], &backends[1]], "").await;
    let client = Client::http2();
    for _ in 0..4 {
        let reply = client.get(&fx.url("edge", "/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let counted = eventually_async(STEP, || async {
        let text = scrape(&fx).await;
        let edge = [("listener", "edge"), ("pool", "web")];
        sample(&text, "wasmroute_request_duration_seconds_count", &edge) == Some(4.0)
    })
    .await;
    assert!(counted, "four requests counted");
    let text = scrape(&fx).await;
    for backend in &backends {
        let address = backend.addr().to_string();
        let labels = [
            ("listener", "edge"),
            ("pool", "web"),
            ("backend", &address),
            ("code", "2xx"),
        ];
        assert_eq!(
            sample(&text, "wasmroute_requests_total", &labels),
            Some(2.0),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_local_answer_counts_with_an_empty_pool_and_backend() {
    let backend = Backend::start("unused").await.unwrap();
    let config = ConfigBuilder::new()
        .admin("")
        .listener(ListenerSpec::new("edge", "echo-request", &["web"]))
        .pool(PoolSpec::new("web", &[&backend]));
    let fx = ProxyFixture::start(&config, &[("echo-request", guests::ECHO_REQUEST)])
        .await
        .unwrap();
    for _ in 0..3 {
        let reply = Client::http1().get(&fx.url("edge", "/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let text = scrape(&fx).await;
    let local = [
        ("listener", "edge"),
        ("pool", ""),
        ("backend", ""),
        ("code", "2xx"),
    ];
    assert_eq!(
        sample(&text, "wasmroute_requests_total", &local),
        Some(3.0),
        "{text}"
    );
    let duration = [("listener", "edge"), ("pool", "")];
    assert_eq!(
        sample(&text, "wasmroute_request_duration_seconds_count", &duration),
        Some(3.0)
    );
    assert_eq!(backend.served(), 0);
}

/// `policy` (trapping or looping) falls back to the pool: the requests
/// succeed and the failures are counted by kind.
async fn policy_errors_of(policy: &[u8], kind: &str) {
    let backend = Backend::start("spare").await.unwrap();
    let config = ConfigBuilder::new()
        .admin("")
        .decision_timeout("20ms")
        .listener(ListenerSpec::new("edge", "failing", &["web"]).on_error("fallback"))
        .pool(PoolSpec::new("web", &[&backend]));
    let fx = ProxyFixture::start(&config, &[("failing", policy)])
        .await
        .unwrap();
    // Fewer than the breaker's trip count: every request calls the policy.
    for _ in 0..3 {
        let reply = Client::http1().get(&fx.url("edge", "/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let text = scrape(&fx).await;
    let labels = [("listener", "edge"), ("policy", "failing"), ("kind", kind)];
    assert_eq!(
        sample(&text, "wasmroute_policy_errors_total", &labels),
        Some(3.0),
        "{text}"
    );
    let address = backend.addr().to_string();
    let served = [
        ("listener", "edge"),
        ("pool", "web"),
        ("backend", &address),
        ("code", "2xx"),
    ];
    assert_eq!(
        sample(&text, "wasmroute_requests_total", &served),
        Some(3.0)
    );
    let status = status_json(&fx).await;
    assert_eq!(status["listeners"][0]["decision_errors"], 3);
}

#[tokio::test]
async fn a_trapping_policy_counts_traps() {
    policy_errors_of(guests::TRAPPING, "trap").await;
}

#[tokio::test]
async fn a_looping_policy_counts_timeouts() {
    policy_errors_of(guests::LOOPING, "timeout").await;
}

#[tokio::test]
async fn ready_until_the_drain_starts_and_live_throughout() {
    let slow = Backend::start("slow").await.unwrap();
    let fx = start_round_robin(&[&slow], "").await;
    assert_eq!(admin_get(&fx, "/live").await.status, StatusCode::OK);
    assert_eq!(admin_get(&fx, "/ready").await.status, StatusCode::OK);
    assert!(fx.server().lifecycle().is_ready());
    // An in-flight request keeps the drain going while /ready is asked.
    slow.set_delay(std::time::Duration::from_millis(1500));
    let url = fx.url("edge", "/");
    let in_flight = tokio::spawn(async move { Client::http1().get(&url).await });
    let started = eventually_async(STEP, || async { slow.seen().await.len() == 1 }).await;
    assert!(started, "the slow request reached the backend");
    let (ready_url, live_url) = (admin_url(&fx, "/ready"), admin_url(&fx, "/live"));
    let shutdown = tokio::spawn(fx.shutdown());
    let unready = eventually_async(STEP, || async {
        let reply = Client::http1().get(&ready_url).await;
        reply.is_ok_and(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    assert!(unready, "/ready answers 503 while draining");
    assert_eq!(
        Client::http1().get(&live_url).await.unwrap().status,
        StatusCode::OK
    );
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request finished"
    );
    shutdown.await.unwrap().unwrap();
}

#[tokio::test]
async fn status_lists_listeners_pools_and_backends() {
    let backends = Backend::start_many("s", 2).await.unwrap();
    let fx = start_round_robin(&[&backends[0], &backends[1]], "").await;
    let status = status_json(&fx).await;
    assert_eq!(status["ready"], true);
    let listener = &status["listeners"][0];
    assert_eq!(listener["name"], "edge");
    assert_eq!(listener["address"], fx.addr("edge").to_string());
    assert_eq!(listener["protocol"], "http");
    assert_eq!(listener["policy"], "round-robin");
    assert_eq!(listener["sha256"].as_str().unwrap().len(), 64);
    assert!(listener["version"].as_u64().is_some());
    assert_eq!(status["pools"][0]["name"], "web");
    let backend = backend_status(&status, &backends[1]);
    assert_eq!(backend["state"], "up");
    assert_eq!(backend["weight"], 1);
    assert_eq!(backend["active_requests"], 0);
    assert!(backend["ejected_for_ms"].is_null());
    assert!(backend["load"].is_null());
}

#[tokio::test]
async fn reload_answers_200_then_400_with_the_reasons() {
    let backend = Backend::start("r").await.unwrap();
    let fx = start_round_robin(&[&backend], "").await;
    let reply = admin_post(&fx, "/reload", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let broken = round_robin_config(&[&backend], "")
        .render()
        .replace("[[pools]]\nname = \"web\"", "[[pools]]\nname = \"other\"");
    fx.rewrite_config(&broken).unwrap();
    let reply = admin_post(&fx, "/reload", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let reasons: Vec<String> = serde_json::from_slice(&reply.body).unwrap();
    assert!(!reasons.is_empty());
    let file = fx.dir().config_path().display().to_string();
    assert!(reasons.iter().all(|r| r.starts_with(&file)), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains(": listeners[0].pools")),
        "{reasons:?}"
    );
    // The previous config keeps serving.
    let reply = Client::http1().get(&fx.url("edge", "/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let text = scrape(&fx).await;
    let refused = sample(
        &text,
        "wasmroute_config_reloads_total",
        &[("result", "refused")],
    );
    assert!(refused.unwrap() >= 1.0, "{text}");
    assert!(sample(&text, "wasmroute_config_reloads_total", &[("result", "ok")]).unwrap() >= 1.0);
}

/// Requests sent by the load loops, and the failures among them.
#[derive(Default)]
struct Load {
    sent: AtomicU64,
    failed: AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

/// Four loops of requests to `url` until `load.stop`.
fn start_load(url: String, load: &Arc<Load>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            let (url, load) = (url.clone(), Arc::clone(load));
            tokio::spawn(async move {
                let client = Client::http1();
                while !load.stop.load(Ordering::Relaxed) {
                    let ok = client
                        .get(&url)
                        .await
                        .is_ok_and(|r| r.status == StatusCode::OK);
                    load.failed.fetch_add(u64::from(!ok), Ordering::Relaxed);
                    load.sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// Waits until `load` has sent `more` requests beyond now: with four
/// loops, every request in flight now has finished after eight more.
async fn let_load_run(load: &Load, more: u64) {
    let target = load.sent.load(Ordering::Relaxed) + more;
    let done = eventually_async(STEP, || async {
        load.sent.load(Ordering::Relaxed) >= target
    })
    .await;
    assert!(done, "the load kept running");
}

fn drain_path(pool: &str, backend: &Backend, action: &str) -> String {
    format!("/pools/{pool}/backends/{}/{action}", backend.addr())
}

#[tokio::test]
async fn a_drained_backend_gets_nothing_new_under_load_then_comes_back() {
    let backends = Backend::start_many("d", 2).await.unwrap();
    let fx = start_round_robin(&[&backends[0], &backends[1]], "").await;
    let load = Arc::new(Load::default());
    let loops = start_load(fx.url("edge", "/"), &load);
    let_load_run(&load, 20).await;
    let reply = admin_post(&fx, &drain_path("web", &backends[1], "drain"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let_load_run(&load, 8).await;
    let served_at_drain = backends[1].served();
    let_load_run(&load, 100).await;
    assert_eq!(
        backends[1].served(),
        served_at_drain,
        "no new request after the drain"
    );
    let status = status_json(&fx).await;
    assert_eq!(backend_status(&status, &backends[1])["state"], "draining");
    assert_eq!(backend_status(&status, &backends[0])["state"], "up");
    let reply = admin_post(&fx, &drain_path("web", &backends[1], "enable"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let back = eventually_async(STEP, || async { backends[1].served() > served_at_drain }).await;
    assert!(back, "the enabled backend serves again");
    load.stop.store(true, Ordering::Relaxed);
    for task in loops {
        task.await.unwrap();
    }
    assert_eq!(load.failed.load(Ordering::Relaxed), 0, "no request failed");
    let status = status_json(&fx).await;
    assert_eq!(backend_status(&status, &backends[1])["state"], "up");
}

#[tokio::test]
async fn a_drained_backend_stays_drained_across_a_reload() {
    let backends = Backend::start_many("k", 2).await.unwrap();
    let fx = start_round_robin(&[&backends[0], &backends[1]], "").await;
    let reply = admin_post(&fx, &drain_path("web", &backends[0], "drain"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reweighted = round_robin_config(&[&backends[0], &backends[1]], "")
        .render()
        .replace("backends = [", "retries = 1\nbackends = [");
    fx.rewrite_config(&reweighted).unwrap();
    assert_eq!(admin_post(&fx, "/reload", &[]).await.status, StatusCode::OK);
    let status = status_json(&fx).await;
    assert_eq!(backend_status(&status, &backends[0])["state"], "draining");
    for _ in 0..6 {
        let reply = Client::http1().get(&fx.url("edge", "/")).await.unwrap();
        assert_eq!(reply.backend(), Some("k-2"));
    }
    assert_eq!(backends[0].served(), 0);
}

#[tokio::test]
async fn with_a_token_changes_need_it() {
    let backend = Backend::start("t").await.unwrap();
    let fx = start_round_robin(&[&backend], &format!("token = \"{TOKEN}\"")).await;
    let missing = admin_post(&fx, "/reload", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert!(missing.headers.contains_key("www-authenticate"));
    let wrong = admin_post(
        &fx,
        "/reload",
        &[("authorization", "Bearer not-the-token-at-all")],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let drain = drain_path("web", &backend, "drain");
    assert_eq!(
        admin_post(&fx, &drain, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_json(&fx).await["pools"][0]["backends"][0]["state"],
        "up"
    );
    let bearer = format!("Bearer {TOKEN}");
    let right = admin_post(&fx, "/reload", &[("authorization", &bearer)]).await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.text());
    // Reading needs no token.
    assert_eq!(admin_get(&fx, "/metrics").await.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_404_and_wrong_methods_405() {
    let backend = Backend::start("p").await.unwrap();
    let fx = start_round_robin(&[&backend], "").await;
    assert_eq!(admin_get(&fx, "/nope").await.status, StatusCode::NOT_FOUND);
    let wrong = admin_post(&fx, "/metrics", &[]).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers["allow"], "GET");
    let wrong = admin_get(&fx, "/reload").await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers["allow"], "POST");
    let unknown_pool = admin_post(&fx, &drain_path("nope", &backend, "drain"), &[]).await;
    assert_eq!(unknown_pool.status, StatusCode::NOT_FOUND);
    let unknown_backend = admin_post(&fx, "/pools/web/backends/127.0.0.1:1/drain", &[]).await;
    assert_eq!(unknown_backend.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_taken_admin_port_fails_startup_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let backend = Backend::start("x").await.unwrap();
    // The first address in the file is the admin one.
    let text = round_robin_config(&[&backend], "").render().replacen(
        "address = \"127.0.0.1:0\"",
        &format!("address = \"{address}\""),
        1,
    );
    assert!(text.contains(&address.to_string()), "{text}");
    let started =
        ProxyFixture::start_with_text(&text, &[("round-robin", bundled("round-robin"))]).await;
    let error = format!("{:#}", started.err().expect("startup fails"));
    assert!(error.contains("admin.address"), "{error}");
    assert!(error.contains(&address.to_string()), "{error}");
}
