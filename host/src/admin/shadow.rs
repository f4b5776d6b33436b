//! Shadow decisions on the admin endpoint: the
//! `wasmroute_shadow_decisions_total` family of `/metrics`, and
//! `GET /shadow/{listener}`, the latest divergences of a listener's
//! candidate as JSON, newest first.

use http::StatusCode;
use serde_json::{Value, json};

use super::{AdminContext, Answer};
use crate::http::shadow::{Divergence, Shadow, Side};
use crate::http::state::ListenerState;
use crate::metrics::text::{Exposition, Kind};

/// The family name on `/metrics`.
const FAMILY: &str = "wasmroute_shadow_decisions_total";

/// Writes `wasmroute_shadow_decisions_total{listener,policy,outcome}`
/// for every listener with a shadow (the family's header always).
pub(super) fn metrics(out: &mut Exposition, states: &[(String, std::sync::Arc<ListenerState>)]) {
    out.family(
        FAMILY,
        Kind::Counter,
        "Requests decided by a listener's shadow candidate, by how its answer compared with the live one: same, different, error.",
    );
    for (listener, state) in states {
        let Some(record) = &state.metrics.shadow else {
            continue;
        };
        let outcomes = [
            ("same", record.same.get()),
            ("different", record.different.get()),
            ("error", record.error.get()),
        ];
        for (outcome, count) in outcomes {
            let labels = [
                ("listener", listener.as_str()),
                ("policy", record.policy.as_str()),
                ("outcome", outcome),
            ];
            out.sample(FAMILY, &labels, count);
        }
    }
}

/// `GET /shadow/{listener}`: 404 for an unknown listener or one without
/// a shadow.
pub(super) fn divergences(context: &AdminContext, listener: &str) -> Answer {
    let snapshot = context.published.snapshot();
    let state = snapshot
        .as_ref()
        .and_then(|s| s.listeners.iter().find(|l| l.name == listener))
        .map(|l| l.handle.state());
    let Some(shadow) = state.as_ref().and_then(|s| s.shadow.as_ref()) else {
        return super::routes::text(StatusCode::NOT_FOUND, "no such listener with a shadow\n");
    };
    super::routes::json(StatusCode::OK, &document(listener, shadow))
}

fn document(listener: &str, shadow: &Shadow) -> Value {
    let divergences: Vec<Value> = (shadow.record.divergences().iter())
        .map(divergence)
        .collect();
    json!({
        "listener": listener,
        "policy": shadow.policy(),
        "sample": shadow.sample,
        "error": shadow.failure(),
        "divergences": divergences,
    })
}

fn divergence(divergence: &Divergence) -> Value {
    let mut time = Vec::with_capacity(24);
    crate::access_log::time::rfc3339_millis(divergence.time, &mut time);
    json!({
        "time": String::from_utf8_lossy(&time),
        "method": divergence.method.as_str(),
        "host": divergence.host,
        "path": divergence.path,
        "live": side(&divergence.live),
        "candidate": side(&divergence.candidate),
    })
}

fn side(side: &Side) -> Value {
    match side {
        Side::Forward { pool, backend } => json!({ "pool": pool, "backend": backend.to_string() }),
        Side::Status(status) => json!({ "status": status }),
        Side::Error(reason) => json!({ "error": &reason[..] }),
    }
}

/// The shadow of a listener as `/status` shows it: the candidate's name,
/// version and digest, the sample, and why it cannot decide, if so.
pub(super) fn status(shadow: &Shadow) -> Value {
    let module = shadow.candidate.as_ref().ok().map(|c| &c.module);
    json!({
        "policy": shadow.policy(),
        "version": module.map(|m| m.version),
        "sha256": module.map(|m| super::status::hex(&m.digest)),
        "sample": shadow.sample,
        "error": shadow.failure(),
    })
}
