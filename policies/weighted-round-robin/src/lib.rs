//! `weighted-round-robin`: smooth weighted round robin (nginx-style) over
//! the healthy backends of one pool.
//!
//! A backend with `weight = 3` gets three turns for every one of a backend
//! with weight 1, interleaved rather than in bursts: weights 5, 1, 1 give
//! `a a b a c a a`, never five `a` in a row. An unhealthy backend is
//! skipped without disturbing the others' rotation; when no backend is
//! healthy the request is answered `503 no healthy backend`. A retried
//! request goes to a backend it has not tried yet. The rotation is per
//! worker thread: each worker keeps the proportions on its own.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::RoundRobin;
use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy};

struct WeightedRoundRobin {
    pool: PoolId,
    rotation: RoundRobin,
}

impl Policy for WeightedRoundRobin {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        ctx.config().deny_unknown_keys(&["pool"])?;
        Ok(WeightedRoundRobin {
            pool: ctx.config_pool("pool")?,
            rotation: RoundRobin::new(),
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        match self.rotation.pick(&self.pool.stats_for(req)) {
            Some(backend) => Decision::forward(self.pool, backend),
            None => Decision::no_backend(),
        }
    }
}

export_policy!(WeightedRoundRobin);
