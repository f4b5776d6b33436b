//! Test-only policy: `init` succeeds, `decide` traps (a panic, which
//! aborts: an `unreachable` trap) on every request.
//!
//! Built by `tests/build.rs`; not shipped.

use wasmroute_policy::{Decision, InitContext, Policy, Request, export_policy};

struct Trapping;

impl Policy for Trapping {
    fn init(_ctx: &InitContext) -> Result<Self, String> {
        Ok(Trapping)
    }

    fn decide(&mut self, _req: &Request) -> Decision {
        panic!("trapping: this policy traps on every request")
    }
}

export_policy!(Trapping);
