//! hyper's client side: HTTP/1.1 requests to a backend on its pooled
//! hyper connections (`crate::upstream`), for hyper's codec.
//!
//! A request pops an idle connection; its response body gives it back
//! when it has been read to the end (see `super::body`). A new connection is bounded by the pool's `connect_timeout` (TCP plus,
//! for pools with `[pools.tls]`, the TLS handshake) and served by one
//! spawned task (hyper's connection driver, with upgrades so WebSocket
//! tunnels work). A pooled connection that the backend closed while it was
//! idle hands the request back unsent; it then goes on a new connection,
//! so a keep-alive race never reaches the client or the retry budget.
//! The driver also ends (closing the connection, idle or in the middle of
//! a response) when the backend's cut signal is raised
//! (`crate::pool::cut`: `on_down = "close-connections"`).

use std::sync::Arc;

use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::retry::{AttemptError, ClientFault};
use crate::pool::Backend;
use crate::upstream::{Addresses, Connection, ConnectionState, UpstreamBody, error_chain};

/// Sends `request` to `backend` on a pooled connection, or a new one, and
/// returns the response head with the connection, to be given back to
/// [`IdleConnections::put`] once the response body has been read. On a
/// failure, the request comes back when nothing of it was sent (no
/// connection could be made). `client`: the client connection's endpoints,
/// for a pool that sends a PROXY header.
pub async fn send(
    backend: &Backend,
    mut request: Request<UpstreamBody>,
    client: Addresses,
) -> Result<(Response<Incoming>, Connection), (AttemptError, Option<Request<UpstreamBody>>)> {
    while let Some(mut connection) = backend.conns.hyper.take() {
        if connection.send.ready().await.is_err() {
            continue;
        }
        count_into(&mut request, &connection);
        match connection.send.try_send_request(request).await {
            Ok(response) => return Ok((response, connection)),
            Err(mut error) => match error.take_message() {
                // Closed before the request was written: try another.
                Some(unsent) => request = unsent,
                None => return Err((failure(error.error()), None)),
            },
        }
    }
    let mut connection = match connect(backend, client).await {
        Ok(connection) => connection,
        Err(error) => return Err((error, Some(request))),
    };
    count_into(&mut request, &connection);
    match connection.send.try_send_request(request).await {
        Ok(response) => Ok((response, connection)),
        Err(mut error) => {
            let text = error_chain(error.error());
            match error.take_message() {
                Some(unsent) => Err((AttemptError::Connect(text), Some(unsent))),
                None => Err((failure(error.error()), None)),
            }
        }
    }
}

/// The request's body is counted on `connection`, when it is counted.
fn count_into(request: &mut Request<UpstreamBody>, connection: &Connection) {
    if let Either::Left(body) = request.body_mut() {
        body.count_into(&connection.state);
    }
}

/// Whose fault a failed exchange is: an error of the client's body
/// (hyper's "user" errors: the client aborted its upload) is the client's.
fn failure(error: &hyper::Error) -> AttemptError {
    match error.is_user() {
        true => AttemptError::Client(ClientFault::Aborted),
        false => AttemptError::Broken(error_chain(error)),
    }
}

/// Opens a new connection to `backend` for the client connection `client`
/// within its pool's connect timeout.
async fn connect(backend: &Backend, client: Addresses) -> Result<Connection, AttemptError> {
    let timeout = backend.upstream.connect_timeout;
    let io = match tokio::time::timeout(timeout, backend.conns.open_for(client)).await {
        Ok(Ok(io)) => io,
        Ok(Err(error)) => return Err(AttemptError::connect(&error, error.to_string())),
        Err(_) => {
            return Err(AttemptError::Connect(format!(
                "connect timed out after {timeout:?}"
            )));
        }
    };
    let (send, driver) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|error| AttemptError::Connect(error_chain(&error)))?;
    let address = backend.address;
    let state = Arc::new(ConnectionState::default());
    let watch = Arc::clone(&state);
    let mut cut = backend.close_on_down.then(|| backend.stats.cut.watch());
    tokio::spawn(async move {
        tokio::select! {
            ended = driver.with_upgrades() => if let Err(error) = ended {
                tracing::debug!(backend = %address, %error, "upstream connection ended with an error");
            },
            // Dropping the driver closes the connection to the backend.
            () = watch.stall.stalled() => {
                tracing::debug!(backend = %address, "client stopped reading the response: send timeout, upstream connection closed");
            }
            // on_down = "close-connections": the backend was marked down.
            () = crate::pool::cut::cut_or_never(cut.as_mut()) => {
                tracing::debug!(backend = %address, "backend marked down: upstream connection closed");
            }
        }
    });
    Ok(Connection { send, state })
}
