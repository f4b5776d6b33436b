//! The cost of one policy decision on the real host path: the request head
//! moved into the store, the guest's calls back into the host, the decision
//! lifted and checked. 16 backends, a request with 8 headers. One case per
//! shipped policy (README, "Shipped policies").
//!
//! cargo bench -p wasmroute --bench decision
//!
//! `host call KIND x16` makes one kind of host call 16 times per decision
//! (the test-only `host-calls` policy); against `host call none x0` it
//! gives the cost of one call.
//!
//! `content-router live + round-robin shadow` is a request's decisions on
//! a listener with a shadow candidate (`[listeners.shadow]`), next to
//! `content-router alone`:
//!
//! cargo bench -p wasmroute --bench decision -- content-router
//!
//! `decision metrics alone` is the part of each case that the decision
//! metrics (`wasmroute_policy_decision_seconds`) cost; `decision end clock
//! read` is the clock read they need, which the attempt that follows
//! reuses as its own start (`RequestView::decided_at`), so the request
//! path reads the clock no more often than it would without them.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use wasmroute::config::{BackendConfig, PoolConfig};
use wasmroute::http::shadow::{self, LiveRoute, Shadow, ShadowRecord};
use wasmroute::policy::{
    BoundPolicy, Decision, HeaderEdit, PolicyEngine, PolicyLimits, RequestView, decide,
};
use wasmroute::pool::BackendPool;

fn pool(name: &str, first_port: u16) -> Arc<BackendPool> {
    let config = PoolConfig {
        name: name.into(),
        backends: (0..16)
            .map(|i| BackendConfig {
                address: format!("127.0.0.1:{}", first_port + i).parse().unwrap(),
                weight: 1,
            })
            .collect(),
        health: None,
        load_header: http::HeaderName::from_static("x-backend-load"),
        ..PoolConfig::default()
    };
    Arc::new(BackendPool::new(&config, None))
}

fn request(path: &str) -> RequestView {
    request_with(path, &[])
}

/// The bench request plus extra headers.
fn request_with(path: &str, extra: &[(&str, &str)]) -> RequestView {
    let mut builder = http::Request::builder()
        .uri(path)
        .header("host", "example.com")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .header("accept-encoding", "gzip")
        .header("cookie", "session=abc; theme=dark")
        .header("x-request-id", "0123456789abcdef")
        .header("x-route-pool", "video");
    builder = builder.header("x-forwarded-for", "10.0.0.1");
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    let (head, ()) = builder.body(()).unwrap().into_parts();
    RequestView::new(head, "127.0.0.1".parse().unwrap(), false, None)
}

fn bound(engine: &PolicyEngine, name: &str, config: &str) -> Arc<BoundPolicy> {
    let bytes = wasmroute::bundled::get(name).expect("bundled policy");
    bound_bytes(engine, name, bytes, config)
}

/// [`bound`] for a module given as bytes.
fn bound_bytes(engine: &PolicyEngine, name: &str, bytes: &[u8], config: &str) -> Arc<BoundPolicy> {
    let module = Arc::new(engine.compile(name, bytes).expect("compiles"));
    let pools: Arc<[Arc<BackendPool>]> = vec![pool("web", 20000), pool("video", 21000)].into();
    let limits = PolicyLimits {
        // Generous: the bench measures cost, and a descheduled thread on a
        // loaded machine must not turn a sample into a timeout.
        decision_timeout: Duration::from_secs(1),
        memory_limit: 16 << 20,
    };
    let counters = Arc::default();
    let config = toml::from_str(config).unwrap();
    let policy = BoundPolicy::new(module, pools, counters, &config, limits);
    policy.validate().expect("init succeeds");
    Arc::new(policy)
}

/// The `Set-Cookie` value a decision adds to the response, if any.
fn set_cookie(decision: &Decision) -> Option<String> {
    let Decision::Forward(forward) = decision else {
        return None;
    };
    forward.response_edits.iter().find_map(|edit| match edit {
        HeaderEdit::Append((name, value)) | HeaderEdit::Set((name, value))
            if name.eq_ignore_ascii_case("set-cookie") =>
        {
            Some(value.clone())
        }
        _ => None,
    })
}

const STICKY: &str = "secret = \"bench-secret-0123456789\"\ncookie = \"lb\"";

