//! `content-router`: sends each request to a pool chosen by its path (or a
//! header), then to the least busy healthy backend of that pool.
//!
//! Every pool of the listener except the first has a path prefix, by default
//! `/<pool name>`: with `pools = ["web", "video", "billing"]`, `/video/1.mp4`
//! goes to `video`, `/billing` to `billing`, everything else to `web` (the
//! first pool). Prefixes match on path segment boundaries: `/video` matches
//! `/video`, `/video/` and `/video/x`, but not `/videos`; a prefix ending in
//! `/` (`/static/`) matches only paths below it. When prefixes nest
//! (`/api` and `/api/v2`), the longest matching one wins. The query string
//! plays no part.
//!
//! HTTP listeners only: a TCP connection has no path or header (the proxy
//! does not parse the bytes it streams). To route TCP connections by TLS
//! server name use `sni-router`. The proxy refuses this policy for a TCP
//! listener.
//!
//! Inside the chosen pool the backend with the fewest requests in flight
//! wins, ties rotating; a retry goes to a backend of the pool it has not
//! tried yet while one is healthy (see [`PoolId::least_active`], answered
//! by the host so the pool's stats never cross into the guest). A pool with
//! no healthy backend answers `503 no healthy backend`: a request is never
//! sent to another pool than the one it was routed to.
//!
//! `policy_config` keys:
//! - `<pool>_prefix` (string, optional) for every pool but the first: the
//!   path prefix routed to that pool; must start with `/`. Default:
//!   `/<pool>`. Two pools may not share a prefix.
//! - `header` (string, optional): a request header naming a pool
//!   (`x-route-pool: video`). When the request carries it and its value is
//!   exactly the name of one of the listener's pools (the first included),
//!   that pool wins over the path. Other values are ignored.
//!
//! Any other key (including `<first pool>_prefix`) is an error at init.
//!
//! Build: `cargo policies` (writes `target/policies/content-router.wasm`),
//! or `cargo build --profile policy --target wasm32-wasip2 -p content-router`.

use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy};

struct ContentRouter {
    /// (prefix, pool), longest prefix first.
    routes: Vec<(String, PoolId)>,
    /// The header naming a pool, if configured.
    header: Option<String>,
    /// The listener's pool names, for the header.
    pools: Vec<String>,
    /// Rotates ties among equally loaded backends.
    decisions: u64,
}

impl Policy for ContentRouter {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config = ctx.config();
        let others = ctx.pools().iter().enumerate().skip(1);
        let mut known = vec!["header".to_string()];
        known.extend(others.clone().map(|(_, name)| format!("{name}_prefix")));
        config.deny_unknown_keys(&known)?;

        let mut routes: Vec<(String, PoolId)> = Vec::new();
        for (index, name) in others {
            let key = format!("{name}_prefix");
            let prefix = match config.get_str(&key)? {
                Some(prefix) => prefix.to_string(),
                None => format!("/{name}"),
            };
            if !prefix.starts_with('/') {
                return Err(format!("{key}: must start with '/', got {prefix:?}"));
            }
            if let Some((_, other)) = routes.iter().find(|(p, _)| *p == prefix) {
                let other = &ctx.pools()[other.0 as usize];
                return Err(format!(
                    "{key}: prefix {prefix:?} is already routed to pool `{other}`"
                ));
            }
            routes.push((prefix, PoolId(index as u32)));
        }
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));

        let header = match config.get_str("header")? {
            Some("") => return Err("header: must not be empty".to_string()),
            Some(name) => Some(name.to_string()),
            None => None,
        };
        Ok(ContentRouter {
            routes,
            header,
            pools: ctx.pools().to_vec(),
            decisions: 0,
        })
    }

    fn decide(&mut self, req: &Request) -> Decision {
        let pool = self
            .header_pool(req)
            .unwrap_or_else(|| self.route(&req.path()));
        self.decisions = self.decisions.wrapping_add(1);
        Decision::forward_or_no_backend(pool, pool.least_active(req, self.decisions))
    }
}

impl ContentRouter {
    /// The pool named by the configured header, if the request names one.
    fn header_pool(&self, req: &Request) -> Option<PoolId> {
        let value = req.header(self.header.as_deref()?)?;
        let index = self.pools.iter().position(|name| *name == value)?;
        Some(PoolId(index as u32))
    }

    /// The pool of the longest prefix matching `path`, else the default.
    fn route(&self, path: &str) -> PoolId {
        self.routes
            .iter()
            .find(|(prefix, _)| matches_prefix(path, prefix))
            .map_or(PoolId::DEFAULT, |&(_, pool)| pool)
    }
}

/// `prefix` matches `path` on a segment boundary.
fn matches_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

export_policy!(ContentRouter);

#[cfg(test)]
mod tests;
