//! Test-only policy: `init` succeeds, `decide` never returns. It spins in a
//! pure compute loop (no host calls, so nothing but the host's per-decision
//! deadline can stop it); `black_box` keeps the optimizer from proving the
//! loop useless.
//!
//! Built by `tests/build.rs`; not shipped.

use std::hint::black_box;
use wasmroute_policy::{Decision, InitContext, Policy, Request, export_policy};

struct Looping;

impl Policy for Looping {
    fn init(_ctx: &InitContext) -> Result<Self, String> {
        Ok(Looping)
    }

    fn decide(&mut self, _req: &Request) -> Decision {
        let mut spins = 0u64;
        loop {
            spins = black_box(spins.wrapping_add(1));
        }
    }
}

export_policy!(Looping);
