//! A running wasmroute server: the control loop that owns everything
//! mutable (config, compiled modules, pools, listeners) and applies
//! changes one at a time, while requests only ever read atomically swapped
//! snapshots.
//!
//! Changes come from the file watcher (policies folder, config file), from
//! [`Server::reload`] (SIGHUP) and from [`Server::shutdown`] (SIGTERM).
//! Each is planned off the request path ([`plan`]) and committed only when
//! the whole plan succeeded; a refused change is logged, announced as a
//! [`ServerEvent`] and leaves the running state untouched.

mod plan;
mod runtime;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use plan::{Plan, Reusable};
use runtime::Runtime;
pub use watch::FileChange;

use crate::config::Config;
use crate::http::proxy::ProxyShared;
use crate::policy::PolicyEngine;

/// How long file events must be quiet before they are acted on.
const DEBOUNCE: Duration = Duration::from_millis(75);
/// How long a drain waits for in-flight requests.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Something that happened to the server, for operators' tooling and tests.
#[derive(Debug, Clone)]
pub enum ServerEvent {
    /// A module version is now serving (at start, after a file change, or
    /// after a config reload that compiled it).
    PolicyLoaded {
        /// Policy name (file stem).
        policy: String,
        /// Its version number.
        version: u64,
    },
    /// A module was refused; the previous version keeps serving.
    PolicyRejected {
        /// The refused file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// A new config is serving.
    ConfigReloaded,
    /// A config was refused; the previous one keeps serving.
    ConfigRejected {
        /// `FILE: key: reason` lines.
        reason: String,
    },
    /// A backend's health changed: its active check took it down or
    /// brought it up, or passive checking ejected it or let it back in
    /// (also logged, once per change, with the reason).
    BackendHealth {
        /// The pool.
        pool: String,
        /// The backend's address.
        backend: SocketAddr,
        /// What changed.
        change: crate::health::HealthChange,
        /// Why.
        reason: String,
    },
    /// A decision trapped, timed out or was invalid; `on_error` handled it.
    DecisionFailed {
        /// The listener.
        listener: String,
        /// The policy.
        policy: String,
        /// Why.
        reason: String,
    },
    /// A listener's policy failed repeatedly and was tripped (logged once):
    /// its requests go to `on_error` without calling it for `back_off`,
    /// then one request tries it again; a failure of that one trips it
    /// again, for longer.
    PolicyTripped {
        /// The listener.
        listener: String,
        /// The policy.
        policy: String,
        /// How long it is off.
        back_off: Duration,
        /// The failure that tripped it.
        reason: String,
    },
}

enum Command {
    Reload(oneshot::Sender<Result<(), String>>),
    Shutdown(oneshot::Sender<()>),
}

/// Listener name -> bound address, as last committed.
pub(crate) type Addresses = Arc<ArcSwap<HashMap<String, SocketAddr>>>;

/// A running proxy inside the current tokio runtime.
pub struct Server {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<ServerEvent>,
    addresses: Addresses,
}

impl Server {
    /// Loads the config, compiles and validates its policies, binds its
    /// listeners and starts watching the policies folder and config file.
    pub async fn start(config_path: impl AsRef<Path>) -> anyhow::Result<Server> {
        let config_path = watch::canonical(config_path.as_ref());
        let config = Config::load(&config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
        let engine = PolicyEngine::new().context("creating the Wasm engine")?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(ProxyShared {
            events: events.clone(),
        });
        let addresses: Addresses = Arc::default();
        let (file_changes, file_events) = mpsc::unbounded_channel();
        let mut runtime = Runtime::new(
            config_path,
            engine,
            shared,
            events.clone(),
            Arc::clone(&addresses),
            file_changes,
        );
        runtime
            .apply_config(config)
            .await
            .map_err(|reason| anyhow::anyhow!("{reason}"))?;
        let (commands, command_rx) = mpsc::channel(16);
        tokio::spawn(control_loop(runtime, command_rx, file_events));
        Ok(Server {
            commands,
            events,
            addresses,
        })
    }

    /// The address a listener is bound to (the real port when the config
    /// says port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addresses.load().get(name).copied()
    }

    /// Subscribes to what happens from now on.
    pub fn events(&self) -> broadcast::Receiver<ServerEvent> {
        self.events.subscribe()
    }

    /// Re-reads the config file (what SIGHUP does). An error means the new
    /// config was refused and the old one keeps serving.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Reload(reply))
            .await
            .context("the server has stopped")?;
        answer
            .await
            .context("the server has stopped")?
            .map_err(|reason| anyhow::anyhow!("{reason}"))
    }

    /// Stops accepting, lets in-flight requests finish (at most 30 s), and
    /// stops.
    pub async fn shutdown(self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown(reply)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn control_loop(
    mut runtime: Runtime,
    mut commands: mpsc::Receiver<Command>,
    mut file_events: mpsc::UnboundedReceiver<FileChange>,
) {
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Reload(reply)) => {
                    let result = runtime.reload_config().await;
                    let _ = reply.send(result);
                }
                Some(Command::Shutdown(reply)) => {
                    runtime.drain(DRAIN_GRACE).await;
                    let _ = reply.send(());
                    return;
                }
                None => {
                    // The `Server` was dropped without a shutdown.
                    runtime.drain(Duration::ZERO).await;
                    return;
                }
            },
            Some(first) = file_events.recv() => {
                let changes = debounce(first, &mut file_events).await;
                runtime.apply_file_changes(changes).await;
            }
        }
    }
}

/// Collects file changes until none arrived for [`DEBOUNCE`].
async fn debounce(
    first: FileChange,
    events: &mut mpsc::UnboundedReceiver<FileChange>,
) -> Vec<FileChange> {
    let mut changes = vec![first];
    while let Ok(Some(change)) = tokio::time::timeout(DEBOUNCE, events.recv()).await {
        if !changes.contains(&change) {
            changes.push(change);
        }
    }
    changes
}
