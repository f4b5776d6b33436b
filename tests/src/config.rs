//! A small builder for `wasmroute.toml` (the contract in docs/config.md). Listener
//! addresses are always `127.0.0.1:0`; the proxy reports the bound port.

use std::fmt::Write;
use std::net::SocketAddr;

use crate::backend::Backend;

/// TOML basic-string quoting (our names and paths are plain ASCII).
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    name: String,
    protocol: &'static str,
    policy: String,
    pools: Vec<String>,
    on_error: Option<String>,
    policy_config: Vec<(String, String)>,
    extra: String,
}

impl ListenerSpec {
    /// An HTTP listener on `127.0.0.1:0` running `policy` over `pools`.
    pub fn new(name: &str, policy: &str, pools: &[&str]) -> Self {
        ListenerSpec {
            name: name.into(),
            protocol: "http",
            policy: policy.into(),
            pools: pools.iter().map(|p| p.to_string()).collect(),
            on_error: None,
            policy_config: Vec::new(),
            extra: String::new(),
        }
    }

    /// `protocol = "tcp"`: a listener that relays TCP connections.
    pub fn tcp(mut self) -> Self {
        self.protocol = "tcp";
        self
    }

    /// `on_error = "fallback" | "reject"`.
    pub fn on_error(mut self, on_error: &str) -> Self {
        self.on_error = Some(on_error.into());
        self
    }

    /// A string entry of `[listeners.policy_config]`.
    pub fn policy_config(mut self, key: &str, value: &str) -> Self {
        self.policy_config.push((key.into(), quote(value)));
        self
    }

    /// An entry of `[listeners.policy_config]` with a value written as TOML
    /// (`"3"`, `"[\"a\", \"b\"]"`, `"true"`).
    pub fn policy_config_toml(mut self, key: &str, toml_value: &str) -> Self {
        self.policy_config.push((key.into(), toml_value.into()));
        self
    }

    /// TOML lines written verbatim into the listener's table, after its
    /// own keys and before `[listeners.policy_config]` (keys first, then
    /// any sub-tables such as `[listeners.retry]`).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml.trim_end());
        self.extra.push('\n');
        self
    }
}

/// One `[[pools]]` entry.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    name: String,
    backends: Vec<(SocketAddr, Option<u32>)>,
    extra: String,
}

impl PoolSpec {
    /// A pool of the given backends (weight unset).
    pub fn new(name: &str, backends: &[&Backend]) -> Self {
        PoolSpec {
            name: name.into(),
            backends: backends.iter().map(|b| (b.addr(), None)).collect(),
            extra: String::new(),
        }
    }

    /// Adds a backend by address.
    pub fn address(mut self, addr: SocketAddr) -> Self {
        self.backends.push((addr, None));
        self
    }

    /// Adds a backend with a weight.
    pub fn weighted(mut self, backend: &Backend, weight: u32) -> Self {
        self.backends.push((backend.addr(), Some(weight)));
        self
    }

    /// TOML lines written verbatim into the pool's table after `backends`
    /// (keys first, then sub-tables such as `[pools.health]`).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml.trim_end());
        self.extra.push('\n');
        self
    }
}

/// The decision deadline the builder writes unless told otherwise. The
/// deadline counts the guest's CPU time, but its hard cap is four times it
/// in wall time, so on a loaded 2-core machine a thread descheduled for
/// more than 20 ms would still miss the 5 ms default and trigger
/// `on_error`, which tests of exact routing must not see.
pub const TEST_DECISION_TIMEOUT: &str = "250ms";

/// A whole config file.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    listeners: Vec<ListenerSpec>,
    pools: Vec<PoolSpec>,
    decision_timeout: Option<String>,
    admin: Option<String>,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder {
            listeners: Vec::new(),
            pools: Vec::new(),
            decision_timeout: Some(TEST_DECISION_TIMEOUT.into()),
            admin: None,
        }
    }
}

impl ConfigBuilder {
    /// An empty config: `[policies] dir = "policies"`, `decision_timeout =`
    /// [`TEST_DECISION_TIMEOUT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a listener.
    pub fn listener(mut self, listener: ListenerSpec) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Adds a pool.
    pub fn pool(mut self, pool: PoolSpec) -> Self {
        self.pools.push(pool);
        self
    }

    /// `[policies] decision_timeout`.
    pub fn decision_timeout(mut self, timeout: &str) -> Self {
        self.decision_timeout = Some(timeout.into());
        self
    }

    /// An `[admin]` section on `127.0.0.1:0`, with `extra` keys (e.g.
    /// `token = "..."`).
    pub fn admin(mut self, extra: &str) -> Self {
        self.admin = Some(extra.trim_end().to_owned());
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(extra) = &self.admin {
            let _ = writeln!(out, "[admin]\naddress = \"127.0.0.1:0\"\n{extra}\n");
        }
        out.push_str("[policies]\ndir = \"policies\"\n");
        if let Some(timeout) = &self.decision_timeout {
            let _ = writeln!(out, "decision_timeout = {}", quote(timeout));
        }
        for l in &self.listeners {
            let pools: Vec<String> = l.pools.iter().map(|p| quote(p)).collect();
            let _ = write!(
                out,
                "\n[[listeners]]\nname = {}\naddress = \"127.0.0.1:0\"\nprotocol = {}\npolicy = {}\npools = [{}]\n",
                quote(&l.name),
                quote(l.protocol),
                quote(&l.policy),
                pools.join(", ")
            );
            if let Some(on_error) = &l.on_error {
                let _ = writeln!(out, "on_error = {}", quote(on_error));
            }
            out.push_str(&l.extra);
            if !l.policy_config.is_empty() {
                out.push_str("[listeners.policy_config]\n");
                for (key, value) in &l.policy_config {
                    let _ = writeln!(out, "{key} = {value}");
                }
            }
        }
        for p in &self.pools {
            let backends: Vec<String> = p
                .backends
                .iter()
                .map(|(addr, weight)| match weight {
                    Some(w) => format!("{{ address = \"{addr}\", weight = {w} }}"),
                    None => format!("{{ address = \"{addr}\" }}"),
                })
                .collect();
            let _ = write!(
                out,
                "\n[[pools]]\nname = {}\nbackends = [{}]\n",
                quote(&p.name),
                backends.join(", ")
            );
            out.push_str(&p.extra);
        }
        out
    }
}
