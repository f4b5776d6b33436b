//! `weighted-random-by-utilization`: a random healthy backend, with a
//! probability proportional to its `weight` times its spare capacity,
//! `1 - max(cpu, memory)`, from the load it reports about itself.
//!
//! Backends report their load in a response header (`X-Backend-Load: cpu=0.42,
//! mem=0.61` by default; the pool's `load_header` setting names another),
//! which the host records. A backend reporting cpu = 0.95 gets a twentieth
//! of the traffic of an idle one of the same weight (never less than
//! `min_spare`, so its next report still arrives). A report older than
//! `max_report_age_ms` is ignored; a backend without a fresh report counts
//! as `unreported_spare`; when no healthy backend has a fresh report the
//! choice is by plain weights. When no backend is healthy the request is
//! answered `503 no healthy backend`. A retried request goes to a backend
//! it has not tried yet.
//!
//! On a TCP listener each connection is drawn the same way. A TCP proxy
//! sees no responses, so there the reports come from the pool's active
//! health-check responses only (without those, no backend has a report and
//! the choice is by plain weights). A connection whose backend cannot be
//! connected is drawn again among the backends it has not tried; with no
//! healthy backend it is closed.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//! - `max_report_age_ms` (integer, optional, 1..=3600000, default 5000).
//! - `unreported_spare` (number, optional, 0..=1, default 0.5).
//! - `min_spare` (number, optional, 0..=1, default 0.01).
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::{Utilization, utilization_weighted};
use wasmroute_policy::{
    Config, Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy,
    PoolId, Request, Subject, export_policy, random,
};

struct ByUtilization {
    pool: PoolId,
    how: Utilization,
}

fn fraction(config: &Config, key: &str, default: f32) -> Result<f32, String> {
    let x = config.get_float_in(key, 0.0, 1.0)?;
    Ok(x.map_or(default, |x| x as f32))
}

impl Policy for ByUtilization {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config = ctx.config();
        config.deny_unknown_keys(&[
            "pool",
            "max_report_age_ms",
            "unreported_spare",
            "min_spare",
        ])?;
        let defaults = Utilization::default();
        let max_age = config.get_int_in("max_report_age_ms", 1, 3_600_000)?;
        Ok(ByUtilization {
            pool: ctx.config_pool("pool")?,
            how: Utilization {
                max_age_ms: max_age.map_or(defaults.max_age_ms, |ms| ms as u32),
                unreported_spare: fraction(config, "unreported_spare", defaults.unreported_spare)?,
                min_spare: fraction(config, "min_spare", defaults.min_spare)?,
            },
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        Decision::forward_or_no_backend(self.pool, self.pick(req.into()))
    }
}

impl ConnectionPolicy for ByUtilization {
    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        ConnectionDecision::forward_or_reject(self.pool, self.pick(conn.into()))
    }
}

impl ByUtilization {
    /// One draw, for a request or a connection alike.
    fn pick(&self, subject: Subject) -> Option<u32> {
        utilization_weighted(&self.pool.stats(subject), random(), &self.how)
    }
}

export_policy!(ByUtilization);

#[cfg(test)]
mod tests;
