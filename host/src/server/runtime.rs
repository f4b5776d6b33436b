//! The mutable state of a server, owned by its control loop: applies a new
//! config or new policy files, committing only what was fully validated.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

use super::plan::{self, Kept, Plan, Reusable};
use super::published::{Published, PublishedListener, Snapshot};
use super::upgrade::{HandedSocket, Inherited};
use super::watch::{FileChange, FileWatcher, Noticed};
use super::{Addresses, ServerEvent};
use crate::access_log::AccessLog;
use crate::config::{Config, ConfigError, ListenerConfig, ServerConfig};
use crate::dns::Discovery;
use crate::health::HealthTasks;
use crate::http::ProxyShared;
use crate::http::metrics::ListenerMetrics;
use crate::listener::{ListenerHandle, ListenerState, RunningListener};
use crate::policy::{CompiledPolicy, PolicyEngine, SharedCounters};
use crate::pool::BackendPool;
use crate::tls::Frontend;

mod names;

/// A policy module bound to the listeners that use it, ready to swap in;
/// `None` when the file is unchanged.
type PolicyUpdate = Option<(Arc<CompiledPolicy>, Vec<(String, ListenerState)>)>;

struct Serving {
    config: Config,
    modules: HashMap<String, Arc<CompiledPolicy>>,
    pools: HashMap<String, Arc<BackendPool>>,
    counters: HashMap<String, Arc<SharedCounters>>,
    /// By listener name, with the address the config asked for.
    listeners: HashMap<String, (SocketAddr, RunningListener)>,
    access_log: Option<Arc<AccessLog>>,
    /// Health checkers and ejection sweepers of `pools`; dropping them
    /// (when the next config commits) stops them.
    #[expect(dead_code, reason = "held for its Drop, which stops the tasks")]
    health: HealthTasks,
}

impl Serving {
    /// Each listener's metrics as it serves now, by name.
    fn listener_metrics(&self) -> HashMap<String, Arc<ListenerMetrics>> {
        (self.listeners.iter())
            .map(|(name, (_, running))| (name.clone(), Arc::clone(&running.handle.state().metrics)))
            .collect()
    }
}

pub(super) struct Runtime {
    config_path: PathBuf,
    engine: PolicyEngine,
    shared: Arc<ProxyShared>,
    events: broadcast::Sender<ServerEvent>,
    addresses: Addresses,
    file_changes: mpsc::UnboundedSender<Noticed>,
    published: Arc<Published>,
    /// What the watcher watches: the policies folder and certificate files.
    watcher: Option<((PathBuf, Vec<PathBuf>), FileWatcher)>,
    serving: Option<Serving>,
    /// [`crate::tls::certificate_digest`] of the serving config.
    certificates: Option<[u8; 32]>,
    /// Listening sockets handed over by the previous instance, taken by
    /// the first config's listeners (`serve --upgrade`).
    pub(super) inherited: Inherited,
    /// The serving config as loaded, before its names were resolved.
    loaded: Option<Config>,
    /// The last good answers of the backend names.
    discovery: Discovery,
    /// When the names are due to be looked up again; none without names.
    next_round: Option<Instant>,
}

pub(super) use names::Round;

impl Runtime {
    pub(super) fn new(
        config_path: PathBuf,
        engine: PolicyEngine,
        shared: Arc<ProxyShared>,
        events: broadcast::Sender<ServerEvent>,
        addresses: Addresses,
        file_changes: mpsc::UnboundedSender<Noticed>,
        published: Arc<Published>,
    ) -> Runtime {
        Runtime {
            config_path,
            engine,
            shared,
            events,
            addresses,
            file_changes,
            published,
            watcher: None,
            serving: None,
            certificates: None,
            inherited: Inherited::default(),
            loaded: None,
            discovery: Discovery::default(),
            next_round: None,
        }
    }

    /// The serving config's `[server] drain_timeout`.
    pub(super) fn drain_timeout(&self) -> Duration {
        self.serving.as_ref().map_or_else(
            || ServerConfig::default().drain_timeout,
            |s| s.config.server.drain_timeout,
        )
    }

    /// A descriptor of every listening socket, for a new instance.
    pub(super) fn handed_sockets(&self) -> Vec<HandedSocket> {
        let Some(serving) = &self.serving else {
            return Vec::new();
        };
        let listeners = serving.listeners.iter();
        listeners
            .filter_map(
                |(name, (address, running))| match running.socket.try_clone() {
                    Ok(fd) => Some(HandedSocket {
                        name: name.clone(),
                        address: *address,
                        fd,
                    }),
                    Err(error) => {
                        tracing::error!(listener = %name, %error, "cannot hand over the socket");
                        None
                    }
                },
            )
            .collect()
    }

