//! Backends by DNS name (STRICT_DNS): a pool entry `address = "name:port"`
//! stands for one backend per A/AAAA record the name resolves to, and an
//! entry `srv = "_service._proto.name"` for one backend per address of
//! each SRV record's target, on the record's port; each with the entry's
//! weight.
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
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

use crate::config::{BackendConfig, Config, NamedBackend, ResolverConfig};
pub use lookup::Outcome;

/// One lookup a config's names ask for: a name's A and AAAA records, or
/// its SRV records. Entries of several pools (or ports) share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Query {
    /// The name, lower case, without a trailing dot.
    pub name: String,
    /// SRV records rather than addresses.
    pub srv: bool,
}

impl Query {
    /// What `named` asks for.
    pub fn of(named: &NamedBackend) -> Query {
        Query {
            name: named.name.to_ascii_lowercase(),
            srv: named.port.is_none(),
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.srv {
            write!(f, "SRV {}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

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
    /// `name:port` or the SRV name, as configured.
    pub name: String,
    /// An SRV name (its records give the ports).
    pub srv: bool,
    /// The backends it gives now (empty before a good answer).
    pub addresses: Vec<SocketAddr>,
}

/// The last good answers and the resolver that asks for them.
#[derive(Default)]
pub struct Discovery {
    /// The resolver, with the settings it was built for (or why it could
    /// not be built).
    resolver: Option<(ResolverConfig, Result<TokioResolver, String>)>,
    /// The last good answer of each query.
    answers: HashMap<Query, Answer>,
    /// Queries whose last lookup gave nothing (logged once until they
    /// answer again).
    failing: HashSet<Query>,
}

#[derive(Debug, Clone)]
struct Answer {
    /// Port 0 for an A/AAAA query (the entry gives it).
    addresses: Vec<SocketAddr>,
    valid_until: Instant,
}

impl Discovery {
    /// The distinct lookups `config`'s pools ask for.
    pub fn queries(config: &Config) -> Vec<Query> {
        let mut queries: Vec<Query> = (config.pools.iter())
            .flat_map(|pool| pool.names.iter())
            .map(Query::of)
            .collect();
        queries.sort();
        queries.dedup();
        queries
    }

    /// The lookups of a round for `config`'s names, as a future owning
    /// what it needs; [`Discovery::record`] takes its result. None when
    /// the config names no backend.
    pub fn round(
        &mut self,
        config: &Config,
    ) -> Option<impl Future<Output = Vec<(Query, Outcome)>> + Send + use<>> {
        let queries = Self::queries(config);
        if queries.is_empty() {
            return None;
        }
        let resolver = self.resolver(&config.resolver);
        Some(async move {
            match resolver {
                Ok(resolver) => lookup::lookup_all(resolver, queries).await,
                Err(reason) => (queries.into_iter())
                    .map(|query| (query, Outcome::Failed(reason.clone())))
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

    /// Keeps the good answers of a round; what each lookup meant.
    pub fn record(&mut self, outcomes: Vec<(Query, Outcome)>) -> Vec<(Query, Resolution)> {
        outcomes
            .into_iter()
            .map(|(query, outcome)| {
                let resolution = self.record_one(&query, outcome);
                (query, resolution)
            })
            .collect()
    }

    fn record_one(&mut self, name: &Query, outcome: Outcome) -> Resolution {
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
            name.clone(),
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
    fn note_failure(&mut self, name: &Query, reason: &str) {
        let kept = self.answers.get(name).map(|a| a.addresses.clone());
        if self.failing.insert(name.clone()) {
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
                for address in self.addresses(named) {
                    if !pool.backends.iter().any(|b| b.address == address) {
                        let weight = named.weight;
                        pool.backends.push(BackendConfig { address, weight });
                    }
                }
            }
        }
        resolved
    }

    /// The backends `named` gives now (none before a good answer): its
    /// addresses on its port, or an SRV answer's as they are.
    fn addresses(&self, named: &NamedBackend) -> impl Iterator<Item = SocketAddr> + use<'_> {
        let answer = self.answers.get(&Query::of(named));
        let addresses = answer.map_or(&[][..], |a| a.addresses.as_slice());
        let port = named.port;
        (addresses.iter()).map(move |address| match port {
            Some(port) => SocketAddr::new(address.ip(), port),
            None => *address,
        })
    }

    /// Every name of `config`'s pools with the backends it gives now.
    pub fn resolved_names(&self, config: &Config) -> Vec<ResolvedName> {
        let pools = config.pools.iter();
        pools
            .flat_map(|pool| {
                pool.names.iter().map(|named| ResolvedName {
                    pool: pool.name.clone(),
                    name: named.text(),
                    srv: named.port.is_none(),
                    addresses: self.addresses(named).collect(),
                })
            })
            .collect()
    }

    /// When the next round for `config` is due, counted from `now`: its
    /// refresh, or sooner when an answer expires first.
    pub fn next_round(&self, config: &Config, now: Instant) -> Instant {
        let refresh = config.resolver.refresh;
        let ttl = (Self::queries(config).iter())
            .filter_map(|query| self.answers.get(query))
            .map(|answer| answer.valid_until.saturating_duration_since(now))
            .min()
            .map_or(refresh, |ttl| ttl.max(MIN_TTL_REFRESH));
        now + refresh.min(ttl)
    }
}

#[cfg(test)]
mod tests;
