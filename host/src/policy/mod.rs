//! The Wasm policy runtime.
//!
//! Rules (the cost model in docs/architecture.md), and where each is kept:
//! - one [`wasmtime::Engine`] per server, `concurrency_support(false)`,
//!   epoch interruption driven by a 1 ms ticker thread ([`PolicyEngine`]);
//! - modules are compiled off the request path into a [`CompiledPolicy`]
//!   (component + pre-resolved imports) and bound to a listener's pools and
//!   `policy_config` as a [`BoundPolicy`], which is validated by
//!   instantiating it and running `init` once before it may serve;
//! - each worker thread keeps one instance per bound policy and reuses its
//!   store for every decision; an instance that trapped is dropped and the
//!   next decision instantiates a fresh one ([`worker`]);
//! - `decision_timeout` is the guest's CPU time, not wall time, so a thread
//!   the OS takes off the CPU mid-decision does not fail it; a hard cap in
//!   wall time still stops a looping guest ([`deadline`]);
//! - a policy that keeps failing (traps, timeouts, no instance) is tripped
//!   for a back-off: its requests go straight to `on_error` without calling
//!   it, then one request probes it ([`breaker`]). Other listeners sharing
//!   the worker threads stop paying for it.

mod bindings;
mod breaker;
mod cache;
mod connection;
#[cfg(test)]
mod connection_tests;
mod counters;
mod deadline;
mod derived;
mod host;
#[cfg(test)]
mod sdk_parity_tests;
mod ticker;
mod v02;
mod wasi;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

pub use breaker::{FIRST_BACK_OFF, MAX_BACK_OFF, TRIP_AFTER};
pub use connection::{ClientHello, ConnectionView};
pub use counters::{COUNTER_SLOTS, SharedCounters};
pub use host::{
    Capabilities, ConnectionDecision, ConnectionForward, Decision, HeaderEdit, RequestView,
    find_cookie,
};
pub use worker::{decide, decide_aside, decide_connection, decide_since};

use crate::metrics::{DecisionErrorKind, DecisionMetrics};
use crate::pool::BackendPool;
use bindings::{Bindings, BindingsPre};
use breaker::Breaker;
use deadline::ticks;
use host::{ConfigValue, HostState};

/// One epoch tick: deadlines are counted in ms of wall time (the ticker
/// wakes this often only while a guest call is in flight; [`ticker`]).
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Deadline of instantiation plus `init`: a one-off, off the request path,
/// that may build tables; generous so a busy machine does not refuse a
/// good module, bounded so a looping `init` cannot hang a reload.
const INIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a module could not be loaded or bound.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not a component, or a component that does not fit the policy world.
    #[error("not a valid policy component: {0}")]
    Compile(String),
    /// Instantiation failed (missing import, memory limit, start trap).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// The guest's `init` returned an error.
    #[error("init refused the config: {0}")]
    InitRefused(String),
    /// The guest trapped or ran past its deadline in `init`.
    #[error("init trapped: {0}")]
    InitTrapped(String),
}

/// Why one decision failed; handled by the listener's `on_error`.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// The guest ran past the decision timeout.
    #[error("decision timed out")]
    Timeout,
    /// The guest trapped (panic, unreachable, out of memory...).
    #[error("policy trapped: {0}")]
    Trap(String),
    /// A fresh instance could not be created for this worker.
    #[error("{0}")]
    Instantiate(PolicyError),
    /// The decision names something that does not exist or may not be used.
    #[error("invalid decision: {0}")]
    Invalid(String),
    /// This failure tripped the policy's breaker: the next requests go to
    /// `on_error` without calling it for `back_off` ([`breaker`]).
    #[error("{cause}; the policy is tripped for {back_off:?} (failing repeatedly)")]
    Tripping {
        /// The failure.
        cause: Box<DecisionError>,
        /// How long the policy is off.
        back_off: Duration,
    },
    /// The policy is tripped ([`breaker`]): it was not called. Reported
    /// once, by the [`DecisionError::Tripping`] failure; not per request.
    #[error("the policy is tripped after failing repeatedly: not called")]
    Tripped,
}

