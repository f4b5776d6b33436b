//! Layer 4: `protocol = "tcp"` listeners, whose connections are relayed
//! byte for byte to a backend the policy picks per connection.
//!
//! One connection, after the listener accepted it (and took a trusted
//! PROXY header off it, `crate::listener`): when the policy reads the TLS
//! ClientHello, it is peeked, never consumed ([`client_hello`]); then the
//! policy decides (`policy::decide_connection`) and the backend is
//! connected within its pool's `connect_timeout`, each failure counted
//! against the backend and the policy asked again up to the pool's
//! `retries` ([`connect`]); then bytes are relayed both ways with
//! half-close passed on, until both directions are done, the listener's
//! `idle_timeout` passes without a byte, the backend is marked down in a
//! pool with `on_down = "close-connections"`, or the listener's drain
//! period is over ([`relay`]).
//!
//! For its whole life the connection holds its backend's active guard
//! (`pool::Backend::start_request`), so least-connections policies see TCP
//! sessions as requests in flight; the connect time is the backend's
//! latency sample.
//!
//! This layer knows nothing of HTTP: what a connection needs of its
//! listener comes in a [`Session`].

pub mod client_hello;
mod connect;
mod relay;

use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::Instrument as _;

use crate::config::{OnError, TcpTimeouts};
use crate::metrics::ConnectionMetrics;
use crate::policy::{BoundPolicy, Capabilities, ConnectionView};
use crate::upstream::Addresses;

pub use relay::RELAY_BUFFER;

/// What one TCP connection reads of its listener, taken when it is
/// accepted (a reload applies to the next connection).
#[derive(Debug, Clone)]
pub struct Session {
    /// The listener's name, for logs.
    pub listener: Arc<str>,
    /// The policy that decides the connection.
    pub policy: Arc<BoundPolicy>,
    /// What a failed decision does.
    pub on_error: OnError,
    /// `peek_timeout` and `idle_timeout`.
    pub timeouts: TcpTimeouts,
    /// The listener's connection counters (bytes relayed go here).
    pub metrics: Arc<ConnectionMetrics>,
}

/// Serves one accepted connection until it ends: `client` is the
/// connection's endpoints (a trusted PROXY header's when there was one);
/// `closed` completes when the listener's drain period is over, which
/// closes the relay.
pub async fn serve(
    stream: TcpStream,
    client: Addresses,
    session: Session,
    closed: impl Future<Output = ()>,
) {
    let span = tracing::debug_span!(
        "tcp",
        listener = %session.listener,
        client = %client.source,
        pool = tracing::field::Empty,
        backend = tracing::field::Empty,
        attempt = tracing::field::Empty,
    );
    serve_in_span(stream, client, session, closed)
        .instrument(span)
        .await;
}

async fn serve_in_span(
    stream: TcpStream,
    client: Addresses,
    session: Session,
    closed: impl Future<Output = ()>,
) {
    let reads_hello = session
        .policy
        .capabilities()
        .is_some_and(|c| c.contains(Capabilities::CLIENT_HELLO));
    let hello = match reads_hello {
        true => client_hello::peek(&stream, session.timeouts.peek).await,
        false => None,
    };
    let view = ConnectionView::new(client.source, client.destination.port(), hello);
    let Some(upstream) = connect::connect(&session, view, client).await else {
        return; // rejected or no backend: dropping the stream closes it
    };
    relay::run(stream, upstream, &session, closed).await;
}
