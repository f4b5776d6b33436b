//! `sticky-cookie`: session affinity by a signed cookie.
//!
//! A request without a valid cookie is sent to a backend chosen by an
//! inner algorithm (`balance`), and the response carries a cookie naming
//! that backend by its stable id, signed with HMAC-SHA256 under `secret`.
//! Later requests carrying the cookie go to the same backend while it is
//! healthy. A cookie that does not verify (tampered, forged, signed with
//! another secret), or that names a backend that is unhealthy or no longer
//! in the pool, is ignored: the request is balanced afresh and the
//! response carries a new cookie. A retried request (its backend could
//! not be reached) is placed afresh among the backends it has not tried,
//! and re-pinned.
//!
//! The cookie is the whole state: the proxy remembers nothing per client,
//! so several wasmroute instances with the same `secret` and backends (say
//! behind DNS round robin) share stickiness with no coordination. When no
//! backend is healthy the request is answered `503 no healthy backend`.
//!
//! HTTP listeners only: a TCP connection has no cookie to read nor a
//! response to set one on (the proxy never parses the bytes it streams).
//! For affinity on a TCP listener use `consistent-hash`, which hashes the
//! client IP. The proxy refuses this policy for a TCP listener.
//!
//! `policy_config` keys:
//! - `secret` (string, required, at least 16 bytes): the HMAC key. Keep it
//!   out of version control; changing it re-balances every client once.
//! - `cookie` (string, optional, default `"wasmroute_backend"`): the
//!   cookie name.
//! - `balance` (string, optional, default `"round-robin"`): how a client
//!   without a valid cookie is placed: `round-robin` (weighted),
//!   `random`, `least-connections` or `least-response-time`.
//! - `max_age` (integer seconds, optional, 1..=31536000): the cookie's
//!   `Max-Age`; without it the cookie lasts the browser session.
//! - `secure` (boolean, optional, default `false`): add `Secure` to the
//!   cookie (it is always added on TLS connections).
//! - `pool` (string, optional): the pool to balance over. Default: the
//!   listener's first pool.
//!
//! Any other key is an error at init.

use wasmroute_policy::balance::{Balancer, by_stable_id};
use wasmroute_policy::sticky::{CookieSigner, set_cookie};
use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy, random};

struct StickyCookie {
    pool: PoolId,
    cookie: String,
    signer: CookieSigner,
    inner: Balancer,
    max_age: Option<u32>,
    secure: bool,
}

/// A cookie name as RFC 6265 allows (a token).
fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Policy for StickyCookie {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config = ctx.config();
        config.deny_unknown_keys(&["secret", "cookie", "balance", "max_age", "secure", "pool"])?;
        let secret = config
            .get_str("secret")?
            .ok_or("secret: required (at least 16 bytes; the HMAC key signing the cookie)")?;
        let cookie = config.get_str("cookie")?.unwrap_or("wasmroute_backend");
        if !valid_cookie_name(cookie) {
            return Err(format!("cookie: {cookie:?} is not a valid cookie name"));
        }
        let pool = ctx.config_pool("pool")?;
        let context = format!("{cookie}/{}", ctx.pools()[pool.index() as usize]);
        let signer =
            CookieSigner::new(secret.as_bytes(), &context).map_err(|e| format!("secret: {e}"))?;
        let inner = Balancer::from_name(
            "balance",
            config.get_str("balance")?.unwrap_or("round-robin"),
        )?;
        let max_age = config
            .get_int_in("max_age", 1, 31_536_000)?
            .map(|s| s as u32);
        Ok(StickyCookie {
            pool,
            cookie: cookie.to_string(),
            signer,
            inner,
            max_age,
            secure: config.get_bool("secure")?.unwrap_or(false),
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        // On a retry the pinned backend is the one that just failed: the
        // request is placed afresh, among the backends it has not tried.
        let stats = self.pool.stats(req);
        let pinned = req
            .cookie(&self.cookie)
            .and_then(|value| self.signer.verify(&value))
            .and_then(|id| by_stable_id(&stats, id))
            .filter(|_| req.attempt() == 0);
        if let Some(backend) = pinned {
            return Decision::forward(self.pool, backend).into();
        }
        let Some(backend) = self.inner.pick(&stats, random) else {
            return Decision::no_backend();
        };
        let value = self.signer.sign(stats[backend as usize].stable_id);
        let secure = self.secure || req.is_tls();
        let cookie = set_cookie(&self.cookie, &value, self.max_age, secure);
        Decision::forward(self.pool, backend)
            .append_response_header("set-cookie", cookie)
            .into()
    }
}

export_policy!(StickyCookie);

#[cfg(test)]
mod tests;
