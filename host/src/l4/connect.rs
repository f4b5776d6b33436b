//! Deciding a TCP connection and connecting it: ask the policy, connect
//! to the backend it names within the pool's `connect_timeout`, and on a
//! failure count it against the backend (passive health), add it to the
//! connection's `tried` list and ask again, at most the pool's `retries`
//! more times. A failed decision follows the listener's `on_error`.

use std::sync::Arc;
use std::time::Instant;

use crate::config::OnError;
use crate::policy::{ConnectionDecision, ConnectionView, decide_connection};
use crate::pool::outlier::Failure;
use crate::pool::{ActiveRequest, Backend};
use crate::upstream::{Addresses, MaybeTls, error_chain};

use super::Session;

/// A connected backend, held for the life of the relay.
pub(super) struct Upstream {
    /// The stream to the backend (after its PROXY header, if any).
    pub stream: MaybeTls,
    /// Counts the connection as active on the backend while it lives.
    pub guard: ActiveRequest,
}

impl Upstream {
    /// The backend connected to.
    pub fn backend(&self) -> &Arc<Backend> {
        self.guard.backend()
    }
}

/// Connects the connection in `view` to the backend its policy picks;
/// `None` when it is to be closed (rejected, no backend, all attempts
/// failed).
pub(super) async fn connect(
    session: &Session,
    mut view: ConnectionView,
    client: Addresses,
) -> Option<Upstream> {
    loop {
        let (back, choice) = choose(session, view);
        view = back;
        let (pool_id, backend_id) = choice?;
        let pool = &session.policy.pools[pool_id as usize];
        let backend = &pool.backends[backend_id as usize];
        let span = tracing::Span::current();
        span.record("pool", pool.name.as_str());
        span.record("backend", tracing::field::display(backend.address));
        span.record("attempt", view.tried.len());
        let guard = backend.start_request();
        let started = Instant::now();
        let timeout = pool.upstream.connect_timeout;
        match tokio::time::timeout(timeout, backend.conns.open_for(client)).await {
            Ok(Ok(stream)) => {
                guard.record_connected(started.elapsed());
                tracing::debug!("connected");
                return Some(Upstream { stream, guard });
            }
            Ok(Err(error)) => {
                tracing::debug!(error = %error_chain(&error), "connect failed");
            }
            Err(_) => tracing::debug!(?timeout, "connect timed out"),
        }
        guard.record_error(Failure::Connect);
        view.tried.push((pool_id, backend_id));
        if view.tried.len() > pool.upstream.retries as usize {
            tracing::debug!("no attempt left: connection closed");
            return None;
        }
        pool.retries.inc();
    }
}

/// The (pool, backend) the connection goes to next, or `None` to close it.
fn choose(session: &Session, view: ConnectionView) -> (ConnectionView, Option<(u32, u32)>) {
    let (view, decision) = decide_connection(&session.policy, view);
    let error = match decision {
        Ok(ConnectionDecision::Forward(forward)) => {
            return (view, Some((forward.pool, forward.backend)));
        }
        Ok(ConnectionDecision::Reject) => {
            tracing::debug!("the policy rejected the connection");
            return (view, None);
        }
        Err(error) => error,
    };
    tracing::debug!(%error, on_error = ?session.on_error, "decision failed");
    let choice = match session.on_error {
        OnError::Reject => None,
        OnError::Fallback => session.policy.pools.first().and_then(|pool| {
            let backend = pool.fallback_pick_untried(0, &view.tried)?;
            Some((0, backend as u32))
        }),
    };
    (view, choice)
}
