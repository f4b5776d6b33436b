//! A running wasmroute server: the control loop that owns everything
//! mutable (config, compiled modules, pools, listeners) and applies
//! changes one at a time, while requests only ever read atomically swapped
//! snapshots.
//!
//! Changes come from the file watcher (policies folder, config file), from
//! [`Server::reload`] (SIGHUP) and from [`Server::shutdown`] (SIGTERM);
//! [`Server::reopen_logs`] (SIGUSR1) reopens the access log.
//! Each is planned off the request path ([`plan`]) and committed only when
//! the whole plan succeeded; a refused change is logged, announced as a
//! [`ServerEvent`] and leaves the running state untouched.

mod plan;
pub mod published;
mod runtime;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use crate::events::ServerEvent;
pub use plan::{Plan, Reusable};
use published::Published;
use runtime::Runtime;
pub use watch::FileChange;

use crate::admin::{AdminContext, AdminServer};
use crate::config::Config;
use crate::http::ProxyShared;
use crate::lifecycle::Lifecycle;
use crate::policy::PolicyEngine;

/// How long file events must be quiet before they are acted on: enough
/// for a write-then-rename or an in-place write to settle, short enough
/// that a dropped module serves within 100 ms.
const DEBOUNCE: Duration = Duration::from_millis(30);
/// How long a drain waits for in-flight requests.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// What the control loop is asked to do.
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
    lifecycle: Arc<Lifecycle>,
    published: Arc<Published>,
    /// Stops with the server (dropped last, after the drain).
    admin: Option<AdminServer>,
}

/// Asks the control loop for a config reload without keeping it alive:
/// what the admin endpoint holds.
#[derive(Clone)]
pub struct Control {
    commands: mpsc::WeakSender<Command>,
}

impl Control {
    /// Re-reads the config file, like [`Server::reload`]; `Err` holds the
    /// reasons it was refused, one `FILE: key: reason` per line.
    pub async fn reload(&self) -> Result<(), String> {
        let stopped = || "the server has stopped".to_owned();
        let commands = self.commands.upgrade().ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Reload(reply))
            .await
            .map_err(|_| stopped())?;
        drop(commands);
        answer.await.map_err(|_| stopped())?
    }
}

impl Server {
    /// Loads the config, compiles and validates its policies, binds its
    /// listeners and starts watching the policies folder and config file.
    pub async fn start(config_path: impl AsRef<Path>) -> anyhow::Result<Server> {
        let config_path = watch::canonical(config_path.as_ref());
        let config = Config::load(&config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
        let admin_socket = match &config.admin {
            Some(admin) => Some(crate::admin::bind(&config.file, admin.address)?),
            None => None,
        };
        let published = Arc::new(Published::default());
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
            Arc::clone(&published),
        );
        runtime
            .apply_config(config)
            .await
            .map_err(|reason| anyhow::anyhow!("{reason}"))?;
        let (commands, command_rx) = mpsc::channel(16);
        tokio::spawn(control_loop(runtime, command_rx, file_events));
        let lifecycle = Arc::new(Lifecycle::default());
        lifecycle.set_ready();
        let admin = admin_socket.map(|socket| {
            AdminServer::start(
                socket,
                AdminContext {
                    published: Arc::clone(&published),
                    lifecycle: Arc::clone(&lifecycle),
                    control: Control {
                        commands: commands.downgrade(),
                    },
                },
            )
        });
        Ok(Server {
            commands,
            events,
            addresses,
            lifecycle,
            published,
            admin,
        })
    }

    /// The address the admin endpoint is bound to, when the config has an
    /// `[admin]` section (the real port when it says port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// The address a listener is bound to (the real port when the config
    /// says port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addresses.load().get(name).copied()
    }

    /// Ready, draining: what `/ready` reports.
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
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

    /// Makes the access log open its file again before its next line
    /// (what SIGUSR1 does, after logrotate moved the file away); a no-op
    /// without a file log.
    pub fn reopen_logs(&self) {
        if let Some(log) = self.published.access_log() {
            log.reopen();
        }
    }

    /// Stops accepting, lets in-flight requests finish (at most 30 s), and
    /// stops.
    pub async fn shutdown(self) {
        self.lifecycle.start_draining();
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
