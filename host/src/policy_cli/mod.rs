//! `wasmroute policy new|build|test`: the policy author's loop without a
//! running proxy.
//!
//! - [`new`] writes a standalone policy crate (its own workspace, this
//!   repository's SDK by path, a small-module release profile, a starting
//!   policy with native tests and a `cases.toml`);
//! - [`build`] builds a policy crate for `wasm32-wasip2` and says where the
//!   component is;
//! - [`test`] replays the cases of a cases file ([`cases`]) through the
//!   module in the real policy runtime ([`replay`]) and says, per case,
//!   whether the decision is the expected one.

mod build;
pub mod cases;
pub mod expect;
mod new;
mod raw;
pub mod replay;
mod request;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use build::build;
pub use new::new;

use crate::config::{Config, ConfigError};
use crate::policy::{PolicyEngine, PolicyLimits};
use cases::{BackendSpec, Fallback, PoolSpec};

/// How `policy test` ended, as the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStatus {
    /// Every expectation held: exit 0.
    Passed,
    /// At least one did not: exit 1.
    Failed,
    /// The cases file, the config or the module is invalid: exit 2.
    Invalid,
}

impl TestStatus {
    /// The exit status.
    pub fn code(self) -> u8 {
        match self {
            TestStatus::Passed => 0,
            TestStatus::Failed => 1,
            TestStatus::Invalid => 2,
        }
    }
}

/// What `policy test` is given.
#[derive(Debug, Clone)]
pub struct TestArgs {
    /// The module (`.wasm` component).
    pub module: PathBuf,
    /// The cases file.
    pub cases: PathBuf,
    /// A config whose listener gives pools, `policy_config` and limits.
    pub config: Option<PathBuf>,
    /// That listener (optional when the config has one listener).
    pub listener: Option<String>,
}

/// Runs `policy test`: one line per case on stdout (and, for a failed
/// one, what differs); problems with the inputs as `FILE: key: reason`
/// lines on stderr.
pub fn test(args: &TestArgs) -> TestStatus {
    match replay_all(args) {
        Ok(0) => TestStatus::Passed,
        Ok(_) => TestStatus::Failed,
        Err(errors) => {
            for error in errors {
                eprintln!("{error}");
            }
            TestStatus::Invalid
        }
    }
}

/// Replays every case; the number that failed.
fn replay_all(args: &TestArgs) -> Result<usize, Vec<ConfigError>> {
    let (fallback, limits) = match &args.config {
        Some(config) => from_config(config, args.listener.as_deref())?,
        None => (Fallback::default(), default_limits()),
    };
    let cases = load_cases(&args.cases, &fallback)?;
    let module_error = |reason: String| vec![ConfigError::new(&args.module, "(module)", reason)];
    let bytes =
        std::fs::read(&args.module).map_err(|e| module_error(format!("cannot read: {e}")))?;
    let engine = PolicyEngine::new().map_err(|e| module_error(format!("{e:#}")))?;
    let name = args
        .module
        .file_stem()
        .map_or("policy".into(), |s| s.to_string_lossy());
    let module = engine
        .compile(&name, &bytes)
        .map_err(|e| module_error(e.to_string()))?;
    let prepared = replay::prepare(cases, &Arc::new(module), limits, &args.cases)?;
    let total = prepared.len();
    let mut failed = 0;
    for case in prepared {
        let verdict = replay::run(case);
        println!("{}", verdict.line);
        if let Some(difference) = verdict.difference {
            println!("     {difference}");
            failed += 1;
        }
    }
    println!("{total} cases: {} ok, {failed} FAIL", total - failed);
    Ok(failed)
}

fn default_limits() -> PolicyLimits {
    PolicyLimits {
        decision_timeout: crate::config::DEFAULT_DECISION_TIMEOUT,
        memory_limit: crate::config::DEFAULT_MEMORY_LIMIT as usize,
    }
}

/// Reads and validates a cases file.
pub fn load_cases(path: &Path, fallback: &Fallback) -> Result<Vec<cases::Case>, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError::new(
            path,
            "(file)",
            format!("cannot read: {e}"),
        )]
    })?;
    let deserializer = toml::Deserializer::parse(&text).map_err(|e| {
        let reason = crate::config::with_position(e.message(), e.span(), &text);
        vec![ConfigError::new(path, "(syntax)", reason)]
    })?;
    let raw: raw::RawCases = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = match e.path().to_string() {
            dot if dot == "." => "(file)".to_owned(),
            key => key,
        };
        let reason = crate::config::with_position(e.inner().message(), e.inner().span(), &text);
        vec![ConfigError::new(path, key, reason)]
    })?;
    cases::validate(raw, path, fallback)
}

/// The pools, `policy_config` and limits of a config's listener.
fn from_config(
    path: &Path,
    listener: Option<&str>,
) -> Result<(Fallback, PolicyLimits), Vec<ConfigError>> {
    let config = Config::load(path).map_err(|errors| errors.errors)?;
    let chosen = match listener {
        Some(name) => config.listener(name),
        None if config.listeners.len() == 1 => config.listeners.first(),
        None => {
            let reason = "the config has several listeners: say which with --listener";
            return Err(vec![ConfigError::new(path, "listeners", reason)]);
        }
    };
    let Some(chosen) = chosen else {
        let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        let reason = format!(
            "no listener `{}` (listeners: {})",
            listener.unwrap_or_default(),
            names.join(", ")
        );
        return Err(vec![ConfigError::new(path, "listeners", reason)]);
    };
    let pools: Vec<PoolSpec> = (chosen.pools.iter())
        .filter_map(|name| config.pool(name))
        .map(|pool| PoolSpec {
            name: pool.name.clone(),
            backends: (pool.backends.iter())
                .map(|b| BackendSpec {
                    address: b.address,
                    weight: b.weight,
                    healthy: true,
                    active: 0,
                    ewma_us: 0,
                    error_permille: None,
                    load: None,
                })
                .collect(),
        })
        .collect();
    let fallback = Fallback {
        pools: Some(pools.into()),
        policy_config: Some(Arc::new(chosen.policy_config.clone())),
        source: format!("listener `{}` of {}", chosen.name, path.display()),
    };
    Ok((fallback, crate::server::policy_limits(&config)))
}
