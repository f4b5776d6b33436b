//! Turning a config into what the proxy serves, without touching what is
//! serving: compile the policies it names (reusing unchanged modules),
//! build its pools (carrying live stats over), bind each listener's policy
//! to its pools and `policy_config`, and prove each binding by running its
//! `init`. Only a plan that succeeded as a whole is committed, so a bad
//! config or module never replaces a good one. `wasmroute check` runs the
//! same planning and stops before binding sockets.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError, ListenerConfig, Protocol};
use crate::listener::ListenerState;
use crate::policy::{BoundPolicy, CompiledPolicy, PolicyEngine, PolicyLimits};
use crate::pool::BackendPool;

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
    /// Listener states in config order.
    pub listeners: Vec<ListenerState>,
}

/// The parts of the running server a plan may reuse.
#[derive(Default)]
pub struct Reusable<'a> {
    /// Modules serving now, by name.
    pub modules: Option<&'a HashMap<String, Arc<CompiledPolicy>>>,
    /// Pools serving now, by name.
    pub pools: Option<&'a HashMap<String, Arc<BackendPool>>>,
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
        let mut errors = config.check_policy_files();
        errors.extend(unsupported_protocols(&config));
        if !errors.is_empty() {
            return Err(errors);
        }
        let (modules, fresh_modules) = compile_modules(&config, engine, reuse.modules)?;
        let pools: HashMap<String, Arc<BackendPool>> = config
            .pools
            .iter()
            .map(|pool| {
                let previous = reuse.pools.and_then(|p| p.get(&pool.name)).map(Arc::as_ref);
                (
                    pool.name.clone(),
                    Arc::new(BackendPool::new(pool, previous)),
                )
            })
            .collect();
        let mut listeners = Vec::new();
        let mut errors = Vec::new();
        for (index, listener) in config.listeners.iter().enumerate() {
            let module = Arc::clone(&modules[&listener.policy]);
            match bind_listener(&config, index, listener, module, &pools) {
                Ok(state) => listeners.push(state),
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
            listeners,
        })
    }
}

/// Binds `module` to a listener and runs its `init` once.
pub fn bind_listener(
    config: &Config,
    index: usize,
    listener: &ListenerConfig,
    module: Arc<CompiledPolicy>,
    pools: &HashMap<String, Arc<BackendPool>>,
) -> Result<ListenerState, ConfigError> {
    let listener_pools: Arc<[Arc<BackendPool>]> = listener
        .pools
        .iter()
        .map(|name| Arc::clone(&pools[name]))
        .collect();
    let bound = BoundPolicy::new(
        module,
        listener_pools,
        &listener.policy_config,
        limits(config),
    );
    bound.validate().map_err(|error| ConfigError {
        file: config.file.clone(),
        key: format!("listeners[{index}].policy_config"),
        reason: format!(
            "policy `{}` refused listener `{}`: {error}",
            listener.policy, listener.name
        ),
    })?;
    Ok(ListenerState {
        policy: Arc::new(bound),
        on_error: listener.on_error,
    })
}

fn unsupported_protocols(config: &Config) -> Vec<ConfigError> {
    config
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.protocol != Protocol::Http)
        .map(|(index, l)| ConfigError {
            file: config.file.clone(),
            key: format!("listeners[{index}].protocol"),
            reason: format!(
                "listener `{}`: protocol {:?} is not supported by this build yet (only \"http\")",
                l.name, l.protocol
            ),
        })
        .collect()
}

type Modules = HashMap<String, Arc<CompiledPolicy>>;

fn compile_modules(
    config: &Config,
    engine: &PolicyEngine,
    current: Option<&Modules>,
) -> Result<(Modules, Vec<Arc<CompiledPolicy>>), Vec<ConfigError>> {
    let mut modules = HashMap::new();
    let mut fresh = Vec::new();
    let mut errors = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        if modules.contains_key(&listener.policy) {
            continue;
        }
        let path = config.policy_path(&listener.policy);
        let current = current.and_then(|m| m.get(&listener.policy));
        match load_module(engine, &listener.policy, &path, current) {
            Ok((module, is_fresh)) => {
                if is_fresh {
                    fresh.push(Arc::clone(&module));
                }
                modules.insert(listener.policy.clone(), module);
            }
            Err(reason) => errors.push(ConfigError {
                file: config.file.clone(),
                key: format!("listeners[{index}].policy"),
                reason,
            }),
        }
    }
    if errors.is_empty() {
        Ok((modules, fresh))
    } else {
        Err(errors)
    }
}

/// Reads and compiles a module file, reusing `current` when the bytes are
/// unchanged. Returns the module and whether it was compiled now.
pub fn load_module(
    engine: &PolicyEngine,
    name: &str,
    path: &Path,
    current: Option<&Arc<CompiledPolicy>>,
) -> Result<(Arc<CompiledPolicy>, bool), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    if let Some(current) = current.filter(|m| m.digest == digest) {
        return Ok((Arc::clone(current), false));
    }
    let module = engine
        .compile(name, &bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((Arc::new(module), true))
}
