//! `shared-round-robin`: one smooth weighted round robin shared by every
//! worker, through the host's shared atomic counters.
//!
//! `round-robin` and `weighted-round-robin` rotate per worker thread: over
//! a whole proxy the proportions hold, but two consecutive requests served
//! by different workers may land on the same backend. Here the cursor is a
//! host counter (`slot`) that every worker's instance increments, so
//! consecutive requests follow one global sequence (`a b a b ...`, or `a a
//! b a c a a` for weights 5, 1, 1) whichever worker serves them. The
//! counter survives policy and config reloads of the listener; it counts
//! turns, not backends, so after the pool grows or shrinks (a reload, a
//! changed DNS answer) it simply continues in the new pool's sequence.
//! Unhealthy backends are skipped; when no backend is healthy the request
//! is answered `503 no healthy backend`. A retried request goes to a
//! backend it has not tried yet.
//!
//! On a TCP listener each connection takes one turn of the same global
//! sequence (a connection whose backend cannot be connected goes to one it
//! has not tried); with no healthy backend it is closed.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//! - `slot` (integer, optional, default 0): the shared counter slot, below
//!   the host's `counter-slots()` (64). Give every policy of the listener
//!   that uses counters its own slot.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::SharedRotation;
use wasmroute_policy::shared::SharedCounter;
use wasmroute_policy::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request, Subject, export_policy,
};

struct SharedRoundRobin {
    pool: PoolId,
    cursor: SharedCounter,
    rotation: SharedRotation,
}

impl Policy for SharedRoundRobin {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config = ctx.config();
        config.deny_unknown_keys(&["pool", "slot"])?;
        let slot = config
            .get_int_in("slot", 0, i64::from(u32::MAX))?
            .unwrap_or(0);
        Ok(SharedRoundRobin {
            pool: ctx.config_pool("pool")?,
            cursor: SharedCounter::new(slot as u32).map_err(|e| format!("slot: {e}"))?,
            rotation: SharedRotation::new(),
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        Decision::forward_or_no_backend(self.pool, self.pick(req.into()))
    }
}

impl ConnectionPolicy for SharedRoundRobin {
    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        ConnectionDecision::forward_or_reject(self.pool, self.pick(conn.into()))
    }
}

impl SharedRoundRobin {
    /// The next turn of the shared sequence, for a request or a connection.
    fn pick(&mut self, subject: Subject) -> Option<u32> {
        let stats = self.pool.stats(subject);
        let cursor = self.cursor.fetch_add(1) as u64;
        self.rotation.pick(&stats, cursor)
    }
}

export_policy!(SharedRoundRobin);

#[cfg(test)]
mod tests;
