//! Test-only policy probing what of WASI a policy gets. `policy_config`
//! `mode`:
//! - `std` (default): uses what std needs from WASI that the host provides
//!   — the wall clock, the monotonic clock, a randomly seeded `HashMap` —
//!   and forwards to backend 0 of the default pool;
//! - `print`: `println!`s in `decide` (stdout is not provided: the call
//!   traps, and the listener's `on_error` handles the request);
//! - `env`: reads an environment variable (not provided: traps).
//!
//! Built by `tests/build.rs`; not shipped.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy};

struct WasiProbe {
    mode: String,
    seen: HashMap<String, u64>,
}

impl Policy for WasiProbe {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        ctx.config().deny_unknown_keys(&["mode"])?;
        let mode = ctx.config().get_str("mode")?.unwrap_or("std").to_owned();
        if !["std", "print", "env"].contains(&mode.as_str()) {
            return Err(format!("mode: unknown mode `{mode}`"));
        }
        Ok(WasiProbe {
            mode,
            seen: HashMap::new(),
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        match self.mode.as_str() {
            "print" => println!("deciding {}", req.path()),
            "env" => {
                let _ = std::env::var("HOME");
            }
            _ => {
                let started = Instant::now();
                let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                assert!(wall.as_secs() > 1_600_000_000, "the wall clock is real");
                *self.seen.entry(req.path()).or_default() += 1;
                assert!(started.elapsed().as_secs() < 1, "the monotonic clock runs");
            }
        }
        Decision::forward(PoolId::DEFAULT, 0).into()
    }
}

export_policy!(WasiProbe);
