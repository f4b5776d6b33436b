//! Listeners: a bound socket, its accept loop, and the state every request
//! on it reads (the policy bound to its pools, `on_error`, `send_timeout`),
//! swapped atomically on reload so in-flight requests finish on what they
//! started with and the next request sees the new state.
//!
//! Sockets are bound by [`bind`] with the listener's `backlog` (4096 by
//! default) rather than std's and tokio's 128: a burst of new connections
//! larger than the listen queue makes the kernel drop the SYNs past it, and
//! each dropped client waits for its SYN retransmit (1 s, then 3 s, 7 s,
//! ...). A reload that keeps a listener's address keeps its socket (and
//! its queue: a changed `backlog` applies the next time it is bound).
//!
//! On a listener with `accept_proxy_protocol`, each connection's task
//! first takes the PROXY header off the socket ([`proxy_protocol`]: only
//! its bytes, before TLS), and the client address it names replaces the
//! peer's; without the key, the accept path reads nothing ahead. The
//! same path serves `tcp` listeners, whose connections then go to
//! [`crate::l4`] instead of an HTTP codec.
//!
//! A drain stops accepting and waits up to its grace period for open
//! connections; then `tcp` relays still open are closed ([`Stop::Close`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::http::metrics::ConnectionMetrics;
pub use crate::http::state::{ListenerHandle, ListenerState};
use crate::http::{ConnInfo, ProxyShared};
use crate::tls::{Frontend, TlsTerminator};
use crate::upstream::Addresses;
use crate::upstream::proxy_protocol::{self, Header};

/// A listening socket on `address` with a listen queue of `backlog`
/// connections (the kernel caps it at `net.core.somaxconn`), with
/// `SO_REUSEADDR` like tokio's `bind`, so a restarted proxy can bind while
/// its old connections linger in `TIME_WAIT`. Must run inside a tokio
/// runtime.
pub fn bind(address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// A listener whose accept loop is running.
pub struct RunningListener {
    /// Shared with every connection.
    pub handle: Arc<ListenerHandle>,
    /// The address actually bound.
    pub local_addr: SocketAddr,
    /// The listen queue length the socket was bound with.
    pub backlog: u32,
    /// A second descriptor of the listening socket, handed to a new
    /// instance on upgrade (`server::upgrade`).
    pub socket: OwnedFd,
    stop: watch::Sender<Stop>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningListener {
    /// Starts accepting on `socket`, bound with `backlog` (see [`bind`]).
    pub fn start(
        socket: TcpListener,
        backlog: u32,
        handle: Arc<ListenerHandle>,
        shared: Arc<ProxyShared>,
    ) -> io::Result<RunningListener> {
        let local_addr = socket.local_addr()?;
        let fd = socket.as_fd().try_clone_to_owned()?;
        let (stop, stopped) = watch::channel(Stop::Serve);
        let task = tokio::spawn(accept_loop(socket, Arc::clone(&handle), shared, stopped));
        tracing::info!(listener = %handle.name, address = %local_addr, backlog, "listening");
        Ok(RunningListener {
            handle,
            local_addr,
            backlog,
            socket: fd,
            stop,
            task,
        })
    }

    /// Stops accepting and waits for open connections to finish their
    /// in-flight requests (each gets a graceful close) and `tcp` relays
    /// to end, at most `grace`; then the relays still open are closed.
    pub async fn drain(self, grace: std::time::Duration) {
        let _ = self.stop.send(Stop::Drain);
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!(listener = %self.handle.name, "connections still open after the drain period");
            let _ = self.stop.send(Stop::Close);
        }
    }
}

/// Where a listener is in its life, as its accept loop and its `tcp`
/// relays watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Accepting.
    Serve,
    /// Not accepting; open connections may finish.
    Drain,
    /// The drain period is over: `tcp` relays close.
    Close,
}

/// Completes when the listener's drain period is over (or the listener
/// is gone).
async fn drain_over(mut stopped: watch::Receiver<Stop>) {
    let _ = stopped.wait_for(|stop| *stop == Stop::Close).await;
}

/// How an accepted connection is served, read from the listener's state
/// when it is accepted.
enum Serving {
    /// HTTP, behind this frontend.
    Http(Frontend),
    /// A `tcp` relay, which watches the listener's [`Stop`].
    Tcp(crate::l4::Session, watch::Receiver<Stop>),
}

impl Serving {
    fn of(state: &ListenerState, stopped: &watch::Receiver<Stop>) -> Serving {
        match state.tcp {
            None => Serving::Http(state.frontend.clone()),
            Some(timeouts) => {
                let session = crate::l4::Session {
                    listener: Arc::clone(&state.name),
                    policy: Arc::clone(&state.policy),
                    on_error: state.on_error,
                    timeouts,
                    metrics: Arc::clone(&state.metrics.connections),
                };
                Serving::Tcp(session, stopped.clone())
            }
        }
    }
}

