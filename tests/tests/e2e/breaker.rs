//! The policy circuit breaker: a policy that keeps failing is tripped and
//! its listener's requests go to `on_error` without calling it, while a
//! listener with a healthy policy next to it keeps being served by its own
//! policy; after the back-off one request probes it (a failure trips it
//! again, for longer); a replaced module starts untripped.
//!
//! "Without calling it" is observed through events, not timing: every
//! request that calls a failing policy is announced as a `DecisionFailed`,
//! so once the policy is tripped the only such events are those of probes,
//! each followed by a `PolicyTripped` for the next, longer back-off.

use http::StatusCode;
use tokio::time::Instant;
use wasmroute::ServerEvent;
use wasmroute::policy::{FIRST_BACK_OFF, TRIP_AFTER};
use wasmroute_e2e::wait::POLL;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, guests,
};

/// Requests sent to each listener once the failing policy is tripped.
const AFTER_TRIP: usize = 20;
/// What the `echo-request` guest answers to `GET /` over plain HTTP.
const ECHOED: &str = "tls=false\nsni=-\nmethod=GET\npath=/\nclient=127.0.0.1\nattempt=0\n";

/// Listener `failing` runs policy `failing` (the given guest) with
/// `on_error = "fallback"` over pool `spare` (one backend); listener
/// `healthy` runs `echo-request`, which answers every request itself.
struct Setup {
    fx: ProxyFixture,
    spare: Backend,
}

async fn setup(failing: &[u8]) -> Setup {
    let spare = Backend::start("spare-1").await.unwrap();
    let config = ConfigBuilder::new()
        .decision_timeout("50ms")
        .listener(ListenerSpec::new("failing", "failing", &["spare"]).on_error("fallback"))
        .listener(ListenerSpec::new("healthy", "echo-request", &["spare"]))
        .pool(PoolSpec::new("spare", &[&spare]));
    let policies = [("failing", failing), ("echo-request", guests::ECHO_REQUEST)];
    let fx = ProxyFixture::start(&config, &policies).await.unwrap();
    Setup { fx, spare }
}

/// Events of one listener, by kind.
#[derive(Debug, Default)]
struct Tally {
    failed: usize,
    tripped: Vec<ServerEvent>,
}

fn tally(events: &[ServerEvent], listener: &str) -> Tally {
    let mut tally = Tally::default();
    for event in events {
        match event {
            ServerEvent::DecisionFailed { listener: l, .. } if l == listener => tally.failed += 1,
            ServerEvent::PolicyTripped { listener: l, .. } if l == listener => {
                tally.tripped.push(event.clone())
            }
            _ => {}
        }
    }
    tally
}

/// A request to `failing`, which the fallback serves from `spare-1`.
async fn falls_back(fx: &ProxyFixture, what: &str) {
    let reply = Client::http1().get(&fx.url("failing", "/")).await.unwrap();
    assert_eq!(
        (reply.status, reply.backend()),
        (StatusCode::OK, Some("spare-1")),
        "{what}: {}",
        reply.text()
    );
}

/// A request to `healthy`, answered by its policy.
async fn served_by_its_policy(fx: &ProxyFixture, what: &str) {
    let reply = Client::http1().get(&fx.url("healthy", "/")).await.unwrap();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, ECHOED),
        "{what}"
    );
}

/// Sends requests to `failing` one at a time until its policy is tripped;
/// returns the trip event. Asserts it took [`TRIP_AFTER`] failures.
async fn trip(fx: &mut ProxyFixture, reason: &str) -> ServerEvent {
    let mut events = Vec::new();
    for i in 0..TRIP_AFTER as usize * 4 {
        falls_back(fx, &format!("failing request {i} before the trip")).await;
        events.extend(fx.pending_events());
        let seen = tally(&events, "failing");
        if let Some(event) = seen.tripped.first() {
            assert_eq!(seen.failed, TRIP_AFTER as usize, "failures that tripped it");
            match event {
                ServerEvent::PolicyTripped {
                    policy,
                    back_off,
                    reason: why,
                    ..
                } => {
                    assert_eq!(policy, "failing");
                    assert_eq!(*back_off, FIRST_BACK_OFF);
                    assert!(why.contains(reason), "trip reason {why:?} lacks {reason:?}");
                }
                other => unreachable!("{other:?}"),
            }
            return event.clone();
        }
    }
    panic!("never tripped; events: {events:#?}");
}

