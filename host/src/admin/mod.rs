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
//! config, so a reload changes it; the address is bound once, at start
//! (or its socket handed over by the previous instance on `serve
//! --upgrade`, after which that instance stops accepting on it).

mod render;
mod routes;
mod shadow;
mod status;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::lifecycle::Lifecycle;
use crate::server::Control;
use crate::server::published::Published;

/// The listen queue of the admin socket (a few scrapers and operators).
const ADMIN_BACKLOG: u32 = 128;

/// How long, after a handover, a connection accepted before it may take
/// to send its first request.
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// Starts serving on `socket` (from [`bind`], or handed over by the
    /// previous instance). Once `handed_over` turns true (a new instance
    /// took the socket over), it stops accepting; its connections finish
    /// their requests and close.
    pub fn start(
        socket: TcpListener,
        context: AdminContext,
        handed_over: watch::Receiver<bool>,
    ) -> AdminServer {
        let local_addr = socket
            .local_addr()
            .expect("a bound socket has a local address");
        tracing::info!(address = %local_addr, "admin endpoint listening");
        let task = tokio::spawn(accept_loop(socket, context, handed_over));
        AdminServer { local_addr, task }
    }

    /// The address bound (the real port when the config says port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Completes once it has stopped accepting (after a handover) and its
    /// connections have ended; never without a handover.
    pub async fn stopped(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Completes once `flag` is true; never when its sender is gone before.
async fn handed_over(mut flag: watch::Receiver<bool>) {
    if flag.wait_for(|done| *done).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn accept_loop(socket: TcpListener, context: AdminContext, flag: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    let stop = handed_over(flag.clone());
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        // Aborting the accept loop aborts the connections with it.
        connections.spawn(serve(stream, peer, context.clone(), flag.clone()));
    }
    drop(socket);
    tracing::info!("admin socket handed over; no longer accepting on it");
    while connections.join_next().await.is_some() {}
}

/// Serves one admin connection. After a handover, a connection that has
/// received a request finishes it and closes once idle; one that has not
/// gets [`FIRST_REQUEST_GRACE`] to send it (it may be on the way), so no
/// client that reached this instance goes unanswered. Every answer after
/// the handover says `connection: close`.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    context: AdminContext,
    flag: watch::Receiver<bool>,
) {
    let started = Arc::new(AtomicBool::new(false));
    let (received, handed) = (Arc::clone(&started), flag.clone());
    let service = service_fn(move |request| {
        received.store(true, Ordering::SeqCst);
        let (context, handed) = (context.clone(), handed.clone());
        async move {
            let mut answer = routes::handle(request, peer, &context).await;
            if *handed.borrow() {
                let close = http::HeaderValue::from_static("close");
                answer.headers_mut().insert(http::header::CONNECTION, close);
            }
            Ok::<_, std::convert::Infallible>(answer)
        }
    });
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = handed_over(flag) => {
            let first = (!started.load(Ordering::SeqCst))
                .then(|| tokio::time::timeout(FIRST_REQUEST_GRACE, connection.as_mut()));
            match first {
                Some(waited) => match waited.await {
                    Ok(result) => result,
                    Err(_) => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                },
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, %peer, "admin connection ended with an error");
    }
}