fn bench_decisions(c: &mut Criterion) {
    let engine = PolicyEngine::new().unwrap();
    let cases = [
        ("round-robin", "round-robin", "", "/"),
        (
            "content-router path",
            "content-router",
            "",
            "/video/intro.mp4",
        ),
        (
            "content-router path+header",
            "content-router",
            "header = \"x-route-pool\"",
            "/billing/x",
        ),
        ("weighted-round-robin", "weighted-round-robin", "", "/"),
        ("random", "random", "", "/"),
        (
            "weighted-random-by-utilization",
            "weighted-random-by-utilization",
            "",
            "/",
        ),
        ("least-connections", "least-connections", "", "/"),
        ("least-response-time", "least-response-time", "", "/"),
        ("consistent-hash client-ip", "consistent-hash", "", "/"),
        (
            "consistent-hash header",
            "consistent-hash",
            "key = \"header:x-request-id\"",
            "/",
        ),
        ("sticky-cookie new client", "sticky-cookie", STICKY, "/"),
        (
            "read-write-split",
            "read-write-split",
            "primary = \"web\"\nreplicas = \"video\"",
            "/",
        ),
        ("shared-round-robin", "shared-round-robin", "", "/"),
    ];
    for (label, name, config, path) in cases {
        let policy = bound(&engine, name, config);
        let mut view = Some(request(path));
        c.bench_function(label, |b| {
            b.iter(|| {
                let (back, result) = decide(&policy, view.take().unwrap());
                view = Some(back);
                black_box(result.expect("a valid decision"))
            })
        });
    }

    // A returning sticky client: the cookie the first answer set.
    let policy = bound(&engine, "sticky-cookie", STICKY);
    let (_, first) = decide(&policy, request("/"));
    let cookie = set_cookie(&first.expect("a valid decision")).expect("a set-cookie");
    let pair = cookie.split(';').next().unwrap().to_string();
    let mut view = Some(request_with("/", &[("cookie", &pair)]));
    c.bench_function("sticky-cookie pinned", |b| {
        b.iter(|| {
            let (back, result) = decide(&policy, view.take().unwrap());
            view = Some(back);
            let decision = result.expect("a valid decision");
            debug_assert!(set_cookie(&decision).is_none());
            black_box(decision)
        })
    });
}

/// What one host call costs the guest: the test-only `host-calls` policy
/// making one kind of call 16 times in a decision, against the same
/// decision making none. `(calls - none) / 16` is the cost of one call
/// (docs/policy-guide.md, "What each host call costs").
fn bench_host_calls(c: &mut Criterion) {
    const TIMES: u32 = 16;
    let engine = PolicyEngine::new().unwrap();
    for &kind in wasmroute_e2e::HOST_CALL_KINDS {
        let times = if kind == "none" { 0 } else { TIMES };
        let config = format!("call = \"{kind}\"\ntimes = {times}");
        let bytes = wasmroute_e2e::guests::HOST_CALLS;
        let policy = bound_bytes(&engine, "host-calls", bytes, &config);
        let mut view = Some(request("/"));
        c.bench_function(&format!("host call {kind} x{times}"), |b| {
            b.iter(|| {
                let (back, result) = decide(&policy, view.take().unwrap());
                view = Some(back);
                black_box(result.expect("a valid decision"))
            })
        });
    }
}

/// What a shadow candidate adds to a request (`[listeners.shadow]`,
/// `sample = 1.0`): the live `content-router` decides, then the
/// round-robin candidate decides on the same view and the two answers
/// are compared (`http::shadow::compare`), as the pipeline does. On
/// `/video/..` the two always differ, so every iteration also records a
/// divergence: the dearest case. `content-router alone` is the same
/// decision without a shadow, for the ratio (at most 2x).
fn bench_shadow(c: &mut Criterion) {
    let engine = PolicyEngine::new().unwrap();
    let live = bound(&engine, "content-router", "");
    let candidate = bound(&engine, "round-robin", "");
    let record = Arc::new(ShadowRecord::new("round-robin"));
    let shadow = Shadow::new(Ok(candidate), 1.0, Arc::clone(&record));
    let path = "/video/intro.mp4";
    let mut view = Some(request(path));
    c.bench_function("content-router alone", |b| {
        b.iter(|| {
            let (back, result) = decide(&live, view.take().unwrap());
            view = Some(back);
            black_box(result.expect("a valid decision"))
        })
    });
    c.bench_function("content-router live + round-robin shadow", |b| {
        b.iter(|| {
            let (back, result) = decide(&live, view.take().unwrap());
            let route = match result.expect("a valid decision") {
                Decision::Forward(f) => LiveRoute::Forward(f.pool, f.backend),
                Decision::Respond(r) => LiveRoute::Status(r.status),
            };
            view = Some(shadow::compare(&shadow, &live.pools, back, route));
            black_box(route)
        })
    });
    assert!(record.different.get() > 0, "the candidate was compared");
    assert_eq!(record.error.get(), 0, "the candidate never failed");
}

/// What the decision metrics add to every decision on the request path:
/// the duration from the decision's start (the pipeline's first decision
/// starts at the request's start, `policy::decide_since`) to its end, and
/// the histogram observation. The clock read at the end is measured on
/// its own: the attempt takes it as its start instead of reading the
/// clock itself, so it is not an added cost.
fn bench_decision_metrics(c: &mut Criterion) {
    let metrics = wasmroute::metrics::DecisionMetrics::default();
    let started = Instant::now();
    let ended = started + Duration::from_micros(3);
    c.bench_function("decision metrics alone", |b| {
        b.iter(|| {
            let elapsed = black_box(ended).saturating_duration_since(black_box(started));
            metrics.duration.observe(elapsed);
            black_box(elapsed)
        })
    });
    c.bench_function("decision end clock read", |b| b.iter(Instant::now));
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_decisions, bench_host_calls, bench_shadow, bench_decision_metrics
}
criterion_main!(benches);
