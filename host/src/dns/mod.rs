//! Backends by DNS name (STRICT_DNS): a pool entry `address = "name:port"`
//! stands for one backend per A/AAAA record the name resolves to, each
//! with the entry's weight.
//!
//! [`Discovery`] keeps the last good answer of every name and turns a
//! config as loaded (its pools' `names`) into the config that serves
//! ([`Discovery::resolve`]): each pool's `IP:port` backends, then the
//! addresses of its names in file order, each name's sorted, an address
//! already in the pool skipped. The server builds pools from that config
//! through its ordinary reload path, so an address that stays keeps its
//! stats, health and stable id, a new one joins like a backend added by a
//! reload, and one that vanished drains like a removed one.
//!
//! A failed or empty answer keeps the last good set (none before the
//! first: the pool then has no backends from that name). A name is looked
//! up again every `[resolver] refresh`, or sooner when its answer's TTL
//! runs out first (but not more often than [`MIN_TTL_REFRESH`] for that
//! reason alone).

pub mod lookup;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

use crate::config::{BackendConfig, Config, ResolverConfig};
pub use lookup::Outcome;

/// The shortest wait between two lookups that an answer's short TTL
/// asks for (a refresh shorter than it still applies).
pub const MIN_TTL_REFRESH: Duration = Duration::from_secs(1);

/// What one lookup of a name meant for the pools using it: the label of
/// `wasmroute_dns_resolutions_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// Addresses, the same as before.
    Ok,
    /// Addresses that differ from the last good answer (or the first).
    Changed,
    /// No answer; the last good set stays.
    Failed,
    /// An answer without addresses; the last good set stays.
    Empty,
}

impl Resolution {
    /// Every result, in the order metrics list them.
    pub const ALL: [Resolution; 4] = [
        Resolution::Ok,
        Resolution::Changed,
        Resolution::Failed,
        Resolution::Empty,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Resolution::Ok => "ok",
            Resolution::Changed => "changed",
            Resolution::Failed => "failed",
            Resolution::Empty => "empty",
        }
    }
}

/// A name of a pool and the addresses it gives now: what `/status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedName {
    /// The pool.
    pub pool: String,
    /// `name:port` as configured.
    pub name: String,
    /// The backends it gives now (empty before a good answer).
    pub addresses: Vec<SocketAddr>,
}

/// The last good answers and the resolver that asks for them.
#[derive(Default)]
pub struct Discovery {
    /// The resolver, with the settings it was built for (or why it could
    /// not be built).
    resolver: Option<(ResolverConfig, Result<TokioResolver, String>)>,
    /// The last good answer of each name (as lower case).
    answers: HashMap<String, Answer>,
    /// Names whose last lookup gave nothing (logged once until they
    /// answer again).
    failing: HashSet<String>,
}

#[derive(Debug, Clone)]
struct Answer {
    addresses: Vec<IpAddr>,
    valid_until: Instant,
}

