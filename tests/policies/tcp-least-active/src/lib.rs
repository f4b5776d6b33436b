//! Test-only policy: least connections over the listener's first pool,
//! for requests and for TCP connections (ties broken at random), so
//! tests can check that a `tcp` listener's open relays count as a
//! backend's active requests. With `policy_config` `trap = true` every
//! connection decision traps instead (for `on_error` tests); requests are
//! still decided.
//!
//! Built by `tests/build.rs`; not shipped.

use wasmroute_policy::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request, export_policy, random,
};

struct TcpLeastActive {
    trap: bool,
}

impl Policy for TcpLeastActive {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        ctx.config().deny_unknown_keys(&["trap"])?;
        let trap = ctx.config().get_bool("trap")?.unwrap_or(false);
        Ok(TcpLeastActive { trap })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        Decision::forward_or_no_backend(
            PoolId::DEFAULT,
            PoolId::DEFAULT.least_active(req, random()),
        )
    }
}

impl ConnectionPolicy for TcpLeastActive {
    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        if self.trap {
            panic!("tcp-least-active: told to trap");
        }
        let backend = PoolId::DEFAULT.least_active(conn, random());
        ConnectionDecision::forward_or_reject(PoolId::DEFAULT, backend)
    }
}

export_policy!(TcpLeastActive);
