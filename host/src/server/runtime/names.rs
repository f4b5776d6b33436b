//! The runtime's side of backend names: resolving a loaded config before
//! it is applied, and the rounds of lookups after (every `[resolver]
//! refresh`) that re-apply the serving config when a pool's set changed.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use super::Runtime;
use crate::config::Config;
use crate::dns::{Discovery, Outcome, Query, Resolution};
use crate::events::ServerEvent;

/// One round of name lookups in flight (see [`Runtime::start_round`]).
pub(in crate::server) type Round = Pin<Box<dyn Future<Output = Vec<(Query, Outcome)>> + Send>>;

impl Runtime {
    /// Resolves the backend names of `config` as loaded (a name that
    /// gives nothing keeps its last good addresses, or none) and applies
    /// the result.
    pub(in crate::server) async fn apply_loaded(&mut self, config: Config) -> Result<(), String> {
        if let Some(round) = self.discovery.round(&config) {
            let outcomes = round.await;
            let resolutions = self.discovery.record(outcomes);
            self.count_resolutions(&config, &resolutions);
        }
        self.apply_config(self.discovery.resolve(&config)).await?;
        self.next_round = (!Discovery::queries(&config).is_empty())
            .then(|| self.discovery.next_round(&config, Instant::now()));
        self.loaded = Some(config);
        Ok(())
    }

    /// When the backend names are due to be looked up again.
    pub(in crate::server) fn next_round(&self) -> Option<Instant> {
        self.next_round
    }

    /// Starts looking up the serving config's names again; the control
    /// loop polls the round and hands its result to [`Self::finish_round`].
    pub(in crate::server) fn start_round(&mut self) -> Option<Round> {
        self.next_round = None;
        let loaded = self.loaded.as_ref()?;
        let round = self.discovery.round(loaded)?;
        Some(Box::pin(round))
    }

    /// Keeps a round's good answers and, when a pool's set changed,
    /// applies the serving config with the new sets: the same path a
    /// reload takes, without reading the file.
    pub(in crate::server) async fn finish_round(&mut self, outcomes: Vec<(Query, Outcome)>) {
        let Some(loaded) = self.loaded.clone() else {
            return;
        };
        let resolutions = self.discovery.record(outcomes);
        self.count_resolutions(&loaded, &resolutions);
        if resolutions.iter().any(|(_, r)| *r == Resolution::Changed)
            && let Err(reason) = self.apply_config(self.discovery.resolve(&loaded)).await
        {
            tracing::error!(%reason, "new backend addresses refused; the previous ones keep serving");
        }
        self.next_round = Some(self.discovery.next_round(&loaded, Instant::now()));
        for (query, resolution) in resolutions {
            let result = resolution.label();
            let name = query.to_string();
            let _ = self.events.send(ServerEvent::NameResolved { name, result });
        }
    }

    /// Counts each lookup for every pool of `config` using the name.
    fn count_resolutions(&self, config: &Config, resolutions: &[(Query, Resolution)]) {
        for pool in &config.pools {
            for (query, resolution) in resolutions {
                if pool.names.iter().any(|n| Query::of(n) == *query) {
                    self.published
                        .dns_resolutions(&pool.name)
                        .of(*resolution)
                        .inc();
                }
            }
        }
    }
}
