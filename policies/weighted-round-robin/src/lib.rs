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
//! On a TCP listener each connection is one turn of the same rotation (a
//! connection whose backend cannot be connected goes to the next one it has
//! not tried); a rejected connection (no healthy backend) is closed.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::RoundRobin;
use wasmroute_policy::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request, Subject, export_policy,
};

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
        Decision::forward_or_no_backend(self.pool, self.pick(req.into()))
    }
}

impl ConnectionPolicy for WeightedRoundRobin {
    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        ConnectionDecision::forward_or_reject(self.pool, self.pick(conn.into()))
    }
}

impl WeightedRoundRobin {
    /// The next turn, for a request or a connection alike.
    fn pick(&mut self, subject: Subject) -> Option<u32> {
        self.rotation.pick(&self.pool.stats(subject))
    }
}

export_policy!(WeightedRoundRobin);

#[cfg(test)]
mod tests;
