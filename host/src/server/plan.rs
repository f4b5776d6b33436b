//! Turning a config into what the proxy serves, without touching what is
//! serving: compile the policies it names (reusing unchanged modules),
//! build its pools (carrying live stats over), bind each listener's policy
//! to its pools and `policy_config`, and prove each binding by running its
//! `init`. Only a plan that succeeded as a whole is committed, so a bad
//! config or module never replaces a good one. `wasmroute check` runs the
//! same planning and stops before binding sockets.
//!
//! Planning reports as much as it can in one run: missing module files,
//! protocols, certificates and backend TLS are checked first, then every
//! module that exists is compiled and every listener whose module compiled
//! is bound (its `init` run), and all the errors come back together.
//!
//! A module file that was deleted while serving is not an error on
//! reload: the listener keeps the module it serves, and the plan says so
//! in [`Plan::kept`], so the rest of the new config still applies.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::access_log::AccessLog;
use crate::config::{Config, ConfigError, ListenerConfig, Protocol, ShadowConfig};
use crate::http::metrics::ListenerMetrics;
use crate::http::shadow::Shadow;
use crate::listener::ListenerState;
use crate::metrics::Counter;
use crate::policy::{
    BoundPolicy, Capabilities, CompiledPolicy, PolicyEngine, PolicyLimits, SharedCounters,
};
use crate::pool::BackendPool;
use crate::tls::Frontend;
use crate::upstream::tls::UpstreamTlsPlan;

/// Everything a config needs, ready to be committed.
pub struct Plan {
    /// The config this plan is for.
    pub config: Config,
    /// Compiled modules by policy name (only those the listeners use).
    pub modules: HashMap<String, Arc<CompiledPolicy>>,
    /// Which modules were compiled by this plan (not reused).
    pub fresh_modules: Vec<Arc<CompiledPolicy>>,
    /// Pools by name.
    pub pools: HashMap<String, Arc<BackendPool>>,
    /// Shared policy counters by listener name.
    pub counters: HashMap<String, Arc<SharedCounters>>,
    /// Listener states in config order.
    pub listeners: Vec<ListenerState>,
    /// Why a listener keeps its serving module (its file is gone), one
    /// line each, for the log.
    pub kept: Vec<String>,
    /// The access log, when the config has one.
    pub access_log: Option<Arc<AccessLog>>,
    /// Shadow candidates that could not be bound (their `init` refused the
    /// listener, or they do not decide requests), key
    /// `listeners[N].shadow.policy`: their listeners serve, every sampled
    /// request counts as a shadow `error`; `check` reports them as errors.
    pub shadow_failures: Vec<ConfigError>,
}

/// The parts of the running server a plan may reuse.
#[derive(Default)]
pub struct Reusable<'a> {
    /// Modules serving now, by name.
    pub modules: Option<&'a HashMap<String, Arc<CompiledPolicy>>>,
    /// Pools serving now, by name.
    pub pools: Option<&'a HashMap<String, Arc<BackendPool>>>,
    /// Shared counters now, by listener name.
    pub counters: Option<&'a HashMap<String, Arc<SharedCounters>>>,
    /// Listener metrics now, by listener name.
    pub metrics: Option<&'a HashMap<String, Arc<ListenerMetrics>>>,
    /// The access log now (kept when `[access_log]` is unchanged).
    pub access_log: Option<&'a Arc<AccessLog>>,
    /// Where access logs count the lines they drop.
    pub access_log_dropped: Option<&'a Arc<Counter>>,
}

/// What a listener keeps from its previous binding: the policy's shared
/// counters, and its metrics (those that still apply); and the server's
/// access log it writes to.
pub struct Kept {
    /// The listener's shared policy counters.
    pub counters: Arc<SharedCounters>,
    /// Its metrics before this binding.
    pub metrics: Option<Arc<ListenerMetrics>>,
    /// The access log of the config being bound.
    pub access_log: Option<Arc<AccessLog>>,
}

/// The limits the config sets for every policy instance.
pub fn limits(config: &Config) -> PolicyLimits {
    PolicyLimits {
        decision_timeout: config.policies.decision_timeout,
        memory_limit: usize::try_from(config.policies.memory_limit).unwrap_or(usize::MAX),
    }
}

