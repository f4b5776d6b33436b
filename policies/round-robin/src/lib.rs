//! `round-robin`: weighted round robin over the healthy backends of one
//! pool.
//!
//! Every request goes to the next healthy backend of the pool, in pool
//! order; a backend with `weight = 2` gets twice the turns of one with
//! weight 1 (see [`RoundRobin`]). When no backend is healthy the request is
//! answered `503 no healthy backend`. The rotation is per worker thread.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over, one of the
//!   listener's `pools`. Default: the listener's first pool.
//!
//! Any other key is an error at init.
//!
//! Build: `cargo policies` (writes `target/policies/round-robin.wasm`), or
//! `cargo build --release --target wasm32-wasip2 -p round-robin`.

use wasmroute_policy::balance::RoundRobin;
use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy};

struct RoundRobinPolicy {
    pool: PoolId,
    rotation: RoundRobin,
}

impl Policy for RoundRobinPolicy {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config = ctx.config();
        config.deny_unknown_keys(&["pool"])?;
        let pool = match config.get_str("pool")? {
            Some(name) => ctx.pool(name).map_err(|e| format!("pool: {e}"))?,
            None => PoolId::DEFAULT,
        };
        Ok(RoundRobinPolicy {
            pool,
            rotation: RoundRobin::new(),
        })
    }

    fn decide(&mut self, _req: &Request) -> Decision {
        match self.rotation.pick(&self.pool.stats()) {
            Some(backend) => Decision::forward(self.pool, backend),
            None => Decision::no_backend(),
        }
    }
}

export_policy!(RoundRobinPolicy);