impl Discovery {
    /// The distinct names (lower case) `config`'s pools use.
    pub fn names(config: &Config) -> Vec<String> {
        let mut names: Vec<String> = (config.pools.iter())
            .flat_map(|pool| pool.names.iter())
            .map(|named| named.name.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The lookups of a round for `config`'s names, as a future owning
    /// what it needs; [`Discovery::record`] takes its result. None when
    /// the config names no backend.
    pub fn round(
        &mut self,
        config: &Config,
    ) -> Option<impl Future<Output = Vec<(String, Outcome)>> + Send + use<>> {
        let names = Self::names(config);
        if names.is_empty() {
            return None;
        }
        let resolver = self.resolver(&config.resolver);
        Some(async move {
            match resolver {
                Ok(resolver) => lookup::lookup_all(resolver, names).await,
                Err(reason) => (names.into_iter())
                    .map(|name| (name, Outcome::Failed(reason.clone())))
                    .collect(),
            }
        })
    }

    /// The resolver for `settings`, built again when they changed.
    fn resolver(&mut self, settings: &ResolverConfig) -> Result<TokioResolver, String> {
        if !self.resolver.as_ref().is_some_and(|(s, _)| s == settings) {
            self.resolver = Some((settings.clone(), lookup::build(settings)));
        }
        let (_, resolver) = self.resolver.as_ref().expect("just set");
        resolver.clone()
    }

    /// Keeps the good answers of a round; what each lookup meant, by name.
    pub fn record(&mut self, outcomes: Vec<(String, Outcome)>) -> Vec<(String, Resolution)> {
        outcomes
            .into_iter()
            .map(|(name, outcome)| {
                let resolution = self.record_one(&name, outcome);
                (name, resolution)
            })
            .collect()
    }

    fn record_one(&mut self, name: &str, outcome: Outcome) -> Resolution {
        let (addresses, valid_until) = match outcome {
            Outcome::Addresses(addresses, valid_until) => (addresses, valid_until),
            Outcome::Empty => {
                self.note_failure(name, "the name has no address");
                return Resolution::Empty;
            }
            Outcome::Failed(reason) => {
                self.note_failure(name, &reason);
                return Resolution::Failed;
            }
        };
        if self.failing.remove(name) {
            tracing::info!(%name, ?addresses, "backend name resolves again");
        }
        let previous = self.answers.insert(
            name.to_owned(),
            Answer {
                addresses: addresses.clone(),
                valid_until,
            },
        );
        if previous.is_some_and(|p| p.addresses == addresses) {
            Resolution::Ok
        } else {
            tracing::info!(%name, ?addresses, "backend name resolved");
            Resolution::Changed
        }
    }

    /// Logs a name that gave nothing, once until it answers again.
    fn note_failure(&mut self, name: &str, reason: &str) {
        let kept = self.answers.get(name).map(|a| a.addresses.clone());
        if self.failing.insert(name.to_owned()) {
            tracing::warn!(%name, %reason, ?kept, "backend name did not resolve; its last good addresses stay");
        } else {
            tracing::debug!(%name, %reason, "backend name still does not resolve");
        }
    }

    /// `config` with each pool's backends extended by the addresses its
    /// names give now (see the module docs).
    pub fn resolve(&self, config: &Config) -> Config {
        let mut resolved = config.clone();
        for pool in &mut resolved.pools {
            for named in &pool.names {
                for ip in self.addresses(&named.name) {
                    let address = SocketAddr::new(*ip, named.port);
                    if !pool.backends.iter().any(|b| b.address == address) {
                        let weight = named.weight;
                        pool.backends.push(BackendConfig { address, weight });
                    }
                }
            }
        }
        resolved
    }

    /// The addresses `name` gives now (none before a good answer).
    fn addresses(&self, name: &str) -> &[IpAddr] {
        let answer = self.answers.get(&name.to_ascii_lowercase());
        answer.map_or(&[], |a| a.addresses.as_slice())
    }

    /// Every name of `config`'s pools with the backends it gives now.
    pub fn resolved_names(&self, config: &Config) -> Vec<ResolvedName> {
        let pools = config.pools.iter();
        pools
            .flat_map(|pool| {
                pool.names.iter().map(|named| ResolvedName {
                    pool: pool.name.clone(),
                    name: format!("{}:{}", named.name, named.port),
                    addresses: (self.addresses(&named.name).iter())
                        .map(|ip| SocketAddr::new(*ip, named.port))
                        .collect(),
                })
            })
            .collect()
    }

    /// When the next round for `config` is due, counted from `now`: its
    /// refresh, or sooner when an answer expires first.
    pub fn next_round(&self, config: &Config, now: Instant) -> Instant {
        let refresh = config.resolver.refresh;
        let ttl = (Self::names(config).iter())
            .filter_map(|name| self.answers.get(name))
            .map(|answer| answer.valid_until.saturating_duration_since(now))
            .min()
            .map_or(refresh, |ttl| ttl.max(MIN_TTL_REFRESH));
        now + refresh.min(ttl)
    }
}

#[cfg(test)]
mod tests;
