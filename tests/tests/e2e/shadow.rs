//! Shadow decisions over real sockets: listener `edge` runs the shipped
//! `content-router` over pools `web` and `video` (one backend each) with a
//! shadow candidate `candidate` (the shipped `round-robin`, which always
//! picks the default pool `web`), so a `/video/..` request diverges and
//! any other agrees. The counts on `/metrics`, the divergence list at
//! `/shadow/edge`, `/status`, a trapping candidate under load (no request
//! fails), `sample = 0.0`, and a hot reload of the candidate's file.

use std::sync::Arc;

use http::StatusCode;
use tokio::task::JoinSet;
use wasmroute::ServerEvent;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, bundled, guests,
    sample,
};

use super::admin::{admin_get, admin_post, scrape, status_json};

/// The proxy and its two backends.
struct Setup {
    fx: ProxyFixture,
    web: Backend,
    video: Backend,
}

/// `edge` as above with `[listeners.shadow]` keys `shadow` (after
/// `policy = "candidate"`), the candidate's module `candidate`; and
/// `plain`, a listener without a shadow.
async fn setup(shadow: &str, candidate: &[u8]) -> Setup {
    let web = Backend::start("web-1").await.unwrap();
    let video = Backend::start("video-1").await.unwrap();
    let table = format!("[listeners.shadow]\npolicy = \"candidate\"\n{shadow}");
    let config = ConfigBuilder::new()
        .admin("")
        .listener(ListenerSpec::new("edge", "content-router", &["web", "video"]).extra(&table))
        .listener(ListenerSpec::new(
            "plain",
            "content-router",
            &["web", "video"],
        ))
        .pool(PoolSpec::new("web", &[&web]))
        .pool(PoolSpec::new("video", &[&video]));
    let policies = [
        ("content-router", bundled("content-router")),
        ("candidate", candidate),
    ];
    let fx = ProxyFixture::start(&config, &policies).await.unwrap();
    Setup { fx, web, video }
}

/// Sends `GET path` to `edge`; asserts it was served by `backend`.
async fn served(fx: &ProxyFixture, path: &str, backend: &str) {
    let reply = Client::http1().get(&fx.url("edge", path)).await.unwrap();
    assert_eq!(
        (reply.status, reply.backend()),
        (StatusCode::OK, Some(backend)),
        "{path}: {}",
        reply.text()
    );
}

/// The `same`, `different` and `error` counts of `edge`'s candidate.
async fn outcomes(fx: &ProxyFixture) -> [Option<f64>; 3] {
    let text = scrape(fx).await;
    ["same", "different", "error"].map(|outcome| {
        let labels = [
            ("listener", "edge"),
            ("policy", "candidate"),
            ("outcome", outcome),
        ];
        sample(&text, "wasmroute_shadow_decisions_total", &labels)
    })
}