impl DecisionError {
    /// How `wasmroute_policy_errors_total` labels this failure: an
    /// instance that could not be made counts as a trap (the breaker
    /// counts it like one), a tripping failure as its cause.
    pub fn kind(&self) -> DecisionErrorKind {
        match self {
            DecisionError::Timeout => DecisionErrorKind::Timeout,
            DecisionError::Trap(_) | DecisionError::Instantiate(_) => DecisionErrorKind::Trap,
            DecisionError::Invalid(_) => DecisionErrorKind::Invalid,
            DecisionError::Tripping { cause, .. } => cause.kind(),
            DecisionError::Tripped => DecisionErrorKind::Tripped,
        }
    }
}

/// The engine and linker shared by every policy of one server.
#[derive(Clone)]
pub struct PolicyEngine {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    compiled: cache::ComponentCache,
}

impl PolicyEngine {
    /// Creates the engine and starts its epoch ticker (which stops when the
    /// last clone of the engine is gone).
    pub fn new() -> anyhow::Result<PolicyEngine> {
        let mut config = Config::new();
        config
            .concurrency_support(false)
            .epoch_interruption(true)
            .parallel_compilation(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker)?;
        v02::add_to_linker(&mut linker)?;
        ticker::spawn(&engine);
        Ok(PolicyEngine {
            engine,
            linker: Arc::new(linker),
            compiled: cache::ComponentCache::default(),
        })
    }

    /// Compiles and type-checks a module against the policy world. Slow
    /// (tens of ms): call it from a blocking task.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<CompiledPolicy, PolicyError> {
        self.compile_with_digest(name, bytes, Sha256::digest(bytes).into())
    }

    /// [`PolicyEngine::compile`] for a caller that has hashed the bytes.
    pub fn compile_with_digest(
        &self,
        name: &str,
        bytes: &[u8],
        digest: [u8; 32],
    ) -> Result<CompiledPolicy, PolicyError> {
        let compile_error =
            |e: wasmtime::Error| PolicyError::Compile(single_line(&format!("{e:#}")));
        let component = match self.compiled.get(&digest) {
            Some(component) => component,
            None => {
                let component = Component::new(&self.engine, bytes).map_err(compile_error)?;
                self.compiled.insert(digest, &component);
                component
            }
        };
        let mut linker = Linker::clone(&self.linker);
        wasi::link(&mut linker, &self.engine, &component).map_err(compile_error)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(compile_error)?;
        let pre = BindingsPre::new(instance_pre)
            .map_err(|e| PolicyError::Compile(single_line(&format!("{e:#}"))))?;
        static VERSIONS: AtomicU64 = AtomicU64::new(1);
        Ok(CompiledPolicy {
            name: name.to_owned(),
            version: VERSIONS.fetch_add(1, Ordering::Relaxed),
            digest,
            engine: self.engine.clone(),
            pre,
        })
    }
}

/// `text` on one line: wasmtime's parse errors pretty-print byte arrays
/// over many lines, which would make a refused module's log record (and
/// `check`'s `FILE: key: reason` line) span a screen.
fn single_line(text: &str) -> String {
    let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut out = String::with_capacity(text.len());
    for line in lines {
        let glue = !(out.is_empty() || out.ends_with('[') || line.starts_with(']'));
        if glue {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// A compiled module, ready to instantiate.
pub struct CompiledPolicy {
    /// The policy name (file stem).
    pub name: String,
    /// Process-wide unique version number, increasing with every load.
    pub version: u64,
    /// SHA-256 of the module bytes (an unchanged file is not reloaded).
    pub digest: [u8; 32],
    engine: Engine,
    pre: BindingsPre,
}

impl CompiledPolicy {
    /// The `wasmroute:policy` version the module was built against
    /// (`0.3`, `0.2`).
    pub fn interface(&self) -> &'static str {
        self.pre.interface()
    }

    /// The first 12 hex digits of [`CompiledPolicy::digest`], for log
    /// lines (`sha256=3f2a...`); formats without allocating.
    pub fn short_digest(&self) -> ShortDigest<'_> {
        ShortDigest(&self.digest)
    }
}

/// See [`CompiledPolicy::short_digest`].
#[derive(Debug, Clone, Copy)]
pub struct ShortDigest<'a>(&'a [u8; 32]);

