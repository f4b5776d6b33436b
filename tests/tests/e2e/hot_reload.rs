//! Hot reload of policy modules from the policies folder: a swap under
//! continuous load loses nothing, in-place writes are picked up, invalid
//! modules are refused while the old version keeps serving, and deleting a
//! module in use keeps its last good version.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use wasmroute::ServerEvent;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled,
};

struct Setup {
    fx: ProxyFixture,
    _web: Vec<Backend>,
    _video: Backend,
}

/// Listener `edge` runs policy `active` (initially round-robin) over pools
/// [web (2 backends), video (1)]; listener `side` runs policy `side`
/// (round-robin) over the same pools.
async fn setup() -> Setup {
    let web = Backend::start_many("web", 2).await.unwrap();
    let video = Backend::start("video-1").await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "active", &["web", "video"]))
        .listener(ListenerSpec::new("side", "side", &["web", "video"]))
        .pool(PoolSpec::new("web", &[&web[0], &web[1]]))
        .pool(PoolSpec::new("video", &[&video]));
    let policies = [
        ("active", bundled("round-robin")),
        ("side", bundled("round-robin")),
    ];
    let fx = ProxyFixture::start(&config, &policies).await.unwrap();
    Setup {
        fx,
        _web: web,
        _video: video,
    }
}

fn loaded(policy: &'static str) -> impl FnMut(&ServerEvent) -> bool {
    move |e| matches!(e, ServerEvent::PolicyLoaded { policy: p, .. } if p == policy)
}

