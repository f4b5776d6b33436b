//! The config file: format, defaults and validation.
//!
//! A config is one TOML file (reference: docs/config.md). [`Config::load`]
//! reads, parses and validates it and returns either a complete [`Config`],
//! with every default filled in, or [`ConfigErrors`] listing *every*
//! problem found, each as one `FILE: key: reason` line, where `key` is a
//! path such as `listeners[0].policy` or `pools[1].backends[0].address`
//! (lists are indexed from 0 in file order).
//!
//! ```toml
//! [admin]                       # optional; address defaults to 127.0.0.1:9901
//! address = "127.0.0.1:9901"
//! token = "..."                 # optional; 16..=256 visible ASCII; see docs/operations.md
//!
//! [server]                      # optional
//! drain_timeout = "30s"         # default 30s, > 0: how long SIGTERM waits for in-flight requests
//! upgrade_socket = "/run/wasmroute/edge.sock"  # default: see docs/operations.md
//!
//! [access_log]                  # optional; no access log without it
//! path = "access.log"           # "-" = stdout; relative to the config file's folder
//! format = "json"               # json (default) | combined
//! queue = 8192                  # lines waiting for the writer per thread, 1..=1048576; more are dropped
//!
//! [policies]
//! dir = "policies.d"            # required; relative to the config file's folder
//! decision_timeout = "5ms"      # default 5ms, must be > 0
//! memory_limit = "16MiB"        # default 16MiB, 1MiB ..= 4GiB
//!
//! [[listeners]]                 # at least one
//! name = "edge"                 # unique, [A-Za-z0-9_.-]+
//! address = "127.0.0.1:8080"    # IP:port, unique unless the port is 0
//! protocol = "http"             # http (default) | https | tcp
//! policy = "content-router"     # <policies.dir>/<policy>.wasm
//! pools = ["web", "video"]      # defined pools; the first is the default
//! on_error = "fallback"         # fallback (default) | reject
//! backlog = 4096                # listen queue, 1..=65535; applies when bound
//! send_timeout = "60s"          # longest stall writing to a client; > 0
//! [listeners.policy_config]     # optional free-form table for the policy
//! video_prefix = "/video"
//! [listeners.shadow]            # optional (http, https): a candidate decides alongside, unserved
//! policy = "content-router-next" # required; another module than `policy`
//! sample = 1.0                  # share of requests compared, 0.0..=1.0 (default 1.0)
//! # decision_timeout = "5ms"    # default: policies.decision_timeout
//! # [listeners.shadow.policy_config]  # default: the listener's policy_config
//! [[listeners.certificates]]    # https only, and required there
//! cert = "certs/example.pem"    # relative to the config file's folder
//! key = "certs/example.key"
//! # https only: handshake_timeout = "10s" (default, > 0),
//! #             unknown_sni = "default" (default) | "refuse"
//! # http only:  redirect_to_https = 443 (answer 301 to https://host:443/path)
//! # [pools.tls] (optional: TLS to the pool's backends)
//! #   ca = "certs/backend-ca.pem"   # default: the system's roots
//! #   server_name = "api.internal"  # SNI and verified name; default: backend IP
//!
//! [[pools]]
//! name = "web"                  # unique, [A-Za-z0-9_.-]+
//! backends = [ { address = "127.0.0.1:9001", weight = 2 }, { address = "127.0.0.1:9002" } ]
//! [pools.health]                # optional active check
//! path = "/healthz"             # starts with '/'; absent: TCP connect check
//! interval = "1s"               # default 1s, > 0
//! timeout = "500ms"             # default 500ms, > 0
//! rise = 2                      # default 2, >= 1
//! fall = 2                      # default 2, >= 1
//! expect_status = "200-399"     # HTTP check: passing statuses (default 200-399)
//! expect_body = "ok"            # HTTP check: required body substring (optional)
//! jitter = "100ms"              # default interval/10, <= interval, "0s" = none
//! ```
//!
//! Timeouts, retries and passive health of a pool (all optional; the full
//! reference with the health state machine is `docs/config.md`):
//!
//! ```toml
//! [[pools]]
//! connect_timeout = "2s"        # default 2s, > 0
//! response_timeout = "30s"      # to the response head; default 30s; 504 past it
//! idle_timeout = "60s"          # longest pause in a response body; default 60s
//! retries = 2                   # default 2, <= 10, 0 = none
//! [pools.passive]               # outlier detection; on by default
//! enabled = true
//! consecutive_failures = 5      # default 5, 0 = rule off
//! error_rate_percent = 0        # default 0 (rule off), <= 100
//! min_requests = 20             # default 20, >= 1
//! ejection_time = "30s"         # default 30s, doubles per repeated ejection
//! max_ejection_time = "5m"      # default 5m, >= ejection_time
//! max_ejected_percent = 50      # default 50, <= 100
//! ```
//!
//! Value formats (see [`units`] for the details):
//! - durations: a number and a unit, `"250us"`, `"5ms"`, `"1.5s"`, `"2m"`
//!   (units ns, us, ms, s, m, h); bare numbers are refused;
//! - sizes: bytes as an integer or string (`1048576`), or with a unit:
//!   `KiB`/`MiB`/`GiB`/`TiB` (1024-based), `KB`/`MB`/`GB`/`TB` (1000-based);
//! - addresses: `IP:port` (`127.0.0.1:80`, `[::1]:80`); a backend's may
//!   also be `name:port` (`api.internal:8080`), resolved by `crate::dns`
//!   at load and every `[resolver] refresh` after:
//!
//! ```toml
//! [resolver]                    # optional
//! nameservers = ["10.0.0.2:53"] # IP:port each; default: the system's resolv.conf
//! refresh = "5s"                # default 5s, > 0; never longer than an answer's TTL
//! ```
//!
//! Unknown keys are errors everywhere except inside `policy_config`, so a
//! typo (`adress`) is reported instead of silently ignored. A TOML syntax
//! error stops parsing and is reported alone (key `(syntax)`); type errors
//! and unknown keys are each reported with their key path, and every other
//! value is still checked, all problems reported together (see `parse`).
//!
//! Whether each listener's policy file exists is checked separately by
//! [`Config::check_policy_files`], because policies may be written after
//! the config (the demo does) and the policy folder is watched anyway.

