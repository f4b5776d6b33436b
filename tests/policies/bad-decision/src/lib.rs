//! Test-only policy: `init` succeeds, `decide` returns a decision the host
//! must refuse, chosen by the `policy_config` key `mode`:
//!
//! - `"pool"` (the default): forward to pool 99, backend 0 (unknown pool);
//! - `"backend"`: forward to pool 0, backend 9999 (backend out of range);
//! - `"unhealthy"`: forward to the first unhealthy backend of pool 0 (a
//!   valid decision, backend 0, while every backend is healthy);
//! - `"status"`: answer with status 99 (outside 200..=599).
//!
//! Any other mode, or any other key, fails init.
//!
//! Built by `tests/build.rs`; not shipped.

use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy};

enum BadDecision {
    UnknownPool,
    BackendOutOfRange,
    Unhealthy,
    BadStatus,
}

impl Policy for BadDecision {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        ctx.config().deny_unknown_keys(&["mode"])?;
        match ctx.config().get_str("mode")?.unwrap_or("pool") {
            "pool" => Ok(BadDecision::UnknownPool),
            "backend" => Ok(BadDecision::BackendOutOfRange),
            "unhealthy" => Ok(BadDecision::Unhealthy),
            "status" => Ok(BadDecision::BadStatus),
            other => Err(format!(
                "mode: unknown mode {other:?} (pool, backend, unhealthy or status)"
            )),
        }
    }

    fn decide(&mut self, req: &Request) -> Decision {
        match self {
            BadDecision::UnknownPool => Decision::forward(PoolId(99), 0).into(),
            BadDecision::BackendOutOfRange => Decision::forward(PoolId::DEFAULT, 9999).into(),
            BadDecision::Unhealthy => {
                let stats = PoolId::DEFAULT.stats(req);
                let down = stats.iter().find(|b| !b.healthy).map_or(0, |b| b.index);
                Decision::forward(PoolId::DEFAULT, down).into()
            }
            BadDecision::BadStatus => Decision::respond(99).into(),
        }
    }
}

export_policy!(BadDecision);
