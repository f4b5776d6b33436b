//! Per-worker-thread policy instances and the decision call.
//!
//! Each worker thread keeps its own instances in a thread-local list keyed
//! by [`BoundPolicy::id`]: no lock, no sharing, and the store (with the
//! guest's memory, so its state such as a round-robin cursor) is reused for
//! every decision. A new policy version has a new id; the first decision
//! that meets it on a worker instantiates it there and sweeps instances of
//! versions nobody holds any more. An instance that trapped is dropped.
//!
//! Around the call, the policy's breaker ([`super::breaker`]) decides
//! whether the guest is called at all, and counts how the call went.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::Instant;

use wasmtime::Trap;
use wasmtime::component::Resource;

use wasmtime::Store;

use super::bindings::Bindings;
use super::breaker::{Admission, Trip};
use super::host::exports::Decision;
use super::host::{ConnectionDecision, HostState};
use super::ticker;
use super::{BoundPolicy, ConnectionView, DecisionError, PolicyInstance, RequestView};
use crate::metrics::DecisionErrorKind;

struct WorkerSlot {
    policy_id: u64,
    policy: Weak<BoundPolicy>,
    instance: PolicyInstance,
}

thread_local! {
    static INSTANCES: RefCell<Vec<WorkerSlot>> = const { RefCell::new(Vec::new()) };
}

/// Asks `policy` what to do with the request in `view`. The view is moved
/// into the store for the call and handed back with the result, so the
/// request head is never copied. The decision is checked against the
/// listener's pools before it is returned. A tripped policy is not called
/// ([`DecisionError::Tripped`], see [`super::breaker`]).
pub fn decide(
    policy: &Arc<BoundPolicy>,
    view: RequestView,
) -> (RequestView, Result<Decision, DecisionError>) {
    decide_since(policy, view, Instant::now())
}

/// [`decide`] for a caller that has just read the clock: `started` is
/// taken as the start of the decision, which saves a clock read per
/// decision (the pipeline passes the start of the request).
pub fn decide_since(
    policy: &Arc<BoundPolicy>,
    view: RequestView,
    started: Instant,
) -> (RequestView, Result<Decision, DecisionError>) {
    let (mut view, result, ended) = guarded(policy, view, started, call_decide, check);
    if let Some(ended) = ended {
        view.decision_time += ended.saturating_duration_since(started);
        // The one clock read the decision metrics need; the attempt that
        // follows reuses it as its own start (`decided_at`).
        view.decided_at = Some(ended);
    }
    (view, result)
}

/// [`decide`] for a shadow candidate: the same breaker, deadline, checks
/// and metrics (the candidate's own), but the view's `decision_time`
/// stays as the live decision left it, so the candidate never counts in
/// the request's decision time; `decided_at`, when the live decision set
/// it, moves to the end of this call, where the attempt starts, so the
/// upstream timeouts are not shortened by the candidate either.
pub fn decide_aside(
    policy: &Arc<BoundPolicy>,
    view: RequestView,
) -> (RequestView, Result<Decision, DecisionError>) {
    let (mut view, result, ended) = guarded(policy, view, Instant::now(), call_decide, check);
    if ended.is_some() && view.decided_at.is_some() {
        view.decided_at = ended;
    }
    (view, result)
}

/// Asks `policy` where the TCP connection in `view` goes, as [`decide`]
/// asks about a request: the same breaker, metrics and checks.
pub fn decide_connection(
    policy: &Arc<BoundPolicy>,
    view: ConnectionView,
) -> (ConnectionView, Result<ConnectionDecision, DecisionError>) {
    let started = Instant::now();
    let (mut view, result, ended) = guarded(
        policy,
        view,
        started,
        call_decide_connection,
        check_connection,
    );
    if let Some(ended) = ended {
        view.decision_time += ended.saturating_duration_since(started);
    }
    (view, result)
}

/// A view handed back with the outcome of its decision.
type Decided<V, D> = (V, Result<D, DecisionError>);