async fn accept_loop(
    socket: TcpListener,
    handle: Arc<ListenerHandle>,
    shared: Arc<ProxyShared>,
    mut stopped: watch::Receiver<Stop>,
) {
    let graceful = GracefulShutdown::new();
    // The fast path's connections watch this flag (hyper's, `graceful`);
    // `closing` is the same flag for their responses to read.
    let (draining, _) = watch::channel(false);
    let closing = Arc::new(AtomicBool::new(false));
    let bound = socket.local_addr().ok();
    // One readiness wake-up drains the queue: `accept` goes back to the
    // kernel until it says `EAGAIN` before it waits again, and this loop
    // only spawns each connection's task (its TLS handshake and requests
    // run there, not here).
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
        let conn = ConnInfo::new(peer, local_address(bound, &stream));
        let drain = crate::http::Drain::new(
            graceful.watcher(),
            draining.subscribe(),
            Arc::clone(&closing),
        );
        let state = handle.state();
        let serving = Serving::of(&state, &stopped);
        let open = OpenConnection::new(&state.metrics.connections);
        let accept_proxy = state.accept_proxy.clone();
        // An untrusted peer's first bytes are awaited this long (a `tcp`
        // listener's server may speak first: its peek_timeout).
        let first_bytes = state.tcp.map_or(PROXY_HEADER_TIMEOUT, |tcp| tcp.peek);
        drop(state);
        let (handle, shared) = (Arc::clone(&handle), Arc::clone(&shared));
        let Some(trusted) = accept_proxy else {
            spawn_connection(serving, stream, conn, handle, shared, drain, open);
            continue;
        };
        tokio::spawn(async move {
            let mut stream = stream;
            let proxied = proxied(&trusted, &mut stream, conn, first_bytes, &handle.name);
            let Some(conn) = proxied.await else {
                return drop(open);
            };
            spawn_connection(serving, stream, conn, handle, shared, drain, open);
        });
    }
    drop(socket);
    // Idle keep-alive connections close now; busy ones after their
    // in-flight request, which says `connection: close` (HTTP/1.1) or is
    // followed by a GOAWAY (HTTP/2, hyper's graceful shutdown).
    closing.store(true, Ordering::Relaxed);
    draining.send_replace(true);
    tokio::join!(graceful.shutdown(), draining.closed());
}

/// How long a connection to a listener with `accept_proxy_protocol` may
/// take to send its PROXY header (an untrusted one, its first bytes).
pub const PROXY_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The client connection as a PROXY header on `stream` tells it, when the
/// peer is `trusted`: `None` (the connection is to be closed) for a
/// trusted peer without a valid header, or an untrusted one whose first
/// bytes (awaited at most `first_bytes`) are a header. The header's bytes
/// are consumed, nothing else.
async fn proxied(
    trusted: &[crate::config::Cidr],
    stream: &mut TcpStream,
    mut conn: ConnInfo,
    first_bytes: std::time::Duration,
    listener: &str,
) -> Option<ConnInfo> {
    let peer = conn.peer;
    if !trusted.iter().any(|cidr| cidr.contains(peer.ip())) {
        let mut first = [0u8; 12];
        let peeked = tokio::time::timeout(first_bytes, stream.peek(&mut first)).await;
        if let Ok(Ok(n)) = peeked
            && proxy_protocol::looks_like_header(&first[..n])
        {
            tracing::debug!(listener, %peer, "PROXY header from an untrusted peer: connection closed");
            return None;
        }
        return Some(conn);
    }
    match proxy_protocol::read_from(stream, PROXY_HEADER_TIMEOUT).await {
        Ok(Header::Proxied(addresses)) => {
            conn.peer = addresses.source;
            conn.local = addresses.destination;
            Some(conn)
        }
        Ok(Header::Local) => Some(conn),
        Err(error) => {
            tracing::debug!(listener, %peer, %error, "connection closed");
            None
        }
    }
}

/// The address `stream` was accepted on: the listener's own, unless it
/// is bound to every address (one `getsockname` then).
fn local_address(bound: Option<SocketAddr>, stream: &TcpStream) -> SocketAddr {
    match bound {
        Some(address) if !address.ip().is_unspecified() => address,
        _ => stream
            .local_addr()
            .ok()
            .or(bound)
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
    }
}

/// Counts a connection as open while it lives.
struct OpenConnection(Arc<ConnectionMetrics>);

impl OpenConnection {
    fn new(metrics: &Arc<ConnectionMetrics>) -> OpenConnection {
        metrics.total.inc();
        metrics.active.inc();
        OpenConnection(Arc::clone(metrics))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.active.dec();
    }
}

pin_project_lite::pin_project! {
    /// A connection's task, counted open until it ends: a wrapper that
    /// polls the task in place (an `async` block awaiting it would store
    /// the task twice).
    struct Counted<F> {
        #[pin]
        task: F,
        open: OpenConnection,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.project().task.poll(cx)
    }
}

