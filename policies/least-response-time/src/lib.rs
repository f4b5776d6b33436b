//! `least-response-time`: power of two random choices over latency x load,
//! as Linkerd balances.
//!
//! For every request two distinct healthy backends of the pool are drawn
//! at random and the one with the lower `ewma_latency * (in_flight + 1) /
//! weight` wins (latency EWMA and in-flight counts are the host's, across
//! every worker). A backend that became slow quickly loses nearly every
//! draw; unlike "always the minimum", a newly fast backend is not flooded
//! by every worker at once. When no backend is healthy the request is
//! answered `503 no healthy backend`. A retried request goes to a backend
//! it has not tried yet.
//!
//! On a TCP listener the same draw decides each connection, over the
//! host's TCP signals: the latency EWMA is the time to connect to the
//! backend (a TCP proxy sees no responses) and the in-flight count is the
//! backend's open connections. A connection whose backend cannot be
//! connected goes to one it has not tried; with no healthy backend it is
//! closed.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::p2c_least_loaded;
use wasmroute_policy::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request, Subject, export_policy, random,
};

struct LeastResponseTime {
    pool: PoolId,
}

impl Policy for LeastResponseTime {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        ctx.config().deny_unknown_keys(&["pool"])?;
        Ok(LeastResponseTime {
            pool: ctx.config_pool("pool")?,
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        Decision::forward_or_no_backend(self.pool, self.pick(req.into()))
    }
}

impl ConnectionPolicy for LeastResponseTime {
    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        ConnectionDecision::forward_or_reject(self.pool, self.pick(conn.into()))
    }
}

impl LeastResponseTime {
    /// The better of two draws, for a request or a connection alike.
    fn pick(&self, subject: Subject) -> Option<u32> {
        p2c_least_loaded(&self.pool.stats(subject), random())
    }
}

export_policy!(LeastResponseTime);

#[cfg(test)]
mod tests;
