//! `sni-router`: sends each TLS connection to a pool chosen by the server
//! name (SNI) of its ClientHello, then round robin inside that pool.
//!
//! The proxy peeks at the client's ClientHello (it is never terminated or
//! changed, only read ahead and streamed to the backend as it came), so one
//! TCP port can carry many TLS services, each with its own backends and
//! certificates. Names are matched case-insensitively, in this order:
//! 1. an exact name (`"a.test"`);
//! 2. a wildcard `"*.b.test"`: the `*` is a whole leftmost label and
//!    stands for one or more labels, so it matches `x.b.test` and
//!    `x.y.b.test` but not `b.test` itself; when several wildcards match,
//!    the longest suffix wins (`*.eu.b.test` over `*.b.test`), as nginx's
//!    `server_name` does;
//! 3. the `default` pool, which also takes connections without a
//!    ClientHello or without a server name (plain TCP, a client that sent
//!    nothing within the listener's `peek_timeout`).
//!
//! Without `default`, an unmatched connection is closed. Inside the chosen
//! pool every connection goes to the next healthy backend (one turn each,
//! per worker, whatever the weights); a connection whose backend cannot be
//! connected goes to one it has not tried; a pool without a healthy backend
//! closes the connection: it is never sent to another pool.
//!
//! HTTP and HTTPS listeners: `decide` routes a request the same way by the
//! SNI of its TLS connection and, without one (plain HTTP, or a client that
//! sent no SNI), by the host of its authority (`Host`, port removed), so a
//! plain HTTP listener routes by virtual host. An unmatched request without
//! `default` is answered `421 Misdirected Request`; a pool without a healthy
//! backend `503 no healthy backend`.
//!
//! `policy_config` keys:
//! - `routes.<server name>` (string): the pool for that exact name or
//!   wildcard pattern, one of the listener's `pools`. In TOML: a
//!   `[listeners.policy_config.routes]` table with quoted keys, `"a.test" =
//!   "pool-a"`, `"*.b.test" = "pool-b"`. A name is dot-separated labels of
//!   letters, digits, `-` and `_` (1 to 63 each, 253 in all); two patterns
//!   that differ only in case are an error.
//! - `default` (string, optional): the pool for everything unmatched.
//!
//! At least one route or `default` is required. Any other key is an error
//! at init, as are an unknown pool and a malformed pattern (each error
//! names its key).
//!
//! Cost: the server name (one string) per decision; the routes are matched
//! without allocating, and the backend comes from the host's candidate mask
//! (no stats cross into the guest).

mod routes;

use routes::Routes;
use wasmroute_policy::balance::Rotation;
use wasmroute_policy::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request, Subject, export_policy,
};

struct SniRouter {
    routes: Routes,
    /// One rotation per pool of the listener, by pool index.
    rotations: Vec<Rotation>,
}

impl Policy for SniRouter {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        Ok(SniRouter {
            routes: Routes::from_config(ctx)?,
            rotations: vec![Rotation::new(); ctx.pools().len()],
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        let name = req
            .server_name()
            .or_else(|| req.authority().map(authority_host));
        let Some(pool) = self.routes.pool_for(name.as_deref()) else {
            return Decision::respond(421)
                .header("content-type", "text/plain; charset=utf-8")
                .body("no route for this server name\n")
                .into();
        };
        Decision::forward_or_no_backend(pool, self.pick(pool, req.into()))
    }
}

impl ConnectionPolicy for SniRouter {
    const READS_CLIENT_HELLO: bool = true;

    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        match self.routes.pool_for(conn.server_name().as_deref()) {
            Some(pool) => ConnectionDecision::forward_or_reject(pool, self.pick(pool, conn.into())),
            None => ConnectionDecision::reject(),
        }
    }
}

impl SniRouter {
    /// The next healthy backend of `pool` for a request or a connection.
    fn pick(&mut self, pool: PoolId, subject: Subject) -> Option<u32> {
        let rotation = self.rotations.get_mut(pool.index() as usize)?;
        rotation.pick(&mut pool.candidates(subject))
    }
}

/// The host of an authority: without the port (or the brackets of an IPv6
/// literal, which no route matches anyway), lower-cased, without a
/// trailing dot.
fn authority_host(mut authority: String) -> String {
    let end = match authority.starts_with('[') {
        true => authority.find(']').map_or(authority.len(), |i| i + 1),
        false => authority.find(':').unwrap_or(authority.len()),
    };
    authority.truncate(end);
    if authority.ends_with('.') {
        authority.pop();
    }
    authority.make_ascii_lowercase();
    authority
}

export_policy!(SniRouter);

#[cfg(test)]
mod tests;
