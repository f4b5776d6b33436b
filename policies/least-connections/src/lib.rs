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
//! On a TCP listener the host counts open connections instead of requests
//! in flight (`active_requests` is the number of connections a backend
//! holds), so each connection goes to the backend holding the fewest per
//! unit of weight: the usual balancing of long-lived connections (databases,
//! message brokers). A connection whose backend cannot be connected goes to
//! one it has not tried; with no healthy backend it is closed.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::least_connections;
use wasmroute_policy::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request, Subject, export_policy, random,
};

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
        Decision::forward_or_no_backend(self.pool, self.pick(req.into()))
    }
}

impl ConnectionPolicy for LeastConnections {
    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        ConnectionDecision::forward_or_reject(self.pool, self.pick(conn.into()))
    }
}

impl LeastConnections {
    /// The least loaded backend, for a request or a connection alike.
    fn pick(&self, subject: Subject) -> Option<u32> {
        least_connections(&self.pool.stats(subject), random())
    }
}

export_policy!(LeastConnections);

#[cfg(test)]
mod tests;