/// One decision behind the policy's breaker, timed into its metrics and
/// checked by `check`; the end of the call when the guest was called.
fn guarded<V, D>(
    policy: &Arc<BoundPolicy>,
    view: V,
    started: Instant,
    call: fn(&Arc<BoundPolicy>, V) -> Decided<V, D>,
    check: fn(&BoundPolicy, D) -> Result<D, DecisionError>,
) -> (V, Result<D, DecisionError>, Option<Instant>) {
    let admission = policy.breaker.admit();
    if admission == Admission::Open {
        policy.metrics.count_error(DecisionErrorKind::Tripped);
        return (view, Err(DecisionError::Tripped), None);
    }
    let (view, result) = call(policy, view);
    let ended = Instant::now();
    policy
        .metrics
        .duration
        .observe(ended.saturating_duration_since(started));
    let result = match result {
        Ok(decision) => {
            if policy.breaker.succeeded(admission) {
                report_closed(policy);
            }
            check(policy, decision)
        }
        Err(error) => match policy.breaker.failed(admission) {
            None => Err(error),
            Some(trip) => Err(report_trip(policy, trip, error)),
        },
    };
    if let Err(error) = &result {
        policy.metrics.count_error(error.kind());
    }
    (view, result, Some(ended))
}

fn call_decide(
    policy: &Arc<BoundPolicy>,
    view: RequestView,
) -> (RequestView, Result<Decision, DecisionError>) {
    call(
        policy,
        view,
        |state, view| state.request = Some(view),
        |state| state.request.take(),
        |bindings, store| bindings.call_decide(store, Resource::new_borrow(0)),
    )
}

fn call_decide_connection(
    policy: &Arc<BoundPolicy>,
    view: ConnectionView,
) -> (ConnectionView, Result<ConnectionDecision, DecisionError>) {
    call(
        policy,
        view,
        |state, view| state.connection = Some(view),
        |state| state.connection.take(),
        |bindings, store| bindings.call_decide_connection(store, Resource::new_borrow(0)),
    )
}

/// One call of the guest on this worker's instance (created if there is
/// none), with `view` in the store for its duration; a failed call drops
/// the instance.
fn call<V, D>(
    policy: &Arc<BoundPolicy>,
    view: V,
    put: fn(&mut HostState, V),
    take: fn(&mut HostState) -> Option<V>,
    run: fn(&Bindings, &mut Store<HostState>) -> wasmtime::Result<D>,
) -> (V, Result<D, DecisionError>) {
    INSTANCES.with(|cell| {
        let _call = ticker::in_call();
        let mut slots = cell.borrow_mut();
        let index = match slot_for(&mut slots, policy) {
            Ok(index) => index,
            Err(error) => return (view, Err(error)),
        };
        let slot = &mut slots[index];
        let store = &mut slot.instance.store;
        put(store.data_mut(), view);
        let first_deadline = store.data_mut().clock.restart();
        store.set_epoch_deadline(first_deadline);
        let result = run(&slot.instance.bindings, &mut *store);
        let view = take(store.data_mut()).expect("the host put the view in before the call");
        match result {
            Ok(decision) => (view, Ok(decision)),
            Err(error) => {
                slots.swap_remove(index);
                (view, Err(classify(error)))
            }
        }
    })
}

/// Logs a trip once and returns the failure that caused it, marked as the
/// tripping one for the caller to announce.
fn report_trip(policy: &BoundPolicy, trip: Trip, cause: DecisionError) -> DecisionError {
    tracing::warn!(
        policy = %policy.module.name,
        version = policy.module.version,
        sha256 = %policy.module.short_digest(),
        bound = policy.id,
        back_off = ?trip.back_off,
        trips_in_a_row = trip.in_a_row,
        %cause,
        "policy tripped: it keeps failing, so its requests go to on_error without calling it \
         until the back-off ends and one request tries it again"
    );
    DecisionError::Tripping {
        cause: Box::new(cause),
        back_off: trip.back_off,
    }
}

fn report_closed(policy: &BoundPolicy) {
    tracing::info!(
        policy = %policy.module.name,
        version = policy.module.version,
        sha256 = %policy.module.short_digest(),
        bound = policy.id,
        "policy decides again after its back-off: breaker closed"
    );
}

fn slot_for(
    slots: &mut Vec<WorkerSlot>,
    policy: &Arc<BoundPolicy>,
) -> Result<usize, DecisionError> {
    if let Some(index) = slots.iter().position(|s| s.policy_id == policy.id) {
        return Ok(index);
    }
    slots.retain(|slot| slot.policy.strong_count() > 0);
    let instance = policy.instantiate().map_err(DecisionError::Instantiate)?;
    tracing::debug!(
        policy = %policy.module.name,
        version = policy.module.version,
        "instantiated policy on this worker"
    );
    slots.push(WorkerSlot {
        policy_id: policy.id,
        policy: Arc::downgrade(policy),
        instance,
    });
    Ok(slots.len() - 1)
}

fn classify(error: wasmtime::Error) -> DecisionError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => DecisionError::Timeout,
        _ => DecisionError::Trap(format!("{error:#}")),
    }
}