mod cidr;
mod error;
mod model;
mod parse;
mod raw;
pub mod units;
mod validate;
pub use validate::{DEFAULT_DECISION_TIMEOUT, DEFAULT_MEMORY_LIMIT};

#[cfg(test)]
mod tests;

use std::path::Path;

pub use cidr::Cidr;
pub use error::{ConfigError, ConfigErrors};
pub use model::{
    AccessLogConfig, AdminConfig, BackendConfig, CertificateConfig, Config, HEALTH_EXPECT_LIMIT,
    HealthConfig, HealthStep, ListenerConfig, LogFormat, LogTarget, NamedBackend, OnDown, OnError,
    PassiveConfig, PoliciesConfig, PoolConfig, Protocol, ProxyProtocol, ResolverConfig,
    ServerConfig, ShadowConfig, TcpTimeouts, UnknownSni, UpstreamConfig, UpstreamTlsConfig,
};
pub(crate) use parse::with_position;

impl Config {
    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `file` names it in errors and is the
    /// base for relative paths. Does not touch the filesystem.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
        let (raw, mut errors) = parse::parse_raw(text, file)?;
        let validated = validate::validate(raw, file);
        if errors.is_empty() {
            return validated;
        }
        // A key left out for its type error is not reported again as missing.
        if let Err(more) = validated {
            let new = more.errors.into_iter();
            let new: Vec<_> = new
                .filter(|e| !errors.iter().any(|t| t.key == e.key))
                .collect();
            errors.extend(new);
        }
        Err(ConfigErrors { errors })
    }

    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Where the module for `policy` is expected: `<policies.dir>/<policy>.wasm`.
    pub fn policy_path(&self, policy: &str) -> std::path::PathBuf {
        self.policies.dir.join(format!("{policy}.wasm"))
    }

    /// One error per policy module that is not a file: key
    /// `listeners[N].policy` for a listener's policy,
    /// `listeners[N].shadow.policy` for its shadow candidate; empty when
    /// all exist.
    pub fn check_policy_files(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            let shadow = listener
                .shadow
                .as_ref()
                .map(|s| ("shadow.policy", &s.policy));
            for (key, policy) in std::iter::once(("policy", &listener.policy)).chain(shadow) {
                let path = self.policy_path(policy);
                if !path.is_file() {
                    let reason = format!("policy `{policy}`: no module at {}", path.display());
                    errors.push(ConfigError::new(
                        &self.file,
                        format!("listeners[{i}].{key}"),
                        reason,
                    ));
                }
            }
        }
        errors
    }

    /// The policies of `listener`: its own, then its shadow candidate's.
    pub fn policies_of(listener: &ListenerConfig) -> impl Iterator<Item = &str> {
        let shadow = listener.shadow.as_ref().map(|s| s.policy.as_str());
        std::iter::once(listener.policy.as_str()).chain(shadow)
    }
}
