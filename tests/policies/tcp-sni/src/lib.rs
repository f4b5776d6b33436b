//! Test-only policy: reads the TLS ClientHello of TCP connections. A
//! connection whose hello names a server goes to the pool `tls_pool`,
//! the others to `pool` (each a `policy_config` key naming one of the
//! listener's pools; default the first). The first healthy backend of
//! the pool not tried yet gets it.
//!
//! Built by `tests/build.rs`; not shipped.

use wasmroute_policy::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request, export_policy,
};

struct TcpSni {
    plain: PoolId,
    tls: PoolId,
}

impl Policy for TcpSni {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        ctx.config().deny_unknown_keys(&["pool", "tls_pool"])?;
        Ok(TcpSni {
            plain: ctx.config_pool("pool")?,
            tls: ctx.config_pool("tls_pool")?,
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        match self.plain.candidates(req).next_after(None) {
            Some(backend) => Decision::forward(self.plain, backend),
            None => Decision::no_backend(),
        }
    }
}

impl ConnectionPolicy for TcpSni {
    const READS_CLIENT_HELLO: bool = true;

    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        let pool = match conn.server_name() {
            Some(_) => self.tls,
            None => self.plain,
        };
        match pool.candidates(conn).next_after(None) {
            Some(backend) => ConnectionDecision::forward(pool, backend),
            None => ConnectionDecision::reject(),
        }
    }
}

export_policy!(TcpSni);
