//! Config reloads: an invalid edit is refused (by `reload()` and by the
//! file watcher) while the old config keeps serving; a valid edit is
//! applied.

use std::net::SocketAddr;

use http::StatusCode;
use wasmroute::ServerEvent;
use wasmroute_e2e::{Backend, Client, ProxyFixture, STEP, bundled};

/// The config: listener `edge` (round-robin over `pools`, with
/// `listener_extra` lines) and pool `web` of `backends`.
fn config(backends: &[SocketAddr], pools: &str, listener_extra: &str) -> String {
    let backends: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        r#"[policies]
dir = "policies"
decision_timeout = "250ms"

[[listeners]]
name = "edge"
address = "127.0.0.1:0"
protocol = "http"
policy = "round-robin"
pools = {pools}
{listener_extra}

[[pools]]
name = "web"
backends = [{}]
"#,
        backends.join(", ")
    )
}

/// Sends `n` requests and returns how many each backend answered (in the
/// order of `backends`), asserting every request succeeded.
async fn spread(fx: &ProxyFixture, backends: &[&Backend], n: usize) -> Vec<usize> {
    let client = Client::http1();
    let mut counts = vec![0; backends.len()];
    for _ in 0..n {
        let reply = client.get(&fx.url("edge", "/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let at = backends
            .iter()
            .position(|b| Some(b.name()) == reply.backend())
            .unwrap_or_else(|| panic!("answered by {:?}", reply.backend()));
        counts[at] += 1;
    }
    counts
}

/// Two backends, and the proxy serving the first alone with round robin:
/// the start of every reload test (which then adds the second).
async fn one_of_two_backends_served() -> (Backend, Backend, ProxyFixture) {
    let (b1, b2) = (
        Backend::start("web-1").await.unwrap(),
        Backend::start("web-2").await.unwrap(),
    );
    let fx = ProxyFixture::start_with_text(
        &config(&[b1.addr()], r#"["web"]"#, ""),
        &[("round-robin", bundled("round-robin"))],
    )
    .await
    .unwrap();
    (b1, b2, fx)
}

fn rejected(e: &ServerEvent) -> bool {
    matches!(e, ServerEvent::ConfigRejected { .. })
}

fn reloaded(e: &ServerEvent) -> bool {
    matches!(e, ServerEvent::ConfigReloaded)
}

fn invalid_edits(a: SocketAddr) -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "unknown key",
            "colour",
            config(&[a], r#"["web"]"#, r#"colour = "blue""#),
        ),
        (
            "missing pool",
            "pools",
            config(&[a], r#"["web", "missing"]"#, ""),
        ),
        ("toml syntax", "", config(&[a], r#"["web""#, "")),
        (
            "zero weight",
            "weight",
            config(&[a], r#"["web"]"#, "").replace("\" }]", "\", weight = 0 }]"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_edits_are_refused_by_reload_and_a_valid_edit_is_applied() {
    let (b1, b2, mut fx) = one_of_two_backends_served().await;
    assert_eq!(spread(&fx, &[&b1], 3).await, [3]);

    for (label, key, text) in invalid_edits(b1.addr()) {
        fx.clear_events();
        fx.rewrite_config(&text).unwrap();
        let err = match fx.reload().await {
            Ok(()) => panic!("{label}: reload accepted an invalid config:\n{text}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(key),
            "{label}: the error does not name {key:?}: {err}"
        );
        fx.await_event(rejected, STEP)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:#}"));
        // The old config keeps serving.
        assert_eq!(spread(&fx, &[&b1], 3).await, [3], "{label}");
    }

    // A valid edit: a second backend.
    fx.clear_events();
    fx.rewrite_config(&config(&[b1.addr(), b2.addr()], r#"["web"]"#, ""))
        .unwrap();
    fx.reload().await.expect("a valid config is accepted");
    fx.await_event(reloaded, STEP).await.unwrap();
    let counts = spread(&fx, &[&b1, &b2], 20).await;
    assert!(
        counts.iter().all(|&n| (8..=12).contains(&n)),
        "round robin over both: {counts:?}"
    );
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_watcher_refuses_invalid_and_applies_valid_edits() {
    let (b1, b2, mut fx) = one_of_two_backends_served().await;

    fx.clear_events();
    fx.rewrite_config(&config(&[b1.addr()], r#"["web", "missing"]"#, ""))
        .unwrap();
    let event = fx
        .await_event(|e| rejected(e) || reloaded(e), STEP)
        .await
        .unwrap();
    assert!(rejected(&event), "an invalid edit was applied: {event:?}");
    assert_eq!(spread(&fx, &[&b1], 3).await, [3]);

    fx.clear_events();
    fx.rewrite_config(&config(&[b1.addr(), b2.addr()], r#"["web"]"#, ""))
        .unwrap();
    // (A late duplicate rejection of the previous edit may come first.)
    fx.await_event(reloaded, STEP)
        .await
        .expect("the valid edit is applied");
    let counts = spread(&fx, &[&b1, &b2], 20).await;
    assert!(
        counts.iter().all(|&n| (8..=12).contains(&n)),
        "round robin over both: {counts:?}"
    );
    fx.shutdown().await.unwrap();
}

/// A listener's module file deleted while it serves: the last good
/// version keeps serving, and a later reload still applies the rest of
/// the config (here a second backend) instead of being refused with
/// `no module at ...`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_module_does_not_block_later_reloads() {
    let (b1, b2, mut fx) = one_of_two_backends_served().await;
    std::fs::remove_file(fx.dir().policy_path("round-robin")).unwrap();
    assert_eq!(spread(&fx, &[&b1], 3).await, [3]);

    fx.clear_events();
    fx.rewrite_config(&config(&[b1.addr(), b2.addr()], r#"["web"]"#, ""))
        .unwrap();
    fx.reload()
        .await
        .expect("a reload with the module file gone still applies");
    fx.await_event(reloaded, STEP).await.unwrap();
    let counts = spread(&fx, &[&b1, &b2], 20).await;
    assert!(
        counts.iter().all(|&n| (8..=12).contains(&n)),
        "the new pool applied, on the kept module: {counts:?}"
    );

    // A listener that names a policy with no module and none serving is
    // still refused.
    fx.rewrite_config(
        &config(&[b1.addr()], r#"["web"]"#, "")
            .replace("policy = \"round-robin\"", "policy = \"never-existed\""),
    )
    .unwrap();
    let err = fx.reload().await.expect_err("no module, none serving");
    assert!(format!("{err:#}").contains("no module at"), "{err:#}");
    fx.shutdown().await.unwrap();
}
