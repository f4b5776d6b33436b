//! What a policy gets at init: the listener's pools and its `policy_config`.

use crate::PoolId;
use std::fmt::Write as _;

/// A value from the listener's `policy_config` table, as the host sends it.
/// Nested tables arrive flattened into dotted keys (`routes.video`).
pub use crate::bindings::types::ConfigValue;

/// Everything [`Policy::init`](crate::Policy::init) gets: the listener's
/// pools and its `policy_config` table.
#[derive(Debug, Clone)]
pub struct InitContext {
    pools: Vec<String>,
    config: Config,
}

impl InitContext {
    /// A context as the host would hand it: pool names (index = pool id,
    /// the first is the default pool) and the config entries. The SDK builds
    /// it from the host's arguments; it is public so that policy logic can
    /// be unit-tested natively.
    pub fn new(pools: Vec<String>, config: Vec<(String, ConfigValue)>) -> Self {
        InitContext {
            pools,
            config: Config { entries: config },
        }
    }

    /// [`InitContext::new`] from borrowed parts, for native unit tests of a
    /// policy: `InitContext::from_parts(&["web"], &[("pool", ConfigValue::Text("web".into()))])`.
    pub fn from_parts(pools: &[&str], config: &[(&str, ConfigValue)]) -> Self {
        InitContext::new(
            pools.iter().map(|p| (*p).to_owned()).collect(),
            config
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    /// The names of the listener's pools, in order: index `i` is
    /// `PoolId(i)`, the first is the default pool.
    pub fn pools(&self) -> &[String] {
        &self.pools
    }

    /// Resolves a pool name to its id. The error names the pool and lists
    /// the listener's pools.
    pub fn pool(&self, name: &str) -> Result<PoolId, String> {
        match self.pools.iter().position(|pool| pool == name) {
            Some(index) => Ok(PoolId(index as u32)),
            None => Err(format!(
                "unknown pool `{name}`: this listener's pools are {}",
                list(&self.pools)
            )),
        }
    }

    /// The listener's `policy_config` table.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The pool named by the string config key `key` (`pool = "web"`), or
    /// the listener's default (first) pool when the key is absent. Errors
    /// start with the key.
    pub fn config_pool(&self, key: &str) -> Result<PoolId, String> {
        match self.config.get_str(key)? {
            Some(name) => self.pool(name).map_err(|e| format!("{key}: {e}")),
            None => Ok(PoolId::DEFAULT),
        }
    }
}

/// The listener's `policy_config` table, with typed getters.
///
/// Every getter returns `Ok(None)` for an absent key and an error naming
/// the key when the value has the wrong type, so `init` can pass errors on
/// with `?`. Nested TOML tables arrive flattened into dotted keys: `[x]
/// y = 1` is the key `x.y`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: Vec<(String, ConfigValue)>,
}

impl Config {
    /// The raw value of a key, if present.
    pub fn get(&self, key: &str) -> Option<&ConfigValue> {
        self.entries
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    /// Every key, in the order the host sent them.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_str())
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(ConfigValue::Text(text)) => Ok(Some(text)),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    }