/// Trips `failing` (which fails with `reason`), then sends requests to both
/// listeners: `failing`'s are served by the fallback without calling the
/// policy (no failure announced but those of probes, each of which trips
/// it again), `healthy`'s by its own policy.
async fn tripped_policy_is_not_called(guest: &[u8], reason: &str) {
    let Setup { mut fx, spare } = setup(guest).await;
    trip(&mut fx, reason).await;
    let served_before = spare.served();
    for i in 0..AFTER_TRIP {
        falls_back(&fx, &format!("tripped request {i}")).await;
        served_by_its_policy(&fx, &format!("healthy request {i}")).await;
    }
    let events = fx.pending_events();
    let failing = tally(&events, "failing");
    assert_eq!(
        failing.failed,
        failing.tripped.len(),
        "a tripped policy is called only by probes, each failing and tripping it again: \
         {events:#?}"
    );
    assert!(failing.failed < AFTER_TRIP, "{events:#?}");
    let healthy = tally(&events, "healthy");
    assert_eq!(
        (healthy.failed, healthy.tripped.len()),
        (0, 0),
        "{events:#?}"
    );
    assert_eq!(spare.served() - served_before, AFTER_TRIP as u64);
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_policy_is_tripped_and_not_called() {
    tripped_policy_is_not_called(guests::LOOPING, "timed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_policy_is_tripped_and_not_called() {
    tripped_policy_is_not_called(guests::TRAPPING, "trapped").await;
}

/// After the back-off one request probes the policy; it traps again, and
/// the policy is tripped for twice as long, having been called once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_trips_it_again_for_longer() {
    let Setup {
        mut fx,
        spare: _spare,
    } = setup(guests::TRAPPING).await;
    trip(&mut fx, "trapped").await;
    // Requests until the probe's failure trips it again (polling as
    // `eventually` does: the back-off's end is no event to await).
    let deadline = Instant::now() + FIRST_BACK_OFF + STEP;
    let mut events = Vec::new();
    while tally(&events, "failing").tripped.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no second trip; events: {events:#?}"
        );
        tokio::time::sleep(POLL).await;
        falls_back(&fx, "request during the back-off").await;
        events.extend(fx.pending_events());
    }
    let failing = tally(&events, "failing");
    assert_eq!(failing.failed, 1, "one probe: {events:#?}");
    assert!(
        matches!(
            &failing.tripped[0],
            ServerEvent::PolicyTripped { back_off, .. } if *back_off == FIRST_BACK_OFF * 2
        ),
        "{events:#?}"
    );
    fx.shutdown().await.unwrap();
}

/// The breaker belongs to the module bound to the listener: a fixed module
/// dropped in place of a tripped one serves at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_module_is_called_again() {
    let Setup { mut fx, spare } = setup(guests::TRAPPING).await;
    trip(&mut fx, "trapped").await;
    fx.write_policy("failing", guests::ECHO_REQUEST).unwrap();
    fx.await_event(
        |e| matches!(e, ServerEvent::PolicyLoaded { policy, .. } if policy == "failing"),
        STEP,
    )
    .await
    .unwrap();
    let served_before = spare.served();
    for i in 0..5 {
        let reply = Client::http1().get(&fx.url("failing", "/")).await.unwrap();
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, ECHOED),
            "request {i} after the swap"
        );
    }
    assert_eq!(spare.served(), served_before, "answered by the new module");
    let events = fx.pending_events();
    let failing = tally(&events, "failing");
    assert_eq!(
        (failing.failed, failing.tripped.len()),
        (0, 0),
        "{events:#?}"
    );
    fx.shutdown().await.unwrap();
}
