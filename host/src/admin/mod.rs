//! The admin endpoint (`[admin]`): an HTTP/1.1 server, separate from the
//! listeners, for operators and their tools. Reference:
//! `docs/operations.md`.
//!
//! - `GET /metrics`: Prometheus text format ([`render`]);
//! - `GET /live`: 200 while the process runs; `GET /ready`: 200 once every
//!   listener is bound and its policy serving, 503 while draining
//!   ([`crate::lifecycle`]);
//! - `GET /status`: listeners, pools and backends as JSON ([`status`]);
//! - `POST /reload`: what SIGHUP does;
//! - `POST /pools/{pool}/backends/{address}/drain` and `.../enable`.
//!
//! A `POST` is accepted from a loopback peer only, unless `[admin] token`
//! is set: then from anyone with `Authorization: Bearer <token>` (401
//! without one, 403 with a wrong one). The token is read from the serving
//! config, so a reload changes it; the address is bound once, at start.

mod render;
mod routes;
mod status;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::lifecycle::Lifecycle;
use crate::server::Control;
use crate::server::published::Published;

/// The listen queue of the admin socket (a few scrapers and operators).
const ADMIN_BACKLOG: u32 = 128;

/// The response type of every admin answer.
type Answer = http::Response<Full<Bytes>>;

/// What the admin endpoint reads and drives.
#[derive(Clone)]
pub struct AdminContext {
    /// The serving state and the control loop's counters.
    pub published: Arc<Published>,
    /// Ready, draining.
    pub lifecycle: Arc<Lifecycle>,
    /// Asks the control loop for reloads.
    pub control: Control,
}

/// Binds the admin socket; the error names the config key and address.
pub fn bind(file: &Path, address: SocketAddr) -> anyhow::Result<TcpListener> {
    crate::listener::bind(address, ADMIN_BACKLOG).map_err(|error| {
        anyhow::anyhow!(
            "{}: admin.address: cannot listen on {address}: {error}",
            file.display()
        )
    })
}

/// The running admin endpoint; dropping it stops it.
pub struct AdminServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Starts serving on `socket` (from [`bind`]).
    pub fn start(socket: TcpListener, context: AdminContext) -> AdminServer {
        let local_addr = socket
            .local_addr()
            .expect("a bound socket has a local address");
        tracing::info!(address = %local_addr, "admin endpoint listening");
        let task = tokio::spawn(accept_loop(socket, context));
        AdminServer { local_addr, task }
    }

    /// The address bound (the real port when the config says port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(socket: TcpListener, context: AdminContext) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let context = context.clone();
        let service = service_fn(move |request| {
            let context = context.clone();
            async move {
                Ok::<_, std::convert::Infallible>(routes::handle(request, peer, &context).await)
            }
        });
        // Aborting the accept loop aborts the connections with it.
        connections.spawn(async move {
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "admin connection ended with an error");
            }
        });
    }
}
