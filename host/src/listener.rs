//! Listeners: a bound socket, its accept loop, and the state every request
//! on it reads (the policy bound to its pools, and `on_error`), swapped
//! atomically on reload so in-flight requests finish on what they started
//! with and the next request sees the new state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::OnError;
use crate::http::{ConnInfo, ProxyShared};
use crate::policy::BoundPolicy;

/// What a request on a listener needs, replaced as a whole on reload.
#[derive(Debug)]
pub struct ListenerState {
    /// The policy bound to this listener's pools and `policy_config`.
    pub policy: Arc<BoundPolicy>,
    /// What to do when a decision fails.
    pub on_error: OnError,
    /// Plain, TLS (with its certificates) or redirect; read once per
    /// accepted connection, so new certificates serve the next one.
    pub frontend: crate::tls::Frontend,
}

/// A listener as requests see it.
#[derive(Debug)]
pub struct ListenerHandle {
    /// The listener's name in the config.
    pub name: String,
    state: ArcSwap<ListenerState>,
    decision_errors: AtomicU64,
}

impl ListenerHandle {
    /// A handle serving `state`.
    pub fn new(name: &str, state: ListenerState) -> ListenerHandle {
        ListenerHandle {
            name: name.to_owned(),
            state: ArcSwap::from_pointee(state),
            decision_errors: AtomicU64::new(0),
        }
    }

    /// The current state (one atomic load and a reference count).
    pub fn state(&self) -> Arc<ListenerState> {
        self.state.load_full()
    }

    /// Replaces the state for every following request.
    pub fn replace_state(&self, state: ListenerState) {
        self.state.store(Arc::new(state));
    }

    /// Counts a failed decision.
    pub fn count_decision_error(&self) {
        self.decision_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Failed decisions since the listener started.
    pub fn decision_errors(&self) -> u64 {
        self.decision_errors.load(Ordering::Relaxed)
    }
}

/// A listener whose accept loop is running.
pub struct RunningListener {
    /// Shared with every connection.
    pub handle: Arc<ListenerHandle>,
    /// The address actually bound.
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningListener {
    /// Starts accepting on `socket`.
    pub fn start(
        socket: TcpListener,
        handle: Arc<ListenerHandle>,
        shared: Arc<ProxyShared>,
    ) -> std::io::Result<RunningListener> {
        let local_addr = socket.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(socket, Arc::clone(&handle), shared, stopped));
        tracing::info!(listener = %handle.name, address = %local_addr, "listening");
        Ok(RunningListener {
            handle,
            local_addr,
            stop,
            task,
        })
    }

    /// Stops accepting and waits for open connections to finish their
    /// in-flight requests (each gets a graceful close), at most `grace`.
    pub async fn drain(self, grace: std::time::Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!(listener = %self.handle.name, "connections still open after the drain period");
        }
    }
}

async fn accept_loop(
    socket: TcpListener,
    handle: Arc<ListenerHandle>,
    shared: Arc<ProxyShared>,
    mut stopped: watch::Receiver<bool>,
) {
    let builder = Arc::new(crate::http::connection_builder());
    let graceful = GracefulShutdown::new();
    // The fast path's connections watch this flag (hyper's, `graceful`).
    let (draining, _) = watch::channel(false);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = %handle.name, %error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo::new(peer);
        let drain = crate::http::Drain::new(graceful.watcher(), draining.subscribe());
        let frontend = handle.state().frontend.clone();
        let (handle, shared, builder) = (
            Arc::clone(&handle),
            Arc::clone(&shared),
            Arc::clone(&builder),
        );
        tokio::spawn(async move {
            frontend
                .serve(stream, conn, handle, shared, &builder, drain)
                .await;
        });
    }
    drop(socket);
    // Idle keep-alive connections close now; busy ones after their
    // in-flight request.
    draining.send_replace(true);
    tokio::join!(graceful.shutdown(), draining.closed());
}
