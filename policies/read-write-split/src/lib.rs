//! `read-write-split`: reads to the replicas, writes to the primary.
//!
//! `GET`, `HEAD` and `OPTIONS` requests go to a healthy backend of the
//! `replicas` pool; every other method (`POST`, `PUT`, `PATCH`, `DELETE`,
//! ...) to a healthy backend of the `primary` pool. Inside each pool the
//! backend is chosen by `balance`. When no replica is healthy, reads go to
//! the primary (unless `read_fallback = false`); when no primary is
//! healthy, writes are answered `503 no healthy backend` (they never go to
//! a replica). A retried request goes to a backend it has not tried yet.
//!
//! HTTP listeners only: the split is by request method, which a TCP
//! connection does not have (the proxy does not parse the protocol it
//! carries). For databases over TCP, give reads and writes their own
//! listener (the client's read and write endpoints) with a balancing policy
//! each. The proxy refuses this policy for a TCP listener.
//!
//! `policy_config` keys:
//! - `primary` (string, optional, default `"primary"`): the pool for
//!   writes; one of the listener's `pools`.
//! - `replicas` (string, optional, default `"replicas"`): the pool for
//!   reads.
//! - `balance` (string, optional, default `"round-robin"`): the algorithm
//!   inside each pool: `round-robin` (weighted), `random`,
//!   `least-connections` or `least-response-time`.
//! - `read_fallback` (boolean, optional, default `true`): send reads to
//!   the primary while no replica is healthy.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::Balancer;
use wasmroute_policy::{
    Decision, InitContext, Method, Policy, PoolId, Request, export_policy, random,
};

struct ReadWriteSplit {
    primary: (PoolId, Balancer),
    replicas: (PoolId, Balancer),
    read_fallback: bool,
}

fn pool(ctx: &InitContext, key: &str) -> Result<PoolId, String> {
    let name = ctx.config().get_str(key)?.unwrap_or(key);
    ctx.pool(name).map_err(|e| format!("{key}: {e}"))
}

/// Whether a method only reads (and may go to a replica).
fn is_read(method: &Method) -> bool {
    matches!(method, Method::Get | Method::Head | Method::Options)
}

fn pick(pool: &mut (PoolId, Balancer), req: &Request) -> Option<Decision> {
    let backend = pool.1.pick(&pool.0.stats(req), random)?;
    Some(Decision::forward(pool.0, backend).into())
}

impl Policy for ReadWriteSplit {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config = ctx.config();
        config.deny_unknown_keys(&["primary", "replicas", "balance", "read_fallback"])?;
        let primary = pool(ctx, "primary")?;
        let replicas = pool(ctx, "replicas")?;
        if primary == replicas {
            return Err("replicas: must be another pool than primary".to_string());
        }
        let balance = config.get_str("balance")?.unwrap_or("round-robin");
        let balancer = Balancer::from_name("balance", balance)?;
        Ok(ReadWriteSplit {
            primary: (primary, balancer.clone()),
            replicas: (replicas, balancer),
            read_fallback: config.get_bool("read_fallback")?.unwrap_or(true),
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        let decision = if is_read(&req.method()) {
            pick(&mut self.replicas, req).or_else(|| {
                self.read_fallback
                    .then(|| pick(&mut self.primary, req))
                    .flatten()
            })
        } else {
            pick(&mut self.primary, req)
        };
        decision.unwrap_or_else(Decision::no_backend)
    }
}

export_policy!(ReadWriteSplit);

#[cfg(test)]
mod tests;
