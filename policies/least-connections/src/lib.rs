//! `least-connections`: the healthy backend of one pool with the fewest
//! requests in flight per unit of weight (nginx `least_conn`).
//!
//! In-flight counts are the host's, across every worker, so a backend
//! holding slow requests stops getting new ones until they finish. Ties
//! (every backend idle, say) are broken by weight: a tied backend is
//! chosen at random with a probability proportional to its weight. When no
//! backend is healthy the request is answered `503 no healthy backend`. A
//! retried request goes to a backend it has not tried yet.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::least_connections;
use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy, random};

struct LeastConnections {
    pool: PoolId,
}

impl Policy for LeastConnections {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        ctx.config().deny_unknown_keys(&["pool"])?;
        Ok(LeastConnections {
            pool: ctx.config_pool("pool")?,
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        match least_connections(&self.pool.stats_for(req), random()) {
            Some(backend) => Decision::forward(self.pool, backend),
            None => Decision::no_backend(),
        }
    }
}

export_policy!(LeastConnections);
