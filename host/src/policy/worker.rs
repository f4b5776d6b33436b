//! Per-worker-thread policy instances and the decision call.
//!
//! Each worker thread keeps its own instances in a thread-local list keyed
//! by [`BoundPolicy::id`]: no lock, no sharing, and the store (with the
//! guest's memory, so its state such as a round-robin cursor) is reused for
//! every decision. A new policy version has a new id; the first decision
//! that meets it on a worker instantiates it there and sweeps instances of
//! versions nobody holds any more. An instance that trapped is dropped.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use wasmtime::Trap;
use wasmtime::component::Resource;

use super::host::exports::Decision;
use super::{BoundPolicy, DecisionError, PolicyInstance, RequestView};

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
/// listener's pools before it is returned.
pub fn decide(
    policy: &Arc<BoundPolicy>,
    view: RequestView,
) -> (RequestView, Result<Decision, DecisionError>) {
    INSTANCES.with(|cell| {
        let mut slots = cell.borrow_mut();
        let index = match slot_for(&mut slots, policy) {
            Ok(index) => index,
            Err(error) => return (view, Err(error)),
        };
        let slot = &mut slots[index];
        let store = &mut slot.instance.store;
        store.data_mut().request = Some(view);
        let first_deadline = store.data_mut().clock.restart();
        store.set_epoch_deadline(first_deadline);
        let result = slot
            .instance
            .bindings
            .call_decide(&mut *store, Resource::new_borrow(0));
        let view = store
            .data_mut()
            .request
            .take()
            .expect("the host put the request view in before the call");
        match result {
            Ok(decision) => (view, check(policy, decision)),
            Err(error) => {
                slots.swap_remove(index);
                (view, Err(classify(error)))
            }
        }
    })
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
        Decision::Forward(forward) => {
            let pool = policy.pools.get(forward.pool as usize).ok_or_else(|| {
                DecisionError::Invalid(format!(
                    "pool {} does not exist (the listener has {})",
                    forward.pool,
                    policy.pools.len()
                ))
            })?;
            let backend = pool.backends.get(forward.backend as usize).ok_or_else(|| {
                DecisionError::Invalid(format!(
                    "backend {} does not exist in pool {} ({} backends)",
                    forward.backend,
                    pool.name,
                    pool.backends.len()
                ))
            })?;
            if !backend.stats.healthy() {
                return Err(DecisionError::Invalid(format!(
                    "backend {} of pool {} is unhealthy",
                    forward.backend, pool.name
                )));
            }
        }
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
