//! The cost of one policy decision on the real host path: the request head
//! moved into the store, the guest's calls back into the host, the decision
//! lifted and checked. 16 backends, a request with 8 headers.
//!
//! cargo bench -p wasmroute --bench decision

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmroute::config::{BackendConfig, PoolConfig};
use wasmroute::policy::{BoundPolicy, PolicyEngine, PolicyLimits, RequestView, decide};
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
    };
    Arc::new(BackendPool::new(&config, None))
}

fn request(path: &str) -> RequestView {
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
    let (head, ()) = builder.body(()).unwrap().into_parts();
    RequestView {
        head,
        client_ip: "127.0.0.1".parse().unwrap(),
        is_tls: false,
        server_name: None,
    }
}

fn bound(engine: &PolicyEngine, name: &str, config: &str) -> Arc<BoundPolicy> {
    let bytes = wasmroute::bundled::get(name).expect("bundled policy");
    let module = Arc::new(engine.compile(name, bytes).expect("compiles"));
    let pools: Arc<[Arc<BackendPool>]> = vec![pool("web", 20000), pool("video", 21000)].into();
    let limits = PolicyLimits {
        decision_timeout: Duration::from_millis(5),
        memory_limit: 16 << 20,
    };
    let policy = BoundPolicy::new(module, pools, &toml::from_str(config).unwrap(), limits);
    policy.validate().expect("init succeeds");
    Arc::new(policy)
}

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
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_decisions
}
criterion_main!(benches);