    /// Re-reads the config file and applies it; Err lists why it was refused.
    pub(super) async fn reload_config(&mut self) -> Result<(), String> {
        let result = match Config::load(&self.config_path) {
            Ok(config) => self.apply_loaded(config).await,
            Err(errors) => Err(errors.to_string()),
        };
        match &result {
            Ok(()) => {
                self.published.config_reloads_ok.inc();
                tracing::info!(file = %self.config_path.display(), "config reloaded");
            }
            Err(reason) => {
                self.published.config_reloads_refused.inc();
                tracing::error!(file = %self.config_path.display(), %reason, "config refused; the previous config keeps serving");
                let _ = self.events.send(ServerEvent::ConfigRejected {
                    reason: reason.clone(),
                });
            }
        }
        result
    }

    /// Plans `config` (names resolved) and commits it if the whole plan
    /// succeeded.
    pub(super) async fn apply_config(&mut self, config: Config) -> Result<(), String> {
        let certificates = crate::tls::certificate_digest(&config);
        if self.serving.as_ref().is_some_and(|s| s.config == config)
            && !self.policy_files_changed()
            && self.certificates == Some(certificates)
        {
            return Ok(());
        }
        let engine = self.engine.clone();
        let (modules, pools, counters, metrics) = match &self.serving {
            Some(s) => (
                Some(s.modules.clone()),
                Some(s.pools.clone()),
                Some(s.counters.clone()),
                Some(s.listener_metrics()),
            ),
            None => (None, None, None, None),
        };
        let access_log = self.serving.as_ref().and_then(|s| s.access_log.clone());
        let dropped = Arc::clone(&self.published.access_log_dropped);
        let plan = tokio::task::spawn_blocking(move || {
            let reuse = Reusable {
                modules: modules.as_ref(),
                pools: pools.as_ref(),
                counters: counters.as_ref(),
                metrics: metrics.as_ref(),
                access_log: access_log.as_ref(),
                access_log_dropped: Some(&dropped),
            };
            Plan::build(config, &engine, reuse)
        })
        .await
        .map_err(|e| format!("planning the config panicked: {e}"))?
        .map_err(|errors| join_lines(&errors))?;
        let sockets = self.bind_sockets(&plan.config)?;
        self.watch(&plan.config);
        self.certificates = Some(certificates);
        self.commit(plan, sockets);
        let _ = self.events.send(ServerEvent::ConfigReloaded);
        Ok(())
    }

    fn policy_files_changed(&self) -> bool {
        let Some(serving) = &self.serving else {
            return true;
        };
        serving.modules.iter().any(|(name, module)| {
            let path = serving.config.policy_path(name);
            plan::file_digest(&path).map_or(true, |(_, digest)| digest != module.digest)
        })
    }

    /// Binds the sockets of listeners that are new or moved; a listener
    /// whose address is unchanged keeps its socket (and its `backlog`).
    /// A socket handed over by the previous instance is used instead of a
    /// new one when its listener matches ([`Inherited::take`]).
    fn bind_sockets(&mut self, config: &Config) -> Result<HashMap<String, TcpListener>, String> {
        let mut sockets = HashMap::new();
        for (index, listener) in config.listeners.iter().enumerate() {
            if let Some(running) = self.kept_listener(listener) {
                if running.backlog != listener.backlog {
                    tracing::info!(
                        listener = %listener.name, bound = running.backlog, asked = listener.backlog,
                        "backlog changed; it applies when the socket is bound again (new address or restart)"
                    );
                }
                continue;
            }
            if let Some(socket) = self.inherit(listener) {
                sockets.insert(listener.name.clone(), socket);
                continue;
            }
            let socket =
                crate::listener::bind(listener.address, listener.backlog).map_err(|e| {
                    format!(
                        "{}: listeners[{index}].address: cannot listen on {}: {e}",
                        config.file.display(),
                        listener.address
                    )
                })?;
            sockets.insert(listener.name.clone(), socket);
        }
        Ok(sockets)
    }