/// Where `path` lands now; asserts success.
async fn lands_on(fx: &ProxyFixture, listener: &str, path: &str) -> String {
    let reply = Client::http1().get(&fx.url(listener, path)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    reply.backend().expect("x-backend").to_owned()
}

#[derive(Debug)]
struct Outcome {
    path: &'static str,
    started: Instant,
    result: Result<String, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_fails_no_request() {
    const CLIENTS: usize = 4;
    const BEFORE: usize = 100;
    const AFTER: usize = 200;
    let Setup {
        mut fx,
        _web,
        _video,
    } = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        let (url, stop, tx) = (fx.url("edge", ""), stop.clone(), tx.clone());
        clients.spawn(async move {
            let client = Client::http1();
            let mut n = c;
            while !stop.load(Ordering::Relaxed) {
                let path = if n % 2 == 0 { "/video/clip" } else { "/" };
                n += 1;
                let started = Instant::now();
                let result = match client.get(&format!("{url}{path}")).await {
                    Ok(r) if r.status == StatusCode::OK => {
                        Ok(r.backend().unwrap_or("?").to_owned())
                    }
                    Ok(r) => Err(format!("{} {}", r.status, r.text())),
                    Err(e) => Err(format!("{e:#}")),
                };
                if tx
                    .send(Outcome {
                        path,
                        started,
                        result,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut outcomes = Vec::new();
    while outcomes.len() < BEFORE {
        let outcome = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("load running")
            .unwrap();
        outcomes.push(outcome);
    }

    fx.clear_events();
    let written_at = Instant::now();
    fx.write_policy("active", bundled("content-router"))
        .unwrap();
    let event = fx.await_event(loaded("active"), STEP).await.unwrap();
    let swapped_at = Instant::now();

    let mut after = 0;
    while after < AFTER {
        let outcome = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("load running")
            .unwrap();
        after += usize::from(outcome.started > swapped_at);
        outcomes.push(outcome);
    }
    stop.store(true, Ordering::Relaxed);
    let _ =
        tokio::time::timeout(STEP, async { while clients.join_next().await.is_some() {} }).await;
    while let Ok(outcome) = rx.try_recv() {
        outcomes.push(outcome);
    }

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the swap ({event:?}); first: {:#?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
    // Every request started before the write went to pool 0 (round-robin);
    // every request started after the event was routed by content-router.
    let mut misrouted = Vec::new();
    for o in &outcomes {
        let backend = o.result.as_deref().unwrap();
        let expected = if o.started < written_at {
            "web"
        } else if o.started > swapped_at {
            if o.path == "/video/clip" {
                "video"
            } else {
                "web"
            }
        } else {
            continue;
        };
        if !backend.starts_with(expected) {
            let after = o.started.checked_duration_since(swapped_at);
            misrouted.push(format!(
                "{} -> {backend} (expected {expected}; started {after:?} after the event)",
                o.path
            ));
        }
    }
    let later = fx.pending_events();
    assert!(
        misrouted.is_empty(),
        "{} requests misrouted around the swap ({event:?}, later events {later:?}): {misrouted:#?}",
        misrouted.len()
    );
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_write_is_picked_up() {
    let Setup {
        mut fx,
        _web,
        _video,
    } = setup().await;
    assert!(lands_on(&fx, "edge", "/video/x").await.starts_with("web"));
    fx.clear_events();
    fx.write_policy_in_place("active", bundled("content-router"))
        .unwrap();
    let event = fx
        .await_event(
            |e| {
                matches!(e, ServerEvent::PolicyLoaded { policy, .. } if policy == "active")
                    || matches!(e, ServerEvent::PolicyRejected { .. })
            },
            STEP,
        )
        .await
        .unwrap();
    assert!(
        matches!(event, ServerEvent::PolicyLoaded { .. }),
        "in-place write: {event:?}"
    );
    assert_eq!(lands_on(&fx, "edge", "/video/x").await, "video-1");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_modules_are_rejected_and_the_old_version_keeps_serving() {
    let Setup {
        mut fx,
        _web,
        _video,
    } = setup().await;
    let router = bundled("content-router");
    let mut wasm_header_then_junk = b"\0asm\x01\0\0\0".to_vec();
    wasm_header_then_junk.extend_from_slice(&[0xff; 64]);
    let cases: [(&str, &[u8]); 4] = [
        ("garbage", b"this is not a WebAssembly module"),
        ("header then junk", &wasm_header_then_junk),
        ("truncated", &router[..router.len() / 2]),
        ("empty", b""),
    ];
    for (label, bytes) in cases {
        fx.clear_events();
        fx.write_policy("active", bytes).unwrap();
        let event = fx
            .await_event(
                |e| {
                    matches!(
                        e,
                        ServerEvent::PolicyRejected { .. } | ServerEvent::PolicyLoaded { .. }
                    )
                },
                STEP,
            )
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:#}"));
        match &event {
            ServerEvent::PolicyRejected { file, reason } => {
                assert_eq!(
                    file.file_name(),
                    Some(Path::new("active.wasm").as_os_str()),
                    "{label}: {event:?}"
                );
                assert!(!reason.trim().is_empty(), "{label}: empty reason");
            }
            other => panic!("{label}: expected PolicyRejected, got {other:?}"),
        }
        // The old version (round-robin: pool 0 only) keeps serving.
        for _ in 0..5 {
            let backend = lands_on(&fx, "edge", "/video/x").await;
            assert!(
                backend.starts_with("web"),
                "{label}: {backend} answered, old policy not serving"
            );
        }
        let late = fx.pending_events();
        assert!(
            !late
                .iter()
                .any(|e| matches!(e, ServerEvent::PolicyLoaded { .. })),
            "{label}: a policy was loaded after the rejection: {late:?}"
        );
    }
    // The watcher still works after the rejections.
    fx.clear_events();
    fx.write_policy("active", router).unwrap();
    fx.await_event(loaded("active"), STEP).await.unwrap();
    assert_eq!(lands_on(&fx, "edge", "/video/x").await, "video-1");
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_module_in_use_keeps_the_last_good_version() {
    let Setup {
        mut fx,
        _web,
        _video,
    } = setup().await;
    fx.clear_events();
    fx.write_policy("active", bundled("content-router"))
        .unwrap();
    fx.await_event(loaded("active"), STEP).await.unwrap();
    std::fs::remove_file(fx.dir().policy_path("active")).unwrap();
    // A change to another module after the deletion: once it is loaded, the
    // watcher has seen the deletion too.
    fx.write_policy("side", bundled("content-router")).unwrap();
    fx.await_event(loaded("side"), STEP).await.unwrap();
    assert_eq!(lands_on(&fx, "side", "/video/x").await, "video-1");
    for _ in 0..5 {
        assert_eq!(
            lands_on(&fx, "edge", "/video/x").await,
            "video-1",
            "the deleted module's last version"
        );
    }
    fx.shutdown().await.unwrap();
}