impl std::fmt::Display for ShortDigest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0[..6]
            .iter()
            .try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("interface", &self.interface())
            .finish_non_exhaustive()
    }
}

/// Resource limits of each instance.
#[derive(Debug, Clone, Copy)]
pub struct PolicyLimits {
    /// Deadline of one decision (and of `init`).
    pub decision_timeout: Duration,
    /// Linear memory cap per instance, in bytes.
    pub memory_limit: usize,
}

/// A compiled policy bound to one listener's pools and `policy_config`.
/// Worker instances are keyed by its `id`: a new module version or a new
/// config makes a new `BoundPolicy`, and so new instances.
pub struct BoundPolicy {
    /// Process-wide unique id.
    pub id: u64,
    /// The module.
    pub module: Arc<CompiledPolicy>,
    /// The listener's pools, index = pool id.
    pub pools: Arc<[Arc<BackendPool>]>,
    /// The listener's shared counters.
    pub counters: Arc<SharedCounters>,
    /// Decision times and failures of this listener's policy, kept across
    /// module versions ([`BoundPolicy::with_metrics`]).
    pub metrics: Arc<DecisionMetrics>,
    pool_names: Vec<String>,
    config: Vec<(String, ConfigValue)>,
    limits: PolicyLimits,
    breaker: Breaker,
    capabilities: OnceLock<Capabilities>,
}

impl std::fmt::Debug for BoundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundPolicy")
            .field("id", &self.id)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

/// One instance with its store.
pub(crate) struct PolicyInstance {
    store: Store<HostState>,
    bindings: Bindings,
}

impl BoundPolicy {
    /// Binds `module` to pools and a `policy_config` table.
    pub fn new(
        module: Arc<CompiledPolicy>,
        pools: Arc<[Arc<BackendPool>]>,
        counters: Arc<SharedCounters>,
        policy_config: &toml::Table,
        limits: PolicyLimits,
    ) -> BoundPolicy {
        static IDS: AtomicU64 = AtomicU64::new(1);
        BoundPolicy {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            pool_names: pools.iter().map(|p| p.name.clone()).collect(),
            module,
            pools,
            counters,
            metrics: Arc::default(),
            config: flatten_config(policy_config),
            limits,
            breaker: Breaker::new(probe_lease(limits.decision_timeout)),
            capabilities: OnceLock::new(),
        }
    }

    /// Counts this binding's decisions into `metrics` (those of the
    /// binding it replaces) instead of fresh ones.
    pub fn with_metrics(mut self, metrics: Arc<DecisionMetrics>) -> BoundPolicy {
        self.metrics = metrics;
        self
    }

    /// Proves the policy can serve: instantiates it and runs `init`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.instantiate().map(drop)
    }

    /// What the module decides, as its first instance said (known once
    /// [`BoundPolicy::validate`] succeeded; `None` before).
    pub fn capabilities(&self) -> Option<Capabilities> {
        self.capabilities.get().copied()
    }

    /// A fresh instance with `init` run.
    pub(crate) fn instantiate(&self) -> Result<PolicyInstance, PolicyError> {
        let seed = rand_seed();
        let state = HostState::new(
            Arc::clone(&self.pools),
            Arc::clone(&self.counters),
            self.limits.memory_limit,
            self.limits.decision_timeout,
            seed,
        );
        let mut store = Store::new(&self.module.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(ticks(INIT_TIMEOUT));
        let _call = ticker::in_call();
        let bindings = self
            .module
            .pre
            .instantiate(&mut store)
            .map_err(|e| PolicyError::Instantiate(format!("{e:#}")))?;
        match bindings.call_init(&mut store, &self.pool_names, &self.config) {
            Ok(Ok(())) => {
                // Every instance of one module answers the same: only the
                // first (`validate`'s) is asked.
                if self.capabilities.get().is_none() {
                    let capabilities = bindings.call_capabilities(&mut store).map_err(|trap| {
                        PolicyError::InitTrapped(format!("capabilities: {trap:#}"))
                    })?;
                    let _ = self.capabilities.set(capabilities);
                }
                // `init` ran against the wall-time deadline above; decisions
                // against the guest's CPU time (`deadline`).
                store.epoch_deadline_callback(|mut store| Ok(store.data_mut().clock.on_deadline()));
                Ok(PolicyInstance { store, bindings })
            }
            Ok(Err(message)) => Err(PolicyError::InitRefused(message)),
            Err(trap) => Err(PolicyError::InitTrapped(format!("{trap:#}"))),
        }
    }
}

