//! `round-robin`: plain round robin over the healthy backends of one pool.
//!
//! Every request goes to the next healthy backend of the pool, in pool
//! order, each backend getting one turn whatever its `weight` (use
//! `weighted-round-robin` to honour weights). An unhealthy backend is
//! skipped; when no backend is healthy the request is answered `503 no
//! healthy backend`. A retried request goes to a backend it has not tried
//! yet. The rotation is per worker thread (see `shared-round-robin` for one
//! rotation across workers).
//!
//! On a TCP listener each connection is decided the same way (one turn
//! per connection; a connection that cannot be connected goes to the next
//! backend).
//!
//! Cost: one host call per decision, for the pool's candidate mask
//! (healthy, untried backends as bits), never stats or strings: the
//! cheapest decision a policy can make.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over, one of the
//!   listener's `pools`. Default: the listener's first pool.
//!
//! Any other key is an error at init.
//!
//! Build: `cargo policies` (writes `target/policies/round-robin.wasm`), or
//! `cargo build --profile policy --target wasm32-wasip2 -p round-robin`.

use wasmroute_policy::balance::Rotation;
use wasmroute_policy::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request, export_policy,
};

struct RoundRobinPolicy {
    pool: PoolId,
    rotation: Rotation,
}

impl Policy for RoundRobinPolicy {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        ctx.config().deny_unknown_keys(&["pool"])?;
        Ok(RoundRobinPolicy {
            pool: ctx.config_pool("pool")?,
            rotation: Rotation::new(),
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        let backend = self.rotation.pick(&mut self.pool.candidates(req));
        Decision::forward_or_no_backend(self.pool, backend)
    }
}

impl ConnectionPolicy for RoundRobinPolicy {
    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        let backend = self.rotation.pick(&mut self.pool.candidates(conn));
        ConnectionDecision::forward_or_reject(self.pool, backend)
    }
}

export_policy!(RoundRobinPolicy);

#[cfg(test)]
mod tests;
