//! Test-only policy: `init` always fails, with the message
//! `init-fails: this policy always refuses to start`. Tests use it to check
//! that a module failing validation is refused and the old one keeps
//! serving.
//!
//! Built by `tests/build.rs`; not shipped.

use wasmroute_policy::{Decision, InitContext, Policy, Request, export_policy};

struct InitFails;

impl Policy for InitFails {
    fn init(_ctx: &InitContext) -> Result<Self, String> {
        Err("init-fails: this policy always refuses to start".to_string())
    }

    fn decide(&mut self, _req: &Request) -> Decision {
        unreachable!("init-fails: decide without a successful init")
    }
}

export_policy!(InitFails);
