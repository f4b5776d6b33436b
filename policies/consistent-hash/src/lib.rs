//! `consistent-hash`: every request with the same key (client IP, a
//! header, a cookie, the path or the host) goes to the same healthy
//! backend, by a Maglev lookup table over the backends' stable ids.
//!
//! While the set of healthy backends does not change, every key keeps its
//! backend; when one of N backends is removed or goes down, only about 1/N
//! of the keys move (those it had, plus a small disruption bounded by the
//! table size), and they move back when it returns. The table depends only
//! on the backends' addresses and weights, not on their order or on the
//! worker, so every worker and every wasmroute instance with the same pool
//! agrees. A request without the key (no such header or cookie) is hashed
//! by its client IP. A retried request is re-hashed to a backend it has
//! not tried yet. When no backend is healthy the request is answered `503
//! no healthy backend`.
//!
//! On a TCP listener every connection is hashed by its client IP, whatever
//! `key` says: a connection has no header, cookie, path or host, and the
//! server name of a ClientHello is not read (that would make the proxy wait
//! for the client's first bytes, which breaks protocols where the server
//! speaks first; route by name with `sni-router`). The hash is the one an
//! HTTP request with `key = "client-ip"` gets, so one client reaches the
//! same backend over both kinds of listener with the same pool. A
//! connection whose backend cannot be connected is re-hashed to one it has
//! not tried; with no healthy backend it is closed.
//!
//! `policy_config` keys:
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//! - `key` (string, optional, default `"client-ip"`): `client-ip`,
//!   `header:<name>`, `cookie:<name>`, `path` or `host`.
//! - `table_size` (integer, optional, a prime between 7 and 65537,
//!   default 16381): Maglev table slots. Larger spreads more evenly over
//!   many backends (keep it above 100 x the backend count) but costs more
//!   to rebuild: the table is rebuilt by one decision per worker whenever
//!   the pool's healthy set changes (about 1 ms at the default size, a few
//!   ms at 65537: keep `decision_timeout` above that).
//!
//! Cost: the host hashes the key (`request.key-hash`), and on a first
//! attempt the table needs only the pool's health mask
//! (`request.candidates`); the stats (stable ids, weights) are read once
//! per instance. No string or list crosses into the guest per decision
//! except on a retry.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::{DEFAULT_TABLE_SIZE, Maglev};
use wasmroute_policy::key::HashKey;
use wasmroute_policy::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request, export_policy,
};

struct ConsistentHash {
    pool: PoolId,
    key: HashKey,
    table: Maglev,
}

impl Policy for ConsistentHash {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config = ctx.config();
        config.deny_unknown_keys(&["pool", "key", "table_size"])?;
        let key = match config.get_str("key")? {
            Some(text) => HashKey::parse("key", text)?,
            None => HashKey::ClientIp,
        };
        let size = config
            .get_int_in("table_size", 0, i64::from(u32::MAX))?
            .map_or(DEFAULT_TABLE_SIZE, |n| n as u32);
        Ok(ConsistentHash {
            pool: ctx.config_pool("pool")?,
            key,
            table: Maglev::new(size).map_err(|e| format!("table_size: {e}"))?,
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        // The host hashes the key and, on a first attempt, the table needs
        // only the pool's health mask: no string or list crosses over.
        let hash = self.key.hash(req);
        Decision::forward_or_no_backend(self.pool, self.table.pick_for(self.pool, req, hash))
    }
}

impl ConnectionPolicy for ConsistentHash {
    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        // By the client IP whatever `key` says: the hash `HashKey::ClientIp`
        // gives a request from this IP.
        let hash = HashKey::ClientIp.hash(conn);
        ConnectionDecision::forward_or_reject(self.pool, self.table.pick_for(self.pool, conn, hash))
    }
}

export_policy!(ConsistentHash);

#[cfg(test)]
mod tests;
