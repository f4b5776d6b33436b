//! A running wasmroute server: the control loop that owns everything
//! mutable (config, compiled modules, pools, listeners) and applies
//! changes one at a time, while requests only ever read atomically swapped
//! snapshots.
//!
//! Changes come from the file watcher (policies folder, config file), from
//! [`Server::reload`] (SIGHUP) and from [`Server::shutdown`] (SIGTERM,
//! which waits up to `[server] drain_timeout` for in-flight requests);
//! [`Server::reopen_logs`] (SIGUSR1) reopens the access log. A
//! running server also listens for a new instance to hand its sockets to
//! ([`upgrade`], [`Server::take_over`], [`Server::handed_over`]).
//! Each is planned off the request path ([`plan`]) and committed only when
//! the whole plan succeeded; a refused change is logged, announced as a
//! [`ServerEvent`] and leaves the running state untouched.

mod plan;
pub mod published;
mod runtime;
pub mod upgrade;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc, oneshot};
use upgrade::{Endpoint, HandedSocket, Inherited, Takeover};

pub use crate::events::ServerEvent;
pub use plan::{Plan, Reusable, limits as policy_limits};
use published::Published;
use runtime::Runtime;
pub use watch::FileChange;
use watch::Noticed;

use crate::admin::{AdminContext, AdminServer};
use crate::config::Config;
use crate::http::ProxyShared;
use crate::lifecycle::Lifecycle;
use crate::policy::PolicyEngine;

/// How long file events must be quiet before they are acted on, unless
/// the last one says the writer is done (a rename into place, a close
/// after writing): enough for an in-place write to settle.
const DEBOUNCE: Duration = Duration::from_millis(30);

/// The longest a handed-over instance waits, after its drain, for the
/// admin connections it had accepted (a client that does not read its
/// answer cannot keep it alive).
const ADMIN_ANSWERS: Duration = Duration::from_secs(10);

/// What the control loop is asked to do.
enum Command {
    Reload(oneshot::Sender<Result<(), String>>),
    Shutdown(oneshot::Sender<()>),
    /// The listening sockets, for an upgrade.
    Sockets(oneshot::Sender<Vec<HandedSocket>>),
}

/// Listener name -> bound address, as last committed.
pub(crate) type Addresses = Arc<ArcSwap<HashMap<String, SocketAddr>>>;

/// A running proxy inside the current tokio runtime.
pub struct Server {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<ServerEvent>,
    addresses: Addresses,
    lifecycle: Arc<Lifecycle>,
    /// Turns true once a new instance took over the sockets.
    handed_over: tokio::sync::watch::Receiver<bool>,
    /// `None` when the upgrade socket could not be bound.
    upgrade: Option<Endpoint>,
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
    /// listeners, starts watching the policies folder and config file, and
    /// listens on the upgrade socket.
    pub async fn start(config_path: impl AsRef<Path>) -> anyhow::Result<Server> {
        let config_path = watch::canonical(config_path.as_ref());
        let config = load(&config_path)?;
        Self::launch(config_path, config, Inherited::default()).await
    }

    /// `serve --upgrade`: takes over the listening sockets (the admin
    /// endpoint's included) of the instance running with this config's
    /// upgrade socket, starts like
    /// [`Server::start`], then tells the old instance, which drains and
    /// exits. Fails (and the old instance keeps serving) when no instance
    /// answers or this one cannot start.
    pub async fn take_over(config_path: impl AsRef<Path>) -> anyhow::Result<Server> {
        let config_path = watch::canonical(config_path.as_ref());
        let config = load(&config_path)?;
        let socket = upgrade_socket(&config, &config_path);
        let mut takeover = tokio::task::spawn_blocking(move || Takeover::connect(&socket))
            .await
            .context("the handover panicked")??;
        let inherited = std::mem::take(&mut takeover.inherited);
        tracing::info!(
            sockets = inherited.len(),
            "upgrade: received the listening sockets"
        );
        let server = Self::launch(config_path, config, inherited).await?;
        tokio::task::spawn_blocking(move || takeover.confirm())
            .await
            .context("the handover panicked")?
            .context("telling the previous instance that this one serves")?;
        Ok(server)
    }

