//! The route table of `sni-router`: parsed and checked from
//! `policy_config` at init, matched per decision without allocating.

use wasmroute_policy::{InitContext, PoolId};

/// The prefix of a route key in the flattened `policy_config`.
const ROUTES: &str = "routes.";
/// The key of the pool for unmatched names.
const DEFAULT: &str = "default";
/// Longest DNS name, and longest label, in characters.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// Server names to pools.
#[derive(Debug, Default)]
pub struct Routes {
    /// Exact names, lower-cased.
    exact: Vec<(String, PoolId)>,
    /// Wildcard suffixes with their leading dot (`.b.test` for
    /// `*.b.test`), lower-cased, longest first.
    wildcards: Vec<(String, PoolId)>,
    /// The pool of unmatched names and of connections without one.
    default: Option<PoolId>,
}

impl Routes {
    /// The table `policy_config` describes; errors name the key at fault.
    pub fn from_config(ctx: &InitContext) -> Result<Self, String> {
        let config = ctx.config();
        let mut routes = Routes::default();
        for key in config.keys() {
            let pool_key = |key: &str| -> Result<PoolId, String> {
                let name = config.get_str(key)?.unwrap_or_default();
                ctx.pool(name).map_err(|e| format!("{key}: {e}"))
            };
            if key == DEFAULT {
                routes.default = Some(pool_key(key)?);
            } else if let Some(pattern) = key.strip_prefix(ROUTES) {
                let pool = pool_key(key)?;
                routes
                    .add(pattern, pool)
                    .map_err(|e| format!("{key}: {e}"))?;
            } else {
                return Err(format!(
                    "{key}: unknown key (known keys: `default`, `routes.<server name>`)"
                ));
            }
        }
        if routes.exact.is_empty() && routes.wildcards.is_empty() && routes.default.is_none() {
            return Err(
                "routes: no route and no `default`: every connection would be \
                        rejected"
                    .to_string(),
            );
        }
        routes
            .wildcards
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Ok(routes)
    }

    /// Adds one `routes.<pattern>` entry.
    fn add(&mut self, pattern: &str, pool: PoolId) -> Result<(), String> {
        let lower = pattern.to_ascii_lowercase();
        let (table, entry) = match lower.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => {
                check_name(&suffix[1..]).map_err(|e| malformed(pattern, e))?;
                (&mut self.wildcards, suffix.to_string())
            }
            Some(_) => {
                return Err(malformed(
                    pattern,
                    "a wildcard is `*.` followed by a name (`*.example.com`)",
                ));
            }
            None => {
                check_name(&lower).map_err(|e| malformed(pattern, e))?;
                (&mut self.exact, lower)
            }
        };
        if table.iter().any(|(known, _)| *known == entry) {
            return Err(format!(
                "server name pattern `{pattern}` is listed twice (patterns ignore case)"
            ));
        }
        table.push((entry, pool));
        Ok(())
    }

    /// The pool for a server name (`None`: no name); `None` when nothing
    /// matches and there is no default.
    pub fn pool_for(&self, name: Option<&str>) -> Option<PoolId> {
        let Some(name) = name else {
            return self.default;
        };
        let name = name.strip_suffix('.').unwrap_or(name).as_bytes();
        let exact = self
            .exact
            .iter()
            .find(|(known, _)| name.eq_ignore_ascii_case(known.as_bytes()));
        let wildcard = || {
            self.wildcards.iter().find(|(suffix, _)| {
                name.len() > suffix.len()
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            })
        };
        exact
            .or_else(wildcard)
            .map(|&(_, pool)| pool)
            .or(self.default)
    }
}

/// The error of a malformed pattern.
fn malformed(pattern: &str, reason: &str) -> String {
    format!("malformed server name pattern `{pattern}`: {reason}")
}

/// Checks a (lower-cased) DNS name: dot-separated labels of letters,
/// digits, `-` and `_`.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err("a name is 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err("every label (between dots) is 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a label holds only letters, digits, `-` and `_`");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmroute_policy::ConfigValue;

    const POOLS: &[&str] = &["a", "b", "eu", "fallback"];

    fn routes(config: &[(&str, &str)]) -> Result<Routes, String> {
        let config: Vec<(&str, ConfigValue)> = config
            .iter()
            .map(|&(k, v)| (k, ConfigValue::Text(v.to_string())))
            .collect();
        Routes::from_config(&InitContext::from_parts(POOLS, &config))
    }

    #[test]
    fn exact_then_longest_wildcard_then_default() {
        let r = routes(&[
            ("routes.A.Test", "a"),
            ("routes.*.b.test", "b"),
            ("routes.*.eu.b.test", "eu"),
            ("routes.eu.b.test", "a"),
            ("default", "fallback"),
        ])
        .unwrap();
        let pool = |name: Option<&str>| r.pool_for(name).map(|p| POOLS[p.index() as usize]);
        assert_eq!(pool(Some("a.test")), Some("a"));
        assert_eq!(pool(Some("A.TEST.")), Some("a"));
        assert_eq!(pool(Some("x.b.test")), Some("b"));
        assert_eq!(pool(Some("x.y.b.test")), Some("b"), "one or more labels");
        assert_eq!(pool(Some("x.eu.b.test")), Some("eu"), "longest suffix wins");
        assert_eq!(pool(Some("eu.b.test")), Some("a"), "exact beats wildcard");
        assert_eq!(
            pool(Some("b.test")),
            Some("fallback"),
            "not the bare suffix"
        );
        assert_eq!(pool(Some("xb.test")), Some("fallback"));
        assert_eq!(pool(None), Some("fallback"));
        let no_default = routes(&[("routes.a.test", "a")]).unwrap();
        assert_eq!(no_default.pool_for(Some("c.test")), None);
        assert_eq!(no_default.pool_for(None), None);
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |c: &[(&str, &str)]| routes(c).err().unwrap();
        assert!(err(&[("route.a.test", "a")]).starts_with("route.a.test: unknown key"));
        assert!(err(&[("routes.a.test", "nope")]).starts_with("routes.a.test: unknown pool"));
        assert!(err(&[("default", "nope")]).starts_with("default: unknown pool"));
        for bad in ["a..test", "*", "*.", "a.*.test", "*x.test", "a test", "-.é"] {
            let key = format!("routes.{bad}");
            let message = err(&[(&key, "a")]);
            assert!(
                message.starts_with(&format!("{key}: malformed server name pattern")),
                "{message}"
            );
        }
        assert!(err(&[("routes.a.test", "a"), ("routes.A.TEST", "b")]).contains("listed twice"));
        assert!(err(&[]).starts_with("routes: no route"));
        let wrong_type = Routes::from_config(&InitContext::from_parts(
            POOLS,
            &[("default", ConfigValue::Integer(1))],
        ));
        assert!(
            wrong_type
                .err()
                .unwrap()
                .starts_with("default: expected a string")
        );
    }
}
