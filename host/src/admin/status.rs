//! `GET /status`: what serves now, as JSON: every listener (address,
//! protocol, policy version and digest, decision errors) and every pool's
//! backends (state, live signals, last load report) and backend names
//! (each `name:port` with the addresses it gives now).

use serde_json::{Value, json};

use super::AdminContext;
use crate::config::Protocol;
use crate::pool::{Backend, BackendPool, BackendStats, now_ms};
use crate::server::published::{PublishedListener, Snapshot};

/// A backend's state as `/status` shows it: an operator's drain first,
/// then passive ejection, then the active check.
pub(super) fn backend_state(stats: &BackendStats) -> &'static str {
    if stats.drained() {
        "draining"
    } else if stats.ejected() {
        "ejected"
    } else if !stats.check_up() {
        "down"
    } else {
        "up"
    }
}

/// The whole status document.
pub(super) fn status(context: &AdminContext) -> Value {
    let lifecycle = &context.lifecycle;
    let Some(snapshot) = context.published.snapshot() else {
        return json!({ "ready": false, "listeners": [], "pools": [] });
    };
    let listeners: Vec<Value> = (snapshot.listeners.iter())
        .map(|listener| listener_status(&snapshot, listener))
        .collect();
    let pools: Vec<Value> = (snapshot.pools.iter())
        .map(|p| pool_status(&snapshot, p))
        .collect();
    json!({
        "ready": lifecycle.is_ready(),
        "draining": lifecycle.is_draining(),
        "listeners": listeners,
        "pools": pools,
    })
}

fn listener_status(snapshot: &Snapshot, listener: &PublishedListener) -> Value {
    let protocol = snapshot
        .config
        .listeners
        .iter()
        .find(|l| l.name == listener.name)
        .map_or("http", |l| match l.protocol {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
        });
    let state = listener.handle.state();
    let module = &state.policy.module;
    json!({
        "name": listener.name,
        "address": listener.address.to_string(),
        "protocol": protocol,
        "policy": module.name,
        "version": module.version,
        "sha256": hex(&module.digest),
        "decision_errors": listener.handle.decision_errors(),
        "pools": state.policy.pools.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "shadow": state.shadow.as_ref().map(super::shadow::status),
    })
}

fn pool_status(snapshot: &Snapshot, pool: &BackendPool) -> Value {
    let now = now_ms();
    let backends: Vec<Value> = pool
        .backends
        .iter()
        .map(|b| backend_status(b, now))
        .collect();
    let names: Vec<Value> = (snapshot.names.iter())
        .filter(|n| n.pool == pool.name)
        .map(|n| {
            let addresses: Vec<String> = n.addresses.iter().map(ToString::to_string).collect();
            json!({ "name": n.name, "srv": n.srv, "addresses": addresses })
        })
        .collect();
    json!({
        "name": pool.name,
        "retries": pool.retries.get(),
        "backends": backends,
        "names": names,
    })
}

fn backend_status(backend: &Backend, now: u64) -> Value {
    let stats = &backend.stats;
    let ejected_for = stats
        .ejected()
        .then(|| stats.outlier.ejected_until_ms().saturating_sub(now));
    let load = stats
        .load
        .load(now)
        .map(|load| json!({ "cpu": load.cpu, "memory": load.memory, "age_ms": load.age_ms }));
    json!({
        "address": backend.address.to_string(),
        "weight": backend.weight,
        "state": backend_state(stats),
        "ejected_for_ms": ejected_for,
        "ejections": stats.ejections.get(),
        "active_requests": stats.active(),
        "total_requests": stats.total(),
        "ewma_latency_us": stats.ewma_latency_us(),
        "error_rate_permille": stats.errors.rate_permille(now),
        "load": load,
    })
}

/// Lower-case hex of a digest.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
