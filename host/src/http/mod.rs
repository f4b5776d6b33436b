//! HTTP serving: one request pipeline ([`pipeline`]) and two codecs that
//! move its bytes: the HTTP/1.1 fast codec ([`fast`]) for HTTP/1.1
//! requests with or without bodies, and hyper's ([`proxy`]) for HTTP/2,
//! WebSocket upgrades and HTTP/1.0. The header rules of both live in
//! [`headers`], the upstream error and retry rules in [`retry`].
//!
//! Malformed or ambiguous requests are answered with a 4xx saying why
//! (400, 417, or 431 for oversized heads) and the connection is closed;
//! nothing reaches the policy or a backend.

pub mod access;
pub mod body;
pub mod client;
pub mod fast;
pub mod headers;
pub mod metrics;
pub mod pipeline;
pub mod proxy;
pub mod redirect;
pub mod retry;
pub mod rewind;
pub mod send_watch;
pub mod shadow;
pub mod state;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

pub use pipeline::{ConnInfo, ProxyShared};
use state::ListenerHandle;

/// How long a client may take to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection builder used for every client connection of a listener.
pub fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// How a client connection learns that its listener is draining: hyper's
/// graceful watcher for connections hyper serves, a flag for the fast
/// path's.
pub struct Drain {
    /// hyper's side.
    pub graceful: Watcher,
    stop: watch::Receiver<bool>,
    /// Set with `stop`; read once per response (one relaxed load) to add
    /// `connection: close` to responses sent while draining.
    closing: Arc<AtomicBool>,
}

impl Drain {
    /// A connection's view of its listener's drain: `closing` is set when
    /// `stop` turns true.
    pub fn new(graceful: Watcher, stop: watch::Receiver<bool>, closing: Arc<AtomicBool>) -> Drain {
        Drain {
            graceful,
            stop,
            closing,
        }
    }

    /// Whether the listener is draining (or gone).
    fn draining(&self) -> bool {
        self.closing.load(Ordering::Relaxed) || self.stop.has_changed().is_err()
    }

    /// Completes when the listener starts draining.
    async fn started(&mut self) {
        let _ = self.stop.wait_for(|draining| *draining).await;
    }
}

/// Serves one client connection until it closes or the server drains:
/// the HTTP/1.1 fast path ([`fast`]) while it can, hyper otherwise.
pub use fast::serve as serve_connection;

/// Serves a client connection with hyper (HTTP/1 or HTTP/2, detected from
/// the preface) until it closes or the server drains.
pub async fn serve_with_hyper<IO>(
    io: IO,
    conn: ConnInfo,
    listener: Arc<ListenerHandle>,
    shared: Arc<ProxyShared>,
    drain: Drain,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // `shared` moves into the service; this handle keeps hyper's builder,
    // which the connection borrows.
    let for_builder = Arc::clone(&shared);
    // The listener's when the connection came to hyper.
    let watch = Arc::new(send_watch::ClientWatch::new(listener.state().send_timeout));
    let stalls = Arc::clone(&watch);
    let client = Arc::new(proxy::HyperConnection {
        conn,
        watch,
        closing: drain.closing,
    });
    let service = service_fn(move |request| {
        let client = Arc::clone(&client);
        let listener = Arc::clone(&listener);
        let shared = Arc::clone(&shared);
        async move {
            let response = proxy::handle(request, &client, &listener, &shared).await;
            Ok::<_, Infallible>(response)
        }
    });
    let connection = for_builder
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::select! {
        served = drain.graceful.watch(connection.into_owned()) => if let Err(error) = served {
            tracing::debug!(%error, "client connection ended with an error");
        },
        // Dropping the connection drops every response body on it.
        () = stalls.stalled() => {
            tracing::debug!(timeout = ?stalls.timeout, "client stopped reading: send timeout, connection closed");
        }
    }
}
