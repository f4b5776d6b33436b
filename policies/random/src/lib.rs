//! `random`: a random healthy backend of one pool for every request, with
//! a probability proportional to its `weight` (uniform when weights are
//! equal, or with `weighted = false`).
//!
//! Randomness comes from the host's fast generator; there is no state, so
//! every worker behaves alike. When no backend is healthy the request is
//! answered `503 no healthy backend`. A retried request goes to a backend
//! it has not tried yet.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//! - `weighted` (boolean, optional, default `true`): `false` ignores the
//!   weights.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::{random_candidate, weighted_random};
use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy, random};

struct Random {
    pool: PoolId,
    weighted: bool,
}

impl Policy for Random {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config = ctx.config();
        config.deny_unknown_keys(&["pool", "weighted"])?;
        Ok(Random {
            pool: ctx.config_pool("pool")?,
            weighted: config.get_bool("weighted")?.unwrap_or(true),
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        let pick = if self.weighted {
            weighted_random(&self.pool.stats_for(req), random())
        } else {
            // Health is all it needs: the host's candidate mask, no stats.
            random_candidate(&mut self.pool.candidates(req), random())
        };
        match pick {
            Some(backend) => Decision::forward(self.pool, backend),
            None => Decision::no_backend(),
        }
    }
}

export_policy!(Random);