/// How long a claimed probe keeps the breaker's other requests off: longer
/// than the probe can take (a fresh instance and `init`, then a decision
/// up to its wall-time cap), so only a probe lost to a host panic expires.
fn probe_lease(decision_timeout: Duration) -> Duration {
    INIT_TIMEOUT + decision_timeout.saturating_mul(deadline::WALL_CAP) + Duration::from_secs(1)
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Flattens a TOML table into dotted keys, the form `init` receives.
fn flatten_config(table: &toml::Table) -> Vec<(String, ConfigValue)> {
    let mut out = Vec::new();
    flatten_into(&mut out, "", table);
    out
}

fn flatten_into(out: &mut Vec<(String, ConfigValue)>, prefix: &str, table: &toml::Table) {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let value = match value {
            toml::Value::Table(inner) => {
                flatten_into(out, &key, inner);
                continue;
            }
            toml::Value::String(s) => ConfigValue::Text(s.clone()),
            toml::Value::Integer(i) => ConfigValue::Integer(*i),
            toml::Value::Float(f) => ConfigValue::Float(*f),
            toml::Value::Boolean(b) => ConfigValue::Boolean(*b),
            toml::Value::Datetime(d) => ConfigValue::Text(d.to_string()),
            toml::Value::Array(items) => {
                ConfigValue::TextList(items.iter().map(array_item_text).collect())
            }
        };
        out.push((key, value));
    }
}

fn array_item_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_policy_compiles_against_the_host() {
        let engine = PolicyEngine::new().unwrap();
        for (name, bytes) in crate::bundled::POLICIES {
            if let Err(error) = engine.compile(name, bytes) {
                panic!("{name}: {error}");
            }
        }
    }

    #[test]
    fn compile_errors_are_one_line() {
        assert_eq!(
            super::single_line(
                "bad magic - expected=[\n    0x0,\n    0x61,\n] actual=[\n    0x6e,\n]"
            ),
            "bad magic - expected=[0x0, 0x61,] actual=[0x6e,]"
        );
    }

    #[test]
    fn a_module_compiled_before_is_not_compiled_again() {
        let engine = PolicyEngine::new().unwrap();
        let (name, bytes) = crate::bundled::POLICIES[0];
        let first = engine.compile(name, bytes).unwrap();
        assert_eq!(engine.compiled.len(), 1);
        let again = engine.compile(name, bytes).unwrap();
        assert_eq!(engine.compiled.len(), 1, "served from the cache");
        assert_ne!(first.version, again.version, "still a new version");
        assert_eq!(first.digest, again.digest);
        let short = first.short_digest().to_string();
        assert_eq!(short.len(), 12);
        let full: String = first.digest.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            full.starts_with(&short),
            "{short} is not a prefix of {full}"
        );
    }

    #[test]
    fn nested_tables_flatten_to_dotted_keys() {
        let table: toml::Table =
            toml::from_str("a = 1\n[routes]\nvideo = \"/v\"\nlist = [\"x\", 2]\n").unwrap();
        let flat = flatten_config(&table);
        let keys: Vec<&str> = flat.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "routes.list", "routes.video"]);
        assert!(matches!(&flat[1].1, ConfigValue::TextList(v) if v == &["x", "2"]));
    }
}
