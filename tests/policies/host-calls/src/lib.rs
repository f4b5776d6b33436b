//! Test-only policy: makes one kind of host call a configured number of
//! times, then answers `200` itself with the call and the count
//! (`x-host-call: header`, `x-host-calls: 16`). It measures what one host
//! call costs (the `host_calls` bench of the tests crate: a decision with
//! `times = 16` against one with `times = 0`) and e2e tests check it
//! makes exactly the calls it says.
//!
//! `policy_config`: `call` (one of [`CALLS`]), `times` (0..=64).
//!
//! Built by `tests/build.rs`; not shipped.

use std::hint::black_box;
use wasmroute_policy::key::HashKey;
use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy};

/// The calls it can make, by config name.
const CALLS: &[&str] = &[
    "none",
    "method",
    "path",
    "header",
    "missing-header",
    "cookie",
    "client-ip",
    "authority",
    "attempt",
    "key-hash",
    "candidates",
    "least-active",
    "stats",
];

struct HostCalls {
    call: &'static str,
    times: u32,
    key: HashKey,
}

impl Policy for HostCalls {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config = ctx.config();
        config.deny_unknown_keys(&["call", "times"])?;
        let name = config.get_str("call")?.unwrap_or("none");
        let call = CALLS
            .iter()
            .copied()
            .find(|known| *known == name)
            .ok_or_else(|| format!("call: unknown {name:?} (one of: {})", CALLS.join(", ")))?;
        let times = config.get_int_in("times", 0, 64)?.unwrap_or(1) as u32;
        Ok(HostCalls {
            call,
            times,
            key: HashKey::Header("x-request-id".into()),
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        for _ in 0..self.times {
            self.call_once(req);
        }
        Decision::respond(200)
            .header("x-host-call", self.call)
            .header("x-host-calls", self.times.to_string())
            .into()
    }
}

impl HostCalls {
    /// One call of the configured kind; the answer is kept from the
    /// optimiser, never used.
    fn call_once(&self, req: &Request) {
        let pool = PoolId::DEFAULT;
        match self.call {
            "method" => {
                let _ = black_box(req.method());
            }
            "path" => {
                let _ = black_box(req.path());
            }
            "header" => {
                let _ = black_box(req.header("user-agent"));
            }
            "missing-header" => {
                let _ = black_box(req.header("x-absent"));
            }
            "cookie" => {
                let _ = black_box(req.cookie("session"));
            }
            "client-ip" => {
                let _ = black_box(req.client_ip());
            }
            "authority" => {
                let _ = black_box(req.authority());
            }
            "attempt" => {
                let _ = black_box(req.attempt());
            }
            "key-hash" => {
                let _ = black_box(req.key_hash(&self.key));
            }
            "candidates" => {
                let _ = black_box(pool.candidates(req).count());
            }
            "least-active" => {
                let _ = black_box(pool.least_active(req, 0));
            }
            "stats" => {
                let _ = black_box(pool.stats(req));
            }
            _ => {}
        }
    }
}

export_policy!(HostCalls);
