//! Backend health: active checks ([`active`]) and passive ejection
//! ([`passive`], which lives with the pool's signals in
//! `crate::pool::outlier` since every request feeds it), both feeding `BackendStats::healthy`, which is what
//! policies see (`backend-stats.healthy` and `.ejected`) and what
//! `policy::decide` enforces.
//!
//! A backend is *healthy* when its active check says up (always, for a
//! pool without `[pools.health]`) and it is not ejected.
//!
//! Tasks: for each pool that a listener uses, one checker task per
//! backend when the pool has `[pools.health]`, and one sweeper task when
//! it has passive checking but no active check (it returns backends whose
//! ejection time is over); plus one task per used pool that closes its
//! backends' stale keep-alive connections (`crate::pool`). [`HealthTasks`]
//! owns them; the server starts a new set on every config commit and drops
//! (aborts) the previous one.
//! Pools are rebuilt on a reload but keep their backends' stats by
//! address, so a reload keeps up/down and ejection state; only the
//! checkers' streak counters start over.
//!
//! The full reference, with the state machine, is `docs/config.md`.

pub mod active;
mod script;
pub use crate::pool::outlier as passive;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::task::JoinSet;

use crate::config::Config;
pub use crate::events::HealthChange;
use crate::events::ServerEvent;
use crate::pool::BackendPool;

/// The health tasks of one committed config; aborted when dropped.
#[derive(Debug, Default)]
pub struct HealthTasks {
    tasks: JoinSet<()>,
}

impl HealthTasks {
    /// Starts checking the pools of `config` that a listener uses.
    /// Must be called inside a tokio runtime.
    pub fn start(
        config: &Config,
        pools: &HashMap<String, Arc<BackendPool>>,
        events: &broadcast::Sender<ServerEvent>,
    ) -> HealthTasks {
        let mut tasks = JoinSet::new();
        for pool_config in &config.pools {
            let Some(pool) = pools.get(&pool_config.name) else {
                continue;
            };
            pool.outlier.announce_to(events.clone());
            let used = config
                .listeners
                .iter()
                .any(|l| l.pools.contains(&pool_config.name));
            if used {
                tasks.spawn(crate::pool::close_idle_connections(Arc::clone(pool)));
            }
            match (&pool_config.health, used) {
                (Some(health), true) => {
                    let health = Arc::new(health.clone());
                    for backend in &pool.backends {
                        tasks.spawn(active::check_backend(
                            Arc::clone(backend),
                            Arc::clone(&pool.outlier),
                            Arc::clone(&health),
                            pool.name.clone(),
                        ));
                    }
                }
                (None, _) | (Some(_), false) => {
                    // No active check (or nobody to serve): the backends
                    // are up as far as checks go.
                    for backend in &pool.backends {
                        backend.stats.set_healthy(true);
                    }
                    if pool_config.health.is_none() {
                        tasks.spawn(Arc::clone(&pool.outlier).sweep());
                    }
                }
            }
        }
        HealthTasks { tasks }
    }

    /// How many tasks run (checkers and sweepers).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}