async fn divergences(fx: &ProxyFixture) -> serde_json::Value {
    let reply = admin_get(fx, "/shadow/edge").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

#[tokio::test]
async fn known_traffic_counts_same_and_different() {
    let Setup {
        fx,
        web: _web,
        video: _video,
    } = setup("", bundled("round-robin")).await;
    for i in 0..7 {
        served(&fx, &format!("/video/{i}"), "video-1").await;
    }
    for i in 0..5 {
        served(&fx, &format!("/page/{i}"), "web-1").await;
    }
    assert_eq!(outcomes(&fx).await, [Some(5.0), Some(7.0), Some(0.0)]);
    let text = scrape(&fx).await;
    let plain = [
        ("listener", "plain"),
        ("policy", "candidate"),
        ("outcome", "same"),
    ];
    assert_eq!(
        sample(&text, "wasmroute_shadow_decisions_total", &plain),
        None,
        "a listener without a shadow has no samples"
    );
    // The live policy's own decisions are not mixed with the candidate's.
    let live = [("listener", "edge"), ("policy", "content-router")];
    assert_eq!(
        sample(&text, "wasmroute_policy_decisions_total", &live),
        Some(12.0),
        "{text}"
    );
}

#[tokio::test]
async fn the_latest_hundred_divergences_are_listed_newest_first() {
    let Setup { fx, web, video } = setup("sample = 1.0", bundled("round-robin")).await;
    served(&fx, "/agreed", "web-1").await;
    for i in 0..120 {
        served(&fx, &format!("/video/{i}"), "video-1").await;
    }
    let document = divergences(&fx).await;
    assert_eq!(document["listener"], "edge");
    assert_eq!(document["policy"], "candidate");
    assert_eq!(document["sample"], 1.0);
    let list = document["divergences"].as_array().unwrap();
    assert_eq!(list.len(), 100, "at most 100 kept");
    let host = fx.addr("edge").to_string();
    for (entry, i) in list.iter().zip((20..120).rev()) {
        assert_eq!(entry["path"], format!("/video/{i}"), "newest first");
        assert_eq!(entry["method"], "GET");
        assert_eq!(entry["host"], host.as_str());
        let live = serde_json::json!({ "pool": "video", "backend": video.addr().to_string() });
        let candidate = serde_json::json!({ "pool": "web", "backend": web.addr().to_string() });
        assert_eq!(entry["live"], live);
        assert_eq!(entry["candidate"], candidate);
        let time = entry["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    }
    assert_eq!(outcomes(&fx).await, [Some(1.0), Some(120.0), Some(0.0)]);
    let status = status_json(&fx).await;
    let edge = &status["listeners"][0];
    assert_eq!(edge["shadow"]["policy"], "candidate");
    assert_eq!(edge["shadow"]["sample"], 1.0);
    assert_eq!(edge["shadow"]["sha256"].as_str().map(str::len), Some(64));
    assert!(edge["shadow"]["version"].is_u64(), "{edge}");
    assert_eq!(status["listeners"][1]["shadow"], serde_json::Value::Null);
}

#[tokio::test]
async fn unknown_or_unshadowed_listeners_are_404_and_other_methods_405() {
    let Setup {
        fx,
        web: _web,
        video: _video,
    } = setup("", bundled("round-robin")).await;
    for path in ["/shadow/plain", "/shadow/nope"] {
        let reply = admin_get(&fx, path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }
    let reply = admin_post(&fx, "/shadow/edge", &[]).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["allow"], "GET");
}

/// The `trapping` guest as the candidate, under a concurrent load: every
/// request is served by the live policy, and every one counts as an
/// `error` (trapped, or not called once the candidate is tripped).
#[tokio::test]
async fn a_trapping_candidate_never_fails_a_request() {
    const CLIENTS: usize = 16;
    const EACH: usize = 25;
    let Setup {
        fx,
        web: _web,
        video: _video,
    } = setup("", guests::TRAPPING).await;
    let fx = Arc::new(fx);
    let mut load = JoinSet::new();
    for client in 0..CLIENTS {
        let fx = Arc::clone(&fx);
        load.spawn(async move {
            let http = Client::http1();
            let mut failed = Vec::new();
            for i in 0..EACH {
                let (path, backend) = match i % 2 {
                    0 => (format!("/video/{client}/{i}"), "video-1"),
                    _ => (format!("/page/{client}/{i}"), "web-1"),
                };
                let reply = http.get(&fx.url("edge", &path)).await;
                match reply {
                    Ok(reply)
                        if reply.status == StatusCode::OK && reply.backend() == Some(backend) => {}
                    other => failed.push(format!("{path}: {other:?}")),
                }
            }
            failed
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = tokio::time::timeout(STEP * 3, load.join_next())
        .await
        .unwrap()
    {
        failed.extend(done.unwrap());
    }
    let total = (CLIENTS * EACH) as f64;
    assert!(
        failed.is_empty(),
        "{} of {total} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(outcomes(&fx).await, [Some(0.0), Some(0.0), Some(total)]);
    let document = divergences(&fx).await;
    let newest = &document["divergences"][0];
    assert!(newest["candidate"]["error"].is_string(), "{newest}");
}

#[tokio::test]
async fn a_zero_sample_compares_nothing() {
    let Setup {
        fx,
        web: _web,
        video: _video,
    } = setup("sample = 0.0", bundled("round-robin")).await;
    for i in 0..20 {
        served(&fx, &format!("/video/{i}"), "video-1").await;
        served(&fx, &format!("/page/{i}"), "web-1").await;
    }
    assert_eq!(outcomes(&fx).await, [Some(0.0), Some(0.0), Some(0.0)]);
    assert_eq!(divergences(&fx).await["divergences"], serde_json::json!([]));
}

/// Overwriting the candidate's file with `content-router` (the live
/// module) swaps the candidate: `/video/..` turns from different to same.
#[tokio::test]
async fn a_reloaded_candidate_changes_its_answers() {
    let Setup {
        mut fx,
        web: _web,
        video: _video,
    } = setup("", bundled("round-robin")).await;
    served(&fx, "/video/before", "video-1").await;
    assert_eq!(outcomes(&fx).await, [Some(0.0), Some(1.0), Some(0.0)]);
    fx.clear_events();
    fx.write_policy("candidate", bundled("content-router"))
        .unwrap();
    let loaded = |e: &ServerEvent| matches!(e, ServerEvent::PolicyLoaded { policy, .. } if policy == "candidate");
    fx.await_event(loaded, STEP).await.unwrap();
    for i in 0..4 {
        served(&fx, &format!("/video/after/{i}"), "video-1").await;
    }
    assert_eq!(
        outcomes(&fx).await,
        [Some(4.0), Some(1.0), Some(0.0)],
        "counts are kept across the candidate's reload"
    );
    // A broken candidate file is refused; the previous candidate stays.
    fx.clear_events();
    fx.write_policy("candidate", b"not a module").unwrap();
    let rejected = |e: &ServerEvent| matches!(e, ServerEvent::PolicyRejected { .. });
    fx.await_event(rejected, STEP).await.unwrap();
    served(&fx, "/video/still", "video-1").await;
    assert_eq!(outcomes(&fx).await, [Some(5.0), Some(1.0), Some(0.0)]);
}

/// A candidate whose `init` refuses the listener does not stop it from
/// serving: every sampled request counts as `error`, and `/shadow/edge`
/// and `/status` say why.
#[tokio::test]
async fn a_candidate_that_cannot_init_leaves_the_listener_serving() {
    let keys = "[listeners.shadow.policy_config]\nnot_a_content_router_key = 1";
    let Setup {
        fx,
        web: _web,
        video: _video,
    } = setup(keys, bundled("content-router")).await;
    for i in 0..3 {
        served(&fx, &format!("/video/{i}"), "video-1").await;
    }
    assert_eq!(outcomes(&fx).await, [Some(0.0), Some(0.0), Some(3.0)]);
    let document = divergences(&fx).await;
    let reason = document["error"].as_str().unwrap_or_default();
    assert!(reason.contains("init refused the config"), "{document}");
    assert_eq!(document["divergences"][0]["candidate"]["error"], reason);
    let status = status_json(&fx).await;
    assert_eq!(status["listeners"][0]["shadow"]["error"], reason);
}