impl Plan {
    /// Builds the plan, or every reason it cannot be built, each as a
    /// `FILE: key: reason` error. Blocking: compiles and instantiates.
    pub fn build(
        config: Config,
        engine: &PolicyEngine,
        reuse: Reusable<'_>,
    ) -> Result<Plan, Vec<ConfigError>> {
        let serving = reuse.modules;
        let mut errors: Vec<ConfigError> = (config.check_policy_files().into_iter())
            .filter(|error| !kept_module(&config, &error.key, serving))
            .collect();
        let frontends = build_frontends(&config, &mut errors);
        let upstream_tls = UpstreamTlsPlan::build(&config).unwrap_or_else(|problems| {
            errors.extend(problems.into_iter().map(|problem| ConfigError {
                file: config.file.clone(),
                key: problem.key,
                reason: problem.reason,
            }));
            UpstreamTlsPlan::default()
        });
        let access_log = open_access_log(&config, &reuse, &mut errors);
        let mut kept = Vec::new();
        let (modules, fresh_modules) =
            compile_modules(&config, engine, serving, &mut errors, &mut kept);
        let pools: HashMap<String, Arc<BackendPool>> = config
            .pools
            .iter()
            .map(|pool| {
                let previous = reuse.pools.and_then(|p| p.get(&pool.name)).map(Arc::as_ref);
                (
                    pool.name.clone(),
                    Arc::new(BackendPool::build(pool, previous, &upstream_tls)),
                )
            })
            .collect();
        let counters: HashMap<String, Arc<SharedCounters>> = config
            .listeners
            .iter()
            .map(|l| {
                let previous = reuse.counters.and_then(|c| c.get(&l.name));
                (l.name.clone(), previous.cloned().unwrap_or_default())
            })
            .collect();
        let mut listeners = Vec::new();
        let mut shadow_failures = Vec::new();
        for ((index, listener), frontend) in config.listeners.iter().enumerate().zip(frontends) {
            // A module that is missing or did not compile is reported.
            if !modules.contains_key(&listener.policy) {
                continue;
            }
            let kept = Kept {
                counters: Arc::clone(&counters[&listener.name]),
                metrics: reuse.metrics.and_then(|m| m.get(&listener.name)).cloned(),
                access_log: access_log.clone(),
            };
            match bind_listener(&config, index, listener, &modules, &pools, kept, frontend) {
                Ok(state) => {
                    if let Some(reason) = state.shadow.as_ref().and_then(Shadow::failure) {
                        let key = format!("listeners[{index}].shadow.policy");
                        shadow_failures.push(ConfigError::new(&config.file, key, reason));
                    }
                    listeners.push(state);
                }
                Err(error) => errors.push(error),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Plan {
            config,
            modules,
            fresh_modules,
            pools,
            counters,
            listeners,
            kept,
            access_log,
            shadow_failures,
        })
    }
}

/// Whether the error at `key` (`listeners[N].policy` or
/// `listeners[N].shadow.policy`: no module file) is for a policy that is
/// serving now, so the listener keeps that module.
fn kept_module(config: &Config, key: &str, serving: Option<&Modules>) -> bool {
    let Some(rest) = key.strip_prefix("listeners[") else {
        return false;
    };
    let Some((index, field)) = rest.split_once(']') else {
        return false;
    };
    let listener = index
        .parse::<usize>()
        .ok()
        .and_then(|i| config.listeners.get(i));
    let policy = listener.and_then(|l| match field {
        ".policy" => Some(l.policy.as_str()),
        ".shadow.policy" => l.shadow.as_ref().map(|s| s.policy.as_str()),
        _ => None,
    });
    policy.is_some_and(|p| serving.is_some_and(|m| m.contains_key(p)))
}

/// The config's access log: the running one when `[access_log]` is
/// unchanged, else opened now (an unwritable path is an error of
/// `access_log.path`).
fn open_access_log(
    config: &Config,
    reuse: &Reusable<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<AccessLog>> {
    let wanted = config.access_log.as_ref()?;
    if let Some(running) = reuse.access_log.filter(|log| log.config() == wanted) {
        return Some(Arc::clone(running));
    }
    let dropped = reuse.access_log_dropped.cloned().unwrap_or_default();
    match AccessLog::open(wanted, dropped) {
        Ok(log) => Some(Arc::new(log)),
        Err(reason) => {
            errors.push(ConfigError::new(&config.file, "access_log.path", reason));
            None
        }
    }
}

/// Binds the listener's policy (and its shadow candidate, when it has
/// one) from `modules` and runs their `init` once. A live policy that
/// cannot serve is an error; a candidate that cannot is not (the listener
/// serves, [`Shadow::failure`] says why the candidate does not).
pub fn bind_listener(
    config: &Config,
    index: usize,
    listener: &ListenerConfig,
    modules: &Modules,
    pools: &HashMap<String, Arc<BackendPool>>,
    kept: Kept,
    frontend: Frontend,
) -> Result<ListenerState, ConfigError> {
    let listener_pools: Arc<[Arc<BackendPool>]> = listener
        .pools
        .iter()
        .map(|name| Arc::clone(&pools[name]))
        .collect();
    let shadow_name = listener.shadow.as_ref().map(|s| s.policy.as_str());
    let metrics = ListenerMetrics::build(
        &listener.policy,
        shadow_name,
        &listener_pools,
        kept.metrics.as_deref(),
    );
    let module = Arc::clone(&modules[&listener.policy]);
    let bound = BoundPolicy::new(
        module,
        Arc::clone(&listener_pools),
        kept.counters,
        &listener.policy_config,
        limits(config),
    )
    .with_metrics(Arc::clone(&metrics.decisions));
    bound.validate().map_err(|error| ConfigError {
        file: config.file.clone(),
        key: format!("listeners[{index}].policy_config"),
        reason: format!(
            "policy `{}` refused listener `{}`: {error}",
            listener.policy, listener.name
        ),
    })?;
    check_capabilities(&bound, listener.protocol).map_err(|reason| ConfigError {
        file: config.file.clone(),
        key: format!("listeners[{index}].policy"),
        reason: format!("listener `{}`: {reason}", listener.name),
    })?;
    let shadow = (listener.shadow.as_ref())
        .zip(metrics.shadow.clone())
        .map(|(shadow, record)| {
            let candidate = bind_candidate(config, listener, shadow, modules, &listener_pools);
            Shadow::new(candidate.map_err(Arc::from), shadow.sample, record)
        });
    Ok(ListenerState {
        name: listener.name.as_str().into(),
        policy: Arc::new(bound),
        on_error: listener.on_error,
        send_timeout: listener.send_timeout,
        frontend,
        metrics: Arc::new(metrics),
        access_log: kept.access_log,
        accept_proxy: (listener.accept_proxy_protocol)
            .then(|| listener.trusted_proxies.as_slice().into()),
        tcp: (listener.protocol == Protocol::Tcp).then_some(listener.tcp),
        shadow,
    })
}

/// The listener's shadow candidate bound like its policy (its own
/// instances, breaker, counters and deadline), or why it cannot serve.
fn bind_candidate(
    config: &Config,
    listener: &ListenerConfig,
    shadow: &ShadowConfig,
    modules: &Modules,
    pools: &Arc<[Arc<BackendPool>]>,
) -> Result<Arc<BoundPolicy>, String> {
    let name = &shadow.policy;
    let module = modules
        .get(name)
        .ok_or_else(|| format!("shadow policy `{name}`: its module is not loaded"))?;
    let mut limits = limits(config);
    if let Some(timeout) = shadow.decision_timeout {
        limits.decision_timeout = timeout;
    }
    let counters = Arc::default();
    let bound = BoundPolicy::new(
        Arc::clone(module),
        Arc::clone(pools),
        counters,
        &shadow.policy_config,
        limits,
    );
    let refused = |why: String| {
        format!(
            "shadow policy `{name}` refused listener `{}`: {why}",
            listener.name
        )
    };
    bound
        .validate()
        .map_err(|error| refused(error.to_string()))?;
    check_capabilities(&bound, listener.protocol).map_err(refused)?;
    Ok(Arc::new(bound))
}

/// Whether the validated `bound` policy decides what a `protocol`
/// listener asks of it: TCP connections, or HTTP requests; the reason,
/// naming the module and its interface version, when it does not.
pub fn check_capabilities(bound: &BoundPolicy, protocol: Protocol) -> Result<(), String> {
    let capabilities = bound.capabilities().unwrap_or(Capabilities::REQUESTS);
    let module = &bound.module;
    let interface = module.interface();
    let (needed, what) = match protocol {
        Protocol::Tcp => (Capabilities::CONNECTIONS, "TCP connections"),
        Protocol::Http | Protocol::Https => (Capabilities::REQUESTS, "HTTP requests"),
    };
    if capabilities.contains(needed) {
        return Ok(());
    }
    let why = match (protocol, interface) {
        (Protocol::Tcp, "0.2") => "wasmroute:policy@0.2 modules decide HTTP requests only",
        (Protocol::Tcp, _) => "its policy type does not implement ConnectionPolicy",
        _ => "its capabilities leave out `requests`",
    };
    Err(format!(
        "module `{}` (wasmroute:policy@{interface}) does not decide {what}: {why}",
        module.name
    ))
}

/// Each listener's frontend, loading and checking its certificates; the
/// problems go to `errors` as `listeners[i].certificates[j].cert: FILE: reason`.
fn build_frontends(config: &Config, errors: &mut Vec<ConfigError>) -> Vec<Frontend> {
    let listeners = config.listeners.iter().enumerate();
    listeners
        .map(|(index, listener)| {
            Frontend::build(listener).unwrap_or_else(|problems| {
                errors.extend(problems.into_iter().map(|problem| ConfigError {
                    file: config.file.clone(),
                    key: format!("listeners[{index}].{}", problem.key),
                    reason: problem.reason,
                }));
                Frontend::Plain
            })
        })
        .collect()
}

/// Compiled modules by policy name.
pub type Modules = HashMap<String, Arc<CompiledPolicy>>;

/// Compiles each listener's module once (reusing unchanged ones). A
/// module whose file is gone while it serves is reused and noted in
/// `kept`; a missing file otherwise was reported by `check_policy_files`.
fn compile_modules(
    config: &Config,
    engine: &PolicyEngine,
    current: Option<&Modules>,
    errors: &mut Vec<ConfigError>,
    kept: &mut Vec<String>,
) -> (Modules, Vec<Arc<CompiledPolicy>>) {
    let mut modules = HashMap::new();
    let mut fresh = Vec::new();
    let uses = config
        .listeners
        .iter()
        .enumerate()
        .flat_map(|(index, listener)| {
            let shadow = listener
                .shadow
                .as_ref()
                .map(|s| (&s.policy, "shadow.policy"));
            let uses = std::iter::once((&listener.policy, "policy")).chain(shadow);
            uses.map(move |(policy, key)| (index, listener, policy, key))
        });
    for (index, listener, policy, key) in uses {
        if modules.contains_key(policy) {
            continue;
        }
        let path = config.policy_path(policy);
        let current = current.and_then(|m| m.get(policy));
        if !path.is_file() {
            if let Some(current) = current {
                kept.push(format!(
                    "listener `{}`: no module at {}; it keeps serving policy `{}` version {} (sha256 {}) until the file is back",
                    listener.name,
                    path.display(),
                    policy,
                    current.version,
                    current.short_digest()
                ));
                modules.insert(policy.clone(), Arc::clone(current));
            }
            continue;
        }
        match load_module(engine, policy, &path, current) {
            Ok((module, is_fresh)) => {
                if is_fresh {
                    fresh.push(Arc::clone(&module));
                }
                modules.insert(policy.clone(), module);
            }
            Err(reason) => errors.push(ConfigError {
                file: config.file.clone(),
                key: format!("listeners[{index}].{key}"),
                reason,
            }),
        }
    }
    (modules, fresh)
}

/// A module file's bytes and SHA-256.
pub fn file_digest(path: &Path) -> std::io::Result<(Vec<u8>, [u8; 32])> {
    let bytes = std::fs::read(path)?;
    let digest = Sha256::digest(&bytes).into();
    Ok((bytes, digest))
}

/// Reads and compiles a module file, reusing `current` when the bytes are
/// unchanged. Returns the module and whether it was compiled now.
pub fn load_module(
    engine: &PolicyEngine,
    name: &str,
    path: &Path,
    current: Option<&Arc<CompiledPolicy>>,
) -> Result<(Arc<CompiledPolicy>, bool), String> {
    let (bytes, digest) = file_digest(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(current) = current.filter(|m| m.digest == digest) {
        return Ok((Arc::clone(current), false));
    }
    let module = engine
        .compile_with_digest(name, &bytes, digest)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((Arc::new(module), true))
}