    /// An integer value.
    pub fn get_int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(ConfigValue::Integer(n)) => Ok(Some(*n)),
            Some(other) => Err(wrong_type(key, "an integer", other)),
        }
    }

    /// An integer value within `min..=max`; the error names the key and
    /// the range.
    pub fn get_int_in(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, String> {
        match self.get_int(key)? {
            Some(n) if !(min..=max).contains(&n) => {
                Err(format!("{key}: must be between {min} and {max}, got {n}"))
            }
            other => Ok(other),
        }
    }

    /// A boolean value.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(ConfigValue::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(key, "a boolean", other)),
        }
    }

    /// A float value. An integer is accepted too (`ratio = 1` means 1.0).
    pub fn get_float(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(ConfigValue::Float(x)) => Ok(Some(*x)),
            Some(ConfigValue::Integer(n)) => Ok(Some(*n as f64)),
            Some(other) => Err(wrong_type(key, "a number", other)),
        }
    }

    /// A float value (or an integer) within `min..=max`; the error names
    /// the key and the range.
    pub fn get_float_in(&self, key: &str, min: f64, max: f64) -> Result<Option<f64>, String> {
        match self.get_float(key)? {
            Some(x) if !(min..=max).contains(&x) => Err(format!(
                "{key}: must be between {} and {}, got {}",
                Decimal(min),
                Decimal(max),
                Decimal(x)
            )),
            other => Ok(other),
        }
    }

    /// An array value. The host renders every element as text (strings as
    /// they are, numbers and booleans in TOML notation).
    pub fn get_str_list(&self, key: &str) -> Result<Option<&[String]>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(ConfigValue::TextList(items)) => Ok(Some(items)),
            Some(other) => Err(wrong_type(key, "an array", other)),
        }
    }

    /// Fails on the first key not in `known`, naming it and listing the
    /// known keys: call it first in `init` so that a typo in the config is
    /// reported instead of silently ignored.
    pub fn deny_unknown_keys<S: AsRef<str>>(&self, known: &[S]) -> Result<(), String> {
        match self
            .keys()
            .find(|key| !known.iter().any(|k| k.as_ref() == *key))
        {
            None => Ok(()),
            Some(key) if known.is_empty() => {
                Err(format!("{key}: unknown key (this policy takes no config)"))
            }
            Some(key) => Err(format!("{key}: unknown key (known keys: {})", list(known))),
        }
    }
}

fn wrong_type(key: &str, expected: &str, found: &ConfigValue) -> String {
    let found = match found {
        ConfigValue::Text(text) => format!("the string {text:?}"),
        ConfigValue::Integer(n) => format!("the integer {n}"),
        ConfigValue::Float(x) => format!("the float {}", Decimal(*x)),
        ConfigValue::Boolean(b) => format!("the boolean {b}"),
        ConfigValue::TextList(items) => format!("an array of {} items", items.len()),
    };
    format!("{key}: expected {expected}, found {found}")
}

/// A float in error messages, written with at most 9 decimals by integer
/// arithmetic. `{}` of an `f64` would link core's shortest-float printer
/// (about 17 KB of code, a third of a small policy), and every byte of a
/// module is compiled again on each hot swap.
struct Decimal(f64);

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SCALE: u64 = 1_000_000_000;
        let x = self.0;
        if x.is_nan() {
            return f.write_str("nan");
        }
        if x.is_sign_negative() && x != 0.0 {
            f.write_char('-')?;
        }
        let abs = x.abs();
        if abs.is_infinite() {
            return f.write_str("inf");
        }
        if abs >= 1e9 {
            // Saturates beyond u64: such a value is out of any range anyway.
            return write!(f, "{}", abs as u64);
        }
        let scaled = (abs * SCALE as f64).round() as u64;
        let (whole, mut fraction) = (scaled / SCALE, scaled % SCALE);
        write!(f, "{whole}")?;
        if fraction == 0 {
            return Ok(());
        }
        let mut digits = 9;
        while fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        write!(f, ".{fraction:0digits$}")
    }
}