    async fn launch(
        config_path: std::path::PathBuf,
        config: Config,
        mut inherited: Inherited,
    ) -> anyhow::Result<Server> {
        let socket = upgrade_socket(&config, &config_path);
        let admin_socket = admin_socket(&config, &mut inherited)?;
        let published = Arc::new(Published::default());
        let engine = PolicyEngine::new().context("creating the Wasm engine")?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(ProxyShared {
            events: events.clone(),
            builder: crate::http::connection_builder(),
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
        runtime.inherited = inherited;
        runtime
            .apply_loaded(config)
            .await
            .map_err(|reason| anyhow::anyhow!("{reason}"))?;
        // Sockets no listener of this config took are closed here.
        runtime.inherited = Inherited::default();
        let (commands, command_rx) = mpsc::channel(16);
        tokio::spawn(control_loop(runtime, command_rx, file_events));
        let lifecycle = Arc::new(Lifecycle::default());
        lifecycle.set_ready();
        let (handed_over_tx, handed_over) = tokio::sync::watch::channel(false);
        let admin_handed = admin_socket.as_ref().and_then(|(address, socket)| {
            HandedSocket::admin(*address, socket)
                .inspect_err(
                    |error| tracing::error!(%error, "cannot keep the admin socket for an upgrade"),
                )
                .ok()
        });
        let upgrade = match Endpoint::listen(
            &socket,
            commands.clone(),
            admin_handed,
            handed_over_tx,
        ) {
            Ok(endpoint) => Some(endpoint),
            Err(error) => {
                tracing::warn!(socket = %socket.display(), %error, "cannot listen on the upgrade socket; `serve --upgrade` will not find this instance");
                None
            }
        };
        let admin = admin_socket.map(|(_, socket)| {
            let context = AdminContext {
                published: Arc::clone(&published),
                lifecycle: Arc::clone(&lifecycle),
                control: Control {
                    commands: commands.downgrade(),
                },
            };
            // Once handed over, the new instance alone accepts on it.
            AdminServer::start(socket, context, handed_over.clone())
        });
        Ok(Server {
            commands,
            events,
            addresses,
            lifecycle,
            handed_over,
            upgrade,
            published,
            admin,
        })
    }

    /// Completes once a new instance has taken over the listening
    /// sockets (`serve --upgrade`) and serves; then this one should
    /// [`Server::shutdown`]. Never completes without an upgrade socket.
    pub async fn handed_over(&self) {
        let mut handed_over = self.handed_over.clone();
        if handed_over.wait_for(|done| *done).await.is_err() {
            std::future::pending::<()>().await;
        }
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

    /// Stops accepting, lets in-flight requests finish (at most
    /// `[server] drain_timeout`), and stops.
    pub async fn shutdown(mut self) {
        self.lifecycle.start_draining();
        // No new instance can take over a draining one.
        self.upgrade = None;
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown(reply)).await.is_ok() {
            let _ = done.await;
        }
        // After a handover, the admin requests this instance accepted are
        // answered before it goes (the new instance accepts the rest).
        if *self.handed_over.borrow()
            && let Some(admin) = &mut self.admin
            && tokio::time::timeout(ADMIN_ANSWERS, admin.stopped())
                .await
                .is_err()
        {
            tracing::warn!(
                ?ADMIN_ANSWERS,
                "admin connections still open after the handover; closing them"
            );
        }
    }
}

async fn control_loop(
    mut runtime: Runtime,
    mut commands: mpsc::Receiver<Command>,
    mut file_events: mpsc::UnboundedReceiver<Noticed>,
) {
    let mut round: Option<runtime::Round> = None;
    loop {
        let due = runtime.next_round();
        tokio::select! {
            outcomes = async { round.as_mut().expect("guarded").await }, if round.is_some() => {
                round = None;
                runtime.finish_round(outcomes).await;
            }
            () = sleep_until(due), if round.is_none() && due.is_some() => {
                round = runtime.start_round();
            }
            command = commands.recv() => match command {
                Some(Command::Reload(reply)) => {
                    let result = runtime.reload_config().await;
                    let _ = reply.send(result);
                }
                Some(Command::Sockets(reply)) => {
                    let _ = reply.send(runtime.handed_sockets());
                }
                Some(Command::Shutdown(reply)) => {
                    let grace = runtime.drain_timeout();
                    tracing::info!(?grace, "draining: in-flight requests may finish");
                    runtime.drain(grace).await;
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

/// Sleeps until `due` (forever when none).
async fn sleep_until(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// Reads and validates the config file at `path`.
fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))
}

/// The admin endpoint's socket and its configured address, when the
/// config has `[admin]`: the previous instance's when it had the same
/// address (`serve --upgrade`), else bound now.
fn admin_socket(
    config: &Config,
    inherited: &mut Inherited,
) -> anyhow::Result<Option<(SocketAddr, tokio::net::TcpListener)>> {
    let Some(admin) = &config.admin else {
        return Ok(None);
    };
    let taken = inherited.take_admin(admin.address).map(|socket| {
        socket
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(socket))
    });
    let socket = match taken {
        Some(Ok(socket)) => {
            tracing::info!("admin socket taken over from the previous instance");
            socket
        }
        Some(Err(error)) => {
            tracing::warn!(%error, "cannot use the inherited admin socket; binding a new one");
            crate::admin::bind(&config.file, admin.address)?
        }
        None => crate::admin::bind(&config.file, admin.address)?,
    };
    Ok(Some((admin.address, socket)))
}

/// `[server] upgrade_socket`, or the default for this config file.
fn upgrade_socket(config: &Config, config_path: &Path) -> std::path::PathBuf {
    (config.server.upgrade_socket.clone()).unwrap_or_else(|| upgrade::default_socket(config_path))
}

/// Collects file changes until the last one says its writer is done, or
/// none arrived for [`DEBOUNCE`].
async fn debounce(
    first: Noticed,
    events: &mut mpsc::UnboundedReceiver<Noticed>,
) -> Vec<FileChange> {
    let mut changes = Vec::new();
    let mut next = Some(first);
    while let Some(Noticed { change, settled }) = next.take() {
        if !changes.contains(&change) {
            changes.push(change);
        }
        next = match events.try_recv() {
            Ok(queued) => Some(queued),
            Err(_) if settled => None,
            Err(_) => tokio::time::timeout(DEBOUNCE, events.recv())
                .await
                .ok()
                .flatten(),
        };
    }
    changes
}