/// Refuses decisions naming a pool or backend the listener does not have,
/// an unhealthy backend, or an invalid status.
fn check(policy: &BoundPolicy, decision: Decision) -> Result<Decision, DecisionError> {
    match &decision {
        Decision::Forward(forward) => check_backend(policy, forward.pool, forward.backend)?,
        Decision::Respond(respond) => {
            if !(200..=599).contains(&respond.status) {
                return Err(DecisionError::Invalid(format!(
                    "status {} is not a final HTTP status",
                    respond.status
                )));
            }
        }
    }
    Ok(decision)
}

/// Refuses connection decisions naming a pool or backend the listener
/// does not have, or an unhealthy backend.
fn check_connection(
    policy: &BoundPolicy,
    decision: ConnectionDecision,
) -> Result<ConnectionDecision, DecisionError> {
    if let ConnectionDecision::Forward(forward) = &decision {
        check_backend(policy, forward.pool, forward.backend)?;
    }
    Ok(decision)
}

fn check_backend(policy: &BoundPolicy, pool_id: u32, backend: u32) -> Result<(), DecisionError> {
    let pool = policy.pools.get(pool_id as usize).ok_or_else(|| {
        DecisionError::Invalid(format!(
            "pool {pool_id} does not exist (the listener has {})",
            policy.pools.len()
        ))
    })?;
    let chosen = pool.backends.get(backend as usize).ok_or_else(|| {
        DecisionError::Invalid(format!(
            "backend {backend} does not exist in pool {} ({} backends)",
            pool.name,
            pool.backends.len()
        ))
    })?;
    if !chosen.stats.healthy() {
        return Err(DecisionError::Invalid(format!(
            "backend {backend} of pool {} is unhealthy",
            pool.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{BackendConfig, PoolConfig};
    use crate::policy::{FIRST_BACK_OFF, PolicyEngine, PolicyLimits, TRIP_AFTER};
    use crate::pool::BackendPool;

    fn round_robin(memory_limit: usize) -> Arc<BoundPolicy> {
        let engine = PolicyEngine::new().unwrap();
        let bytes = crate::bundled::get("round-robin").unwrap();
        let module = Arc::new(engine.compile("round-robin", bytes).unwrap());
        let config = PoolConfig {
            name: "web".into(),
            backends: vec![BackendConfig {
                address: "127.0.0.1:1".parse().unwrap(),
                weight: 1,
            }],
            ..PoolConfig::default()
        };
        let pools: Arc<[Arc<BackendPool>]> = vec![Arc::new(BackendPool::new(&config, None))].into();
        let limits = PolicyLimits {
            decision_timeout: Duration::from_millis(250),
            memory_limit,
        };
        let table = toml::Table::new();
        Arc::new(BoundPolicy::new(
            module,
            pools,
            Arc::default(),
            &table,
            limits,
        ))
    }

    fn request() -> RequestView {
        let (head, ()) = http::Request::new(()).into_parts();
        RequestView::new(head, "127.0.0.1".parse().unwrap(), false, None)
    }

    #[test]
    fn a_healthy_policy_keeps_deciding() {
        let policy = round_robin(16 << 20);
        let mut view = request();
        for i in 0..2000 {
            let (back, result) = decide(&policy, view);
            view = back;
            assert!(result.is_ok(), "decision {i}: {result:?}");
        }
        assert_eq!(policy.breaker.admit(), Admission::Closed);
    }

    /// No instance fits in 64 KiB: every call fails before entering Wasm,
    /// which counts like a trap; after the trip the policy is not called.
    #[test]
    fn a_policy_that_cannot_instantiate_is_tripped() {
        let policy = round_robin(64 << 10);
        let mut view = request();
        for i in 1..TRIP_AFTER {
            let (back, result) = decide(&policy, view);
            view = back;
            assert!(
                matches!(result, Err(DecisionError::Instantiate(_))),
                "failure {i}: {result:?}"
            );
        }
        let (back, result) = decide(&policy, view);
        match result {
            Err(DecisionError::Tripping { cause, back_off }) => {
                assert!(matches!(*cause, DecisionError::Instantiate(_)), "{cause:?}");
                assert_eq!(back_off, FIRST_BACK_OFF);
            }
            other => panic!("expected the tripping failure, got {other:?}"),
        }
        let (_, result) = decide(&policy, back);
        // Tripped, or the probe if this thread was off the CPU for the
        // whole back-off, which fails and trips it again.
        assert!(
            matches!(
                result,
                Err(DecisionError::Tripped | DecisionError::Tripping { .. })
            ),
            "{result:?}"
        );
    }
}
