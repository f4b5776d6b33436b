//! `random`: a random healthy backend of one pool for every request, with
//! a probability proportional to its `weight` (uniform when weights are
//! equal, or with `weighted = false`).
//!
//! Randomness comes from the host's fast generator; there is no state, so
//! every worker behaves alike. When no backend is healthy the request is
//! answered `503 no healthy backend`. A retried request goes to a backend
//! it has not tried yet.
//!
//! On a TCP listener each connection is drawn the same way (a connection
//! whose backend cannot be connected is drawn again among the backends it
//! has not tried); with no healthy backend it is closed.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//! - `weighted` (boolean, optional, default `true`): `false` ignores the
//!   weights.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::{random_candidate, weighted_random};
use wasmroute_policy::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request, Subject, export_policy, random,
};

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
        Decision::forward_or_no_backend(self.pool, self.pick(req.into()))
    }
}

impl ConnectionPolicy for Random {
    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        ConnectionDecision::forward_or_reject(self.pool, self.pick(conn.into()))
    }
}

impl Random {
    /// One draw, for a request or a connection alike.
    fn pick(&self, subject: Subject) -> Option<u32> {
        if self.weighted {
            weighted_random(&self.pool.stats(subject), random())
        } else {
            // Health is all it needs: the host's candidate mask, no stats.
            random_candidate(&mut self.pool.candidates(subject), random())
        }
    }
}

export_policy!(Random);

#[cfg(test)]
mod tests;
