//! What every request on a listener reads: the policy bound to its pools,
//! `on_error`, `send_timeout` and its frontend ([`ListenerState`]), behind
//! a handle that a reload swaps atomically ([`ListenerHandle`]), so
//! in-flight requests finish on what they started with and the next
//! request sees the new state. The listener layer (`crate::listener`)
//! builds and swaps it; the pipeline only reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::OnError;
use crate::logging::RepeatLimiter;
use crate::policy::BoundPolicy;

/// What a request on a listener needs, replaced as a whole on reload.
#[derive(Debug)]
pub struct ListenerState {
    /// The listener's name in the config.
    pub name: Arc<str>,
    /// The policy bound to this listener's pools and `policy_config`.
    pub policy: Arc<BoundPolicy>,
    /// What to do when a decision fails.
    pub on_error: OnError,
    /// The longest a write to the client may stall (`send_timeout`).
    pub send_timeout: Duration,
    /// Plain, TLS (with its certificates) or redirect; read once per
    /// accepted connection, so new certificates serve the next one.
    pub frontend: crate::tls::Frontend,
    /// What its requests and connections count, laid out like its pools.
    pub metrics: Arc<super::metrics::ListenerMetrics>,
    /// The server's access log, when the config has one.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// `accept_proxy_protocol`: the trusted peers whose connections start
    /// with a PROXY header (`None`: the listener reads no header).
    pub accept_proxy: Option<Arc<[crate::config::Cidr]>>,
    /// A `tcp` listener's timeouts: its connections are relayed by
    /// `crate::l4`, not served as HTTP (`None`: an HTTP listener).
    pub tcp: Option<crate::config::TcpTimeouts>,
    /// `[listeners.shadow]`: the candidate deciding sampled requests
    /// alongside `policy` (`None`: no shadow, and no cost).
    pub shadow: Option<super::shadow::Shadow>,
}

/// A listener as requests see it.
#[derive(Debug)]
pub struct ListenerHandle {
    /// The listener's name in the config.
    pub name: String,
    state: ArcSwap<ListenerState>,
    decision_errors: AtomicU64,
    /// Failed decisions log one line per [`FAILURE_LOG_INTERVAL`], with
    /// the count of the ones not logged.
    pub failure_log: RepeatLimiter,
}

/// How often a listener logs a failed decision while its policy keeps
/// failing (a trapping module fails every request).
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(5);

impl ListenerHandle {
    /// A handle serving `state`.
    pub fn new(name: &str, state: ListenerState) -> ListenerHandle {
        ListenerHandle {
            name: name.to_owned(),
            state: ArcSwap::from_pointee(state),
            decision_errors: AtomicU64::new(0),
            failure_log: RepeatLimiter::new(FAILURE_LOG_INTERVAL),
        }
    }

    /// The current state (one atomic load and a reference count).
    pub fn state(&self) -> Arc<ListenerState> {
        self.state.load_full()
    }

    /// The current state's `send_timeout` (one atomic load, no reference
    /// count: cheaper than [`Self::state`] where that is all one needs).
    pub fn send_timeout(&self) -> Duration {
        self.state.load().send_timeout
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