    /// The previous instance's socket for `listener`, if it handed one over.
    fn inherit(&mut self, listener: &ListenerConfig) -> Option<TcpListener> {
        let socket = self.inherited.take(&listener.name, listener.address)?;
        let inherited = socket
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(socket));
        match inherited {
            Ok(socket) => {
                tracing::info!(listener = %listener.name, "listening socket taken over from the previous instance");
                Some(socket)
            }
            Err(error) => {
                tracing::warn!(listener = %listener.name, %error, "cannot use the inherited socket; binding a new one");
                None
            }
        }
    }

    /// The running listener that keeps its socket for `listener` (same
    /// name, same address).
    fn kept_listener(&self, listener: &ListenerConfig) -> Option<&RunningListener> {
        let serving = self.serving.as_ref()?;
        let (address, running) = serving.listeners.get(&listener.name)?;
        (*address == listener.address).then_some(running)
    }

    fn commit(&mut self, plan: Plan, mut sockets: HashMap<String, TcpListener>) {
        let grace = plan.config.server.drain_timeout;
        let reload = self.serving.is_some();
        let (mut old, replaced_pools) = match self.serving.take() {
            Some(serving) => (serving.listeners, serving.pools),
            None => Default::default(),
        };
        let mut listeners = HashMap::new();
        for (config, state) in plan.config.listeners.iter().zip(plan.listeners) {
            let running = match (sockets.remove(&config.name), old.remove(&config.name)) {
                (None, Some((_, running))) => {
                    running.handle.replace_state(state);
                    running
                }
                (Some(socket), previous) => {
                    if let Some((_, previous)) = previous {
                        tokio::spawn(previous.drain(grace));
                    }
                    let handle = Arc::new(ListenerHandle::new(&config.name, state));
                    let shared = Arc::clone(&self.shared);
                    match RunningListener::start(socket, config.backlog, handle, shared) {
                        Ok(running) => running,
                        Err(error) => {
                            tracing::error!(listener = %config.name, %error, "cannot start listener");
                            continue;
                        }
                    }
                }
                (None, None) => unreachable!("every listener is either kept or bound"),
            };
            listeners.insert(config.name.clone(), (config.address, running));
        }
        for (_, (_, removed)) in old {
            tracing::info!(listener = %removed.handle.name, "listener removed; draining");
            tokio::spawn(removed.drain(grace));
        }
        // New requests go to the new pools' backends from now on: an
        // address that stays hands its idle connections over, one that
        // vanished closes its pooled ones once their requests finish.
        for (name, replaced) in &replaced_pools {
            replaced.retire(plan.pools.get(name).map(Arc::as_ref));
        }
        let addresses = listeners
            .iter()
            .map(|(name, (_, running))| (name.clone(), running.local_addr))
            .collect();
        self.addresses.store(Arc::new(addresses));
        for module in &plan.fresh_modules {
            if reload {
                self.published.policy_reloads(&module.name).ok.inc();
            }
            self.announce_loaded(module);
        }
        for reason in &plan.kept {
            tracing::warn!(file = %plan.config.file.display(), "config applied, but {reason}");
        }
        for failure in &plan.shadow_failures {
            tracing::warn!(
                key = %failure.key, reason = %failure.reason,
                "config applied, but a shadow candidate cannot decide: its listener serves, and every sampled request counts as a shadow error"
            );
        }
        self.publish(&plan.config, &plan.pools, &listeners);
        self.published.publish_access_log(plan.access_log.clone());
        // The previous config's checkers were stopped with its `Serving`
        // above; the new pools share their backends' stats.
        let health = HealthTasks::start(&plan.config, &plan.pools, &self.events);
        self.serving = Some(Serving {
            config: plan.config,
            modules: plan.modules,
            pools: plan.pools,
            counters: plan.counters,
            listeners,
            access_log: plan.access_log,
            health,
        });
    }

    /// Publishes what serves now for the admin endpoint.
    fn publish(
        &self,
        config: &Config,
        pools: &HashMap<String, Arc<BackendPool>>,
        listeners: &HashMap<String, (SocketAddr, RunningListener)>,
    ) {
        let listeners = (config.listeners.iter())
            .filter_map(|l| listeners.get(&l.name))
            .map(|(_, running)| PublishedListener {
                name: running.handle.name.clone(),
                address: running.local_addr,
                handle: Arc::clone(&running.handle),
            })
            .collect();
        let pools = (config.pools.iter())
            .filter_map(|p| pools.get(&p.name).cloned())
            .collect();
        self.published.publish(Snapshot {
            config: config.clone(),
            listeners,
            pools,
            names: self.discovery.resolved_names(config),
        });
    }

    fn announce_loaded(&self, module: &CompiledPolicy) {
        tracing::info!(policy = %module.name, version = module.version, sha256 = %module.short_digest(), "policy serving");
        let _ = self.events.send(ServerEvent::PolicyLoaded {
            policy: module.name.clone(),
            version: module.version,
        });
    }

    /// (Re)starts the file watcher when the policies folder or the set of
    /// certificate files changed.
    fn watch(&mut self, config: &Config) {
        let policy_dir = config.policies.dir.as_path();
        let targets = (
            policy_dir.to_path_buf(),
            crate::tls::certificate_files(config),
        );
        if self.watcher.as_ref().is_some_and(|(t, _)| *t == targets) {
            return;
        }
        self.watcher = None;
        let changes = self.file_changes.clone();
        match FileWatcher::start(policy_dir, &self.config_path, &targets.1, changes) {
            Ok(watcher) => self.watcher = Some((targets, watcher)),
            Err(error) => tracing::error!(
                dir = %policy_dir.display(), %error,
                "cannot watch the policies or certificate folders; changed files will not be reloaded"
            ),
        }
    }

    /// Acts on debounced file changes.
    pub(super) async fn apply_file_changes(&mut self, changes: Vec<FileChange>) {
        if changes.contains(&FileChange::Config) {
            // A config reload also picks up changed policy files.
            let _ = self.reload_config().await;
            return;
        }
        for change in changes {
            if let FileChange::Policy(path) = change {
                self.apply_policy_file(&path).await;
            }
        }
    }

    async fn apply_policy_file(&mut self, path: &Path) {
        let Some(serving) = &self.serving else { return };
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            return;
        };
        // Listeners whose policy or shadow candidate this file is.
        let users: Vec<usize> = (serving.config.listeners.iter().enumerate())
            .filter(|(_, l)| Config::policies_of(l).any(|p| p == name))
            .map(|(index, _)| index)
            .collect();
        if !path.exists() {
            if !users.is_empty() {
                tracing::warn!(file = %path.display(), "policy file deleted; the last good version keeps serving");
            }
            return;
        }
        let engine = self.engine.clone();
        let config = serving.config.clone();
        let current = serving.modules.get(&name).cloned();
        let mut modules = serving.modules.clone();
        let pools = serving.pools.clone();
        let counters = serving.counters.clone();
        let metrics = serving.listener_metrics();
        let access_log = serving.access_log.clone();
        let frontends: HashMap<String, Frontend> = (serving.listeners.iter())
            .map(|(name, (_, running))| (name.clone(), running.handle.state().frontend.clone()))
            .collect();
        let owned_path = path.to_path_buf();
        let planned = tokio::task::spawn_blocking(move || {
            let (module, fresh) = plan::load_module(&engine, &name, &owned_path, current.as_ref())?;
            if !fresh {
                return Ok(None);
            }
            modules.insert(name.clone(), Arc::clone(&module));
            let states = users
                .iter()
                .map(|&index| {
                    let listener = &config.listeners[index];
                    let kept = Kept {
                        counters: counters.get(&listener.name).cloned().unwrap_or_default(),
                        metrics: metrics.get(&listener.name).cloned(),
                        access_log: access_log.clone(),
                    };
                    let frontend = frontends.get(&listener.name).cloned().unwrap_or_default();
                    let state = plan::bind_listener(
                        &config, index, listener, &modules, &pools, kept, frontend,
                    )
                    .map_err(|e: ConfigError| e.reason)?;
                    refused_candidate(&state, &name)?;
                    Ok((listener.name.clone(), state))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Some((module, states)))
        })
        .await
        .unwrap_or_else(|e| Err(format!("loading the policy panicked: {e}")));
        self.commit_policy(path, planned);
    }

    fn commit_policy(&mut self, path: &Path, planned: Result<PolicyUpdate, String>) {
        let Some(serving) = &mut self.serving else {
            return;
        };
        match planned {
            Ok(None) => {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                if let Some(module) = serving.modules.get(name) {
                    tracing::info!(
                        file = %path.display(), version = module.version, sha256 = %module.short_digest(),
                        "policy file unchanged (same bytes); the serving version stays"
                    );
                }
            }
            Ok(Some((module, states))) => {
                if states.is_empty() {
                    tracing::info!(file = %path.display(), "policy compiled; no listener uses it");
                    return;
                }
                for (listener, state) in states {
                    if let Some((_, running)) = serving.listeners.get(&listener) {
                        running.handle.replace_state(state);
                    }
                }
                serving
                    .modules
                    .insert(module.name.clone(), Arc::clone(&module));
                self.published.policy_reloads(&module.name).ok.inc();
                self.announce_loaded(&module);
            }
            Err(reason) => {
                if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                    self.published.policy_reloads(name).refused.inc();
                }
                tracing::error!(file = %path.display(), %reason, "policy refused; the previous version keeps serving");
                let _ = self.events.send(ServerEvent::PolicyRejected {
                    file: path.to_path_buf(),
                    reason,
                });
            }
        }
    }

    /// Stops every listener, letting in-flight requests finish.
    pub(super) async fn drain(&mut self, grace: Duration) {
        self.watcher = None;
        if let Some(serving) = self.serving.take() {
            let drains = serving
                .listeners
                .into_values()
                .map(|(_, running)| running.drain(grace));
            for drain in drains {
                drain.await;
            }
        }
    }
}

/// A new candidate file is refused like a live policy's when it cannot
/// be bound (the previous candidate keeps shadowing); a failed candidate
/// of another file does not refuse this one.
fn refused_candidate(state: &ListenerState, file_policy: &str) -> Result<(), String> {
    match state.shadow.as_ref() {
        Some(shadow) if shadow.policy() == file_policy => match shadow.failure() {
            Some(reason) => Err(reason.to_owned()),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

fn join_lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
