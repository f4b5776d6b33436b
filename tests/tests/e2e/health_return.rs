//! A passing active check ends a passive ejection: a backend killed under
//! load is ejected by its failures and, once restarted, is let back in as
//! soon as `rise` active checks in a row pass, not when its ejection time
//! (60 s here, far past every wait of the test) is over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wasmroute::ServerEvent;
use wasmroute::health::HealthChange;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled, eventually,
};

/// Checks every 50 ms; up after 2 passes; `fall` high enough that the
/// checks never take the backend down, so only the ejection keeps it out.
/// A first ejection of 60 s that only passing checks can cut short.
const POOL: &str = "[pools.health]\npath = \"/\"\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 1000\n\
[pools.passive]\nconsecutive_failures = 3\nejection_time = \"60s\"\n";

fn is_change(event: &ServerEvent, backend: SocketAddr, change: HealthChange) -> bool {
    matches!(event, ServerEvent::BackendHealth { backend: b, change: c, .. }
        if *b == backend && *c == change)
}

/// Two clients sending GETs until stopped, counting answers per backend.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<HashMap<String, AtomicU64>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(url: String, names: &[&str]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = names.iter().map(|n| (n.to_string(), AtomicU64::new(0)));
        let served = Arc::new(counts.collect::<HashMap<_, _>>());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..2 {
            let (stop, served, url) = (stop.clone(), served.clone(), url.clone());
            tasks.spawn(async move {
                let client = Client::http1();
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(reply) = client.get(&url).await
                        && let Some(count) = reply.backend().and_then(|b| served.get(b))
                    {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        Load {
            stop,
            served,
            tasks,
        }
    }

    fn served_by(&self, name: &str) -> u64 {
        self.served[name].load(Ordering::SeqCst)
    }

    async fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        while self.tasks.join_next().await.is_some() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_backend_returns_from_ejection_on_its_active_checks() {
    let mut web = Backend::start_many("web", 3).await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(PoolSpec::new("web", &[&web[0], &web[1], &web[2]]).extra(POOL));
    let mut fx = ProxyFixture::start(&config, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap();
    let names = ["web-1", "web-2", "web-3"];
    let load = Load::start(fx.url("edge", "/"), &names);
    assert!(eventually(STEP, || names.iter().all(|n| load.served_by(n) > 0)).await);

    fx.clear_events();
    let dead = web[1].addr();
    web[1].stop().await;
    let event = fx
        .await_event(|e| is_change(e, dead, HealthChange::Ejected), STEP)
        .await
        .unwrap();
    let ServerEvent::BackendHealth { reason, .. } = event else {
        unreachable!()
    };
    assert!(reason.contains("for 60s"), "{reason}");

    web[1].restart().await.unwrap();
    let served = load.served_by("web-2");
    // STEP (10 s) is far less than the 60 s ejection: only the checks can
    // end it within this wait.
    let event = fx
        .await_event(|e| is_change(e, dead, HealthChange::Returned), STEP)
        .await
        .unwrap();
    let ServerEvent::BackendHealth { reason, .. } = event else {
        unreachable!()
    };
    assert_eq!(
        reason,
        "2 passing health checks in a row since the ejection"
    );
    assert!(
        eventually(STEP, || load.served_by("web-2") >= served + 20).await,
        "web-2 serves again"
    );
    load.finish().await;
    fx.shutdown().await.unwrap();
}
