//! What the control loop publishes for readers outside it (the admin
//! endpoint): the serving config with its listeners and pools, swapped
//! whole at every commit, and the counters of the changes it applied.
//! Readers walk the live structures (the listeners' handles, the pools'
//! backends) and read their atomics; nothing here is on the request path.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::dns::{Resolution, ResolvedName};
use crate::listener::ListenerHandle;
use crate::metrics::Counter;
use crate::pool::BackendPool;

/// The serving state as of the last commit.
#[derive(Debug)]
pub struct Snapshot {
    /// The config serving.
    pub config: Config,
    /// Listeners in config order.
    pub listeners: Vec<PublishedListener>,
    /// Pools in config order.
    pub pools: Vec<Arc<BackendPool>>,
    /// Every backend name of the pools, with the addresses it gives now.
    pub names: Vec<ResolvedName>,
}

/// One serving listener.
#[derive(Debug)]
pub struct PublishedListener {
    /// Its name in the config.
    pub name: String,
    /// The address actually bound.
    pub address: SocketAddr,
    /// What requests read (its state is swapped by policy reloads too).
    pub handle: Arc<ListenerHandle>,
}

/// Reloads of one policy module, by result.
#[derive(Debug, Default)]
pub struct PolicyReloads {
    /// A new version serves.
    pub ok: Counter,
    /// A new file was refused; the previous version keeps serving.
    pub refused: Counter,
}

/// Lookups of a pool's backend names, by result
/// (`wasmroute_dns_resolutions_total`), indexed like [`Resolution::ALL`].
#[derive(Debug, Default)]
pub struct DnsResolutions {
    counts: [Counter; Resolution::ALL.len()],
}

impl DnsResolutions {
    /// The counter of lookups that ended as `resolution`.
    pub fn of(&self, resolution: Resolution) -> &Counter {
        let index = Resolution::ALL.iter().position(|r| *r == resolution);
        &self.counts[index.expect("ALL lists every result")]
    }
}

/// Shared by the control loop (writer) and the admin endpoint (reader).
#[derive(Debug, Default)]
pub struct Published {
    snapshot: ArcSwapOption<Snapshot>,
    /// Config reloads that committed (SIGHUP, `/reload`, file change).
    pub config_reloads_ok: Counter,
    /// Config reloads that were refused.
    pub config_reloads_refused: Counter,
    policy_reloads: ArcSwap<Vec<(String, Arc<PolicyReloads>)>>,
    dns_resolutions: ArcSwap<Vec<(String, Arc<DnsResolutions>)>>,
    /// Access log lines dropped because the writer fell behind (every
    /// access log of this server counts here).
    pub access_log_dropped: Arc<Counter>,
    access_log: ArcSwapOption<AccessLog>,
}

impl Published {
    /// The serving state (`None` before the first config committed).
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    /// Publishes a new serving state.
    pub(super) fn publish(&self, snapshot: Snapshot) {
        self.snapshot.store(Some(Arc::new(snapshot)));
    }

    /// The access log serving now.
    pub fn access_log(&self) -> Option<Arc<AccessLog>> {
        self.access_log.load_full()
    }

    /// Publishes the access log a commit serves with.
    pub(super) fn publish_access_log(&self, log: Option<Arc<AccessLog>>) {
        self.access_log.store(log);
    }

    /// The reload counters of `policy`, created on first use (the control
    /// loop is the only writer).
    pub(super) fn policy_reloads(&self, policy: &str) -> Arc<PolicyReloads> {
        counters_of(&self.policy_reloads, policy)
    }

    /// Every policy reloaded at least once, with its counters.
    pub fn all_policy_reloads(&self) -> Arc<Vec<(String, Arc<PolicyReloads>)>> {
        self.policy_reloads.load_full()
    }

    /// The name lookup counters of `pool`, created on first use (the
    /// control loop is the only writer).
    pub(super) fn dns_resolutions(&self, pool: &str) -> Arc<DnsResolutions> {
        counters_of(&self.dns_resolutions, pool)
    }

    /// Every pool whose names were looked up, with its counters.
    pub fn all_dns_resolutions(&self) -> Arc<Vec<(String, Arc<DnsResolutions>)>> {
        self.dns_resolutions.load_full()
    }
}

/// The counters named `name` in `list`, added on first use: a copy of the
/// list with them stored in its place (one writer, the control loop; the
/// admin endpoint reads without a lock).
fn counters_of<T: Default>(list: &ArcSwap<Vec<(String, Arc<T>)>>, name: &str) -> Arc<T> {
    if let Some((_, counters)) = list.load().iter().find(|(n, _)| n == name) {
        return Arc::clone(counters);
    }
    let counters = Arc::new(T::default());
    let mut all = Vec::clone(&list.load());
    all.push((name.to_owned(), Arc::clone(&counters)));
    list.store(Arc::new(all));
    counters
}