/// Spawns the task that serves one accepted connection until it closes,
/// as the listener's state said when it was accepted. Each kind is its own task, built
/// before it is spawned: a plain connection's task holds only the fast
/// path's state (no hyper, no rustls, no second copy of its arguments).
fn spawn_connection(
    serving: Serving,
    stream: TcpStream,
    conn: ConnInfo,
    listener: Arc<ListenerHandle>,
    shared: Arc<ProxyShared>,
    drain: crate::http::Drain,
    open: OpenConnection,
) {
    let frontend = match serving {
        Serving::Http(frontend) => frontend,
        Serving::Tcp(session, stopped) => {
            let client = Addresses {
                source: conn.peer,
                destination: conn.local,
            };
            let task = async move {
                // Held until the relay ends, so the accept loop's drain
                // waits for it; the relay itself closes on `Stop::Close`.
                let _draining = drain;
                crate::l4::serve(stream, client, session, drain_over(stopped)).await;
            };
            tokio::spawn(Counted { task, open });
            return;
        }
    };
    match frontend {
        Frontend::Plain => {
            let task = crate::http::serve_connection(stream, conn, listener, shared, drain);
            let task = Counted { task, open };
            log_task_size_once(std::mem::size_of_val(&task));
            tokio::spawn(task);
        }
        Frontend::RedirectToHttps(port) => {
            let task = async move {
                crate::http::redirect::serve_redirect(
                    stream,
                    port,
                    &shared.builder,
                    drain.graceful,
                )
                .await;
            };
            tokio::spawn(Counted { task, open });
        }
        Frontend::Tls(tls) => {
            let task = serve_tls(tls, stream, conn, listener, shared, drain);
            tokio::spawn(Counted { task, open });
        }
    }
}

/// Logs (at debug level, once per process) how many bytes a plain
/// connection's task carries: the bulk of what an idle connection costs.
fn log_task_size_once(bytes: usize) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| tracing::debug!(bytes, "connection task size"));
}

/// The TLS handshake, then HTTP over the TLS stream.
async fn serve_tls(
    tls: Arc<TlsTerminator>,
    stream: TcpStream,
    mut conn: ConnInfo,
    listener: Arc<ListenerHandle>,
    shared: Arc<ProxyShared>,
    drain: crate::http::Drain,
) {
    let stream = match tls.handshake(stream).await {
        Ok(stream) => stream,
        Err(error) => {
            let state = listener.state();
            state.metrics.connections.tls_handshake_errors.inc();
            return crate::tls::acceptor::log_failure(&listener.name, conn.peer, &error);
        }
    };
    let (server_name, alpn) = crate::tls::acceptor::negotiated(&stream);
    tracing::trace!(
        listener = %listener.name,
        peer = %conn.peer,
        sni = server_name.as_deref(),
        alpn = alpn.map(String::from_utf8_lossy).as_deref(),
        "TLS handshake done"
    );
    conn.tls = true;
    conn.server_name = server_name;
    crate::http::serve_connection(stream, conn, listener, shared, drain).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpStream;

    use super::bind;

    /// Connects to `address`; `Err` when the handshake did not complete
    /// within `within` (the kernel dropped the SYN: the queue is full).
    async fn connect(address: std::net::SocketAddr, within: Duration) -> Result<TcpStream, String> {
        match tokio::time::timeout(within, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(format!("connect failed: {error}")),
            Err(_) => Err(format!("not connected within {within:?}")),
        }
    }

    /// Nobody accepts here, so every connection waits in the listen queue:
    /// the queue must hold all of them (std and tokio would hold 129).
    #[tokio::test]
    async fn the_listen_queue_holds_the_configured_backlog() {
        let backlog = 600;
        let listener = bind("127.0.0.1:0".parse().unwrap(), backlog).unwrap();
        let address = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        for n in 0..backlog {
            // Generous: a queued connect completes in microseconds, a
            // dropped SYN is only retried after a second.
            let stream = connect(address, Duration::from_secs(10)).await;
            queued.push(stream.unwrap_or_else(|e| panic!("connection {n}: {e}")));
        }
    }

    /// The value asked for is the value used: a queue of 4 is full after
    /// 5 (Linux admits one more than the backlog) and the next SYN waits.
    #[tokio::test]
    async fn a_small_backlog_is_not_rounded_up() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 4).unwrap();
        let address = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        for n in 0..5 {
            let stream = connect(address, Duration::from_secs(10)).await;
            queued.push(stream.unwrap_or_else(|e| panic!("connection {n}: {e}")));
        }
        // Waiting is the only way to see that nothing happens; the SYN is
        // not retried before a second has passed, so this cannot flake.
        let extra = connect(address, Duration::from_millis(300)).await;
        assert!(extra.is_err(), "a 6th connection fit in a queue of 4");
        // Accepting one makes room (the retried SYN gets in).
        let (_accepted, _) = listener.accept().await.unwrap();
        let later = connect(address, Duration::from_secs(10)).await;
        assert!(later.is_ok(), "{later:?}");
    }
}
