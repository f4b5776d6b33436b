//! Test-only policy: a module as a policy author wrote it for
//! `wasmroute:policy@0.2.2`, built with wit-bindgen directly against the
//! archived `wit/history/policy-0.2.2.wit` (the SDK speaks 0.3 now). It
//! proves the host still serves 0.2 modules: every request goes to the
//! first healthy backend of pool 0 (by `pool-stats`, a 0.2.0 import), with
//! the request header `x-policy-interface: 0.2` added (so a test sees the
//! decision's edits applied); `503` when no backend of pool 0 is healthy.
//! It takes no `policy_config`.
//!
//! Built by `tests/build.rs`; not shipped.

/// The 0.2.2 bindings, and the exports wired to [`FirstHealthy`] (here,
/// where the generated code may be unsafe).
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/history/policy-0.2.2.wit",
        world: "policy",
    });

    use super::FirstHealthy;
    export!(FirstHealthy with_types_in self);
}

use bindings::wasmroute::policy::host::{self, Request};
use bindings::wasmroute::policy::types::{ConfigValue, Decision, Forward, HeaderEdit, Respond};

struct FirstHealthy;

impl bindings::Guest for FirstHealthy {
    fn init(pools: Vec<String>, config: Vec<(String, ConfigValue)>) -> Result<(), String> {
        if let Some((key, _)) = config.first() {
            return Err(format!("{key}: unknown key (this policy takes no config)"));
        }
        match pools.is_empty() {
            true => Err("the listener has no pool".to_string()),
            false => Ok(()),
        }
    }

    fn decide(_: &Request) -> Decision {
        let first = host::pool_stats(0).into_iter().find(|b| b.healthy);
        match first {
            Some(backend) => Decision::Forward(Forward {
                pool: 0,
                backend: backend.index,
                request_edits: vec![HeaderEdit::Set((
                    "x-policy-interface".to_string(),
                    "0.2".to_string(),
                ))],
                response_edits: Vec::new(),
            }),
            None => Decision::Respond(Respond {
                status: 503,
                headers: Vec::new(),
                body: b"no healthy backend\n".to_vec(),
            }),
        }
    }
}