/// `a, b, c` (or `none` when empty).
fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}", item.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> InitContext {
        InitContext::new(
            vec!["web".into(), "video".into()],
            vec![
                ("name".into(), ConfigValue::Text("x".into())),
                ("count".into(), ConfigValue::Integer(3)),
                ("ratio".into(), ConfigValue::Float(0.5)),
                ("on".into(), ConfigValue::Boolean(true)),
                (
                    "list".into(),
                    ConfigValue::TextList(vec!["a".into(), "1".into()]),
                ),
                ("routes.video".into(), ConfigValue::Text("/v".into())),
            ],
        )
    }

    #[test]
    fn pools_resolve_by_name() {
        let ctx = ctx();
        assert_eq!(ctx.pools(), ["web", "video"]);
        assert_eq!(ctx.pool("web"), Ok(PoolId::DEFAULT));
        assert_eq!(ctx.pool("video"), Ok(PoolId(1)));
        let err = ctx.pool("billing").unwrap_err();
        assert!(
            err.contains("`billing`") && err.contains("web, video"),
            "{err}"
        );
    }

    #[test]
    fn typed_getters() {
        let ctx = ctx();
        let config = ctx.config();
        assert_eq!(config.get_str("name"), Ok(Some("x")));
        assert_eq!(config.get_str("routes.video"), Ok(Some("/v")));
        assert_eq!(config.get_int("count"), Ok(Some(3)));
        assert_eq!(config.get_float("ratio"), Ok(Some(0.5)));
        assert_eq!(config.get_float("count"), Ok(Some(3.0)));
        assert_eq!(config.get_bool("on"), Ok(Some(true)));
        assert_eq!(
            config.get_str_list("list"),
            Ok(Some(&["a".to_string(), "1".to_string()][..]))
        );
        assert_eq!(config.get_str("absent"), Ok(None));
        assert_eq!(config.get_int("absent"), Ok(None));
        assert_eq!(
            config.keys().collect::<Vec<_>>(),
            ["name", "count", "ratio", "on", "list", "routes.video"]
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let ctx = ctx();
        let config = ctx.config();
        assert_eq!(
            config.get_str("count"),
            Err("count: expected a string, found the integer 3".to_string())
        );
        assert_eq!(
            config.get_int("name"),
            Err("name: expected an integer, found the string \"x\"".to_string())
        );
        assert_eq!(
            config.get_bool("ratio"),
            Err("ratio: expected a boolean, found the float 0.5".to_string())
        );
        assert!(config.get_float("on").unwrap_err().starts_with("on: "));
        assert!(
            config
                .get_str_list("name")
                .unwrap_err()
                .starts_with("name: ")
        );
    }

    #[test]
    fn floats_in_messages_without_core_float_printing() {
        let shown = |x: f64| Decimal(x).to_string();
        assert_eq!(shown(0.5), "0.5");
        assert_eq!(shown(1.25), "1.25");
        assert_eq!(shown(-3.0), "-3");
        assert_eq!(shown(0.0), "0");
        assert_eq!(shown(-0.0), "0");
        assert_eq!(shown(1e-9), "0.000000001");
        assert_eq!(shown(0.1 + 0.2), "0.3");
        assert_eq!(shown(123_456.000_5), "123456.0005");
        assert_eq!(shown(3e12), "3000000000000");
        assert_eq!(shown(f64::NEG_INFINITY), "-inf");
        assert_eq!(shown(f64::NAN), "nan");
    }

    #[test]
    fn ranged_floats() {
        let ctx = ctx();
        let config = ctx.config();
        assert_eq!(config.get_float_in("ratio", 0.0, 1.0), Ok(Some(0.5)));
        assert_eq!(config.get_float_in("absent", 0.0, 1.0), Ok(None));
        assert_eq!(
            config.get_float_in("ratio", 0.75, 1.5),
            Err("ratio: must be between 0.75 and 1.5, got 0.5".to_string())
        );
        assert_eq!(
            config.get_float_in("count", 0.0, 1.0),
            Err("count: must be between 0 and 1, got 3".to_string())
        );
    }

    #[test]
    fn ranged_ints_and_config_pools() {
        let ctx = ctx();
        let config = ctx.config();
        assert_eq!(config.get_int_in("count", 1, 3), Ok(Some(3)));
        assert_eq!(config.get_int_in("absent", 1, 3), Ok(None));
        assert_eq!(
            config.get_int_in("count", 4, 10),
            Err("count: must be between 4 and 10, got 3".to_string())
        );
        assert_eq!(ctx.config_pool("absent"), Ok(PoolId::DEFAULT));
        assert!(
            ctx.config_pool("name")
                .unwrap_err()
                .starts_with("name: unknown pool `x`")
        );
        assert!(
            ctx.config_pool("count")
                .unwrap_err()
                .starts_with("count: expected a string")
        );
    }

    #[test]
    fn unknown_keys_are_reported() {
        let ctx = ctx();
        let config = ctx.config();
        let all = ["name", "count", "ratio", "on", "list", "routes.video"];
        assert_eq!(config.deny_unknown_keys(&all), Ok(()));
        assert_eq!(
            config.deny_unknown_keys(&["name", "count"]),
            Err("ratio: unknown key (known keys: name, count)".to_string())
        );
        assert_eq!(
            config.deny_unknown_keys::<&str>(&[]),
            Err("name: unknown key (this policy takes no config)".to_string())
        );
        assert_eq!(Config::default().deny_unknown_keys::<&str>(&[]), Ok(()));
    }
}
