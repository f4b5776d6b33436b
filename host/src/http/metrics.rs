//! The metrics of one listener, held in its [`super::state::ListenerState`]
//! and laid out like its pools (index = pool id, then backend index), so
//! the pipeline counts a request by the ids it already has: no map, no
//! label lookup. Built when a config commits, sharing the counters of the
//! previous config's listener of the same name (same pool, same backend
//! address), so a reload does not reset them.
//!
//! Every request served by the pipeline ends in one [`Outcome`]: where it
//! went, what the client got, how long it took. The metrics read it, and
//! so does the access log ([`super::access`]) when the listener has one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::access::AccessEntry;
use super::shadow::ShadowRecord;
use super::state::ListenerState;
pub use crate::metrics::ConnectionMetrics;
use crate::metrics::{DecisionMetrics, Histogram, REQUEST_BUCKETS, StatusCounts};
use crate::pool::BackendPool;

/// Requests of a listener to one route (a pool, or the proxy itself).
#[derive(Debug)]
pub struct RouteMetrics {
    /// Time to the last byte of each response.
    pub duration: Histogram,
}

impl Default for RouteMetrics {
    fn default() -> Self {
        RouteMetrics {
            duration: Histogram::new(REQUEST_BUCKETS),
        }
    }
}

/// One pool of a listener.
#[derive(Debug)]
pub struct PoolRoutes {
    /// The pool's name.
    pub name: String,
    /// Requests that went to this pool.
    pub route: Arc<RouteMetrics>,
    /// Responses by status class, per backend (in pool order).
    pub backends: Vec<(SocketAddr, Arc<StatusCounts>)>,
}

/// Everything a listener counts.
#[derive(Debug)]
pub struct ListenerMetrics {
    /// The name of the listener's policy.
    pub policy: String,
    /// Its decisions (shared with the bound policy that makes them).
    pub decisions: Arc<DecisionMetrics>,
    /// Its connections.
    pub connections: Arc<ConnectionMetrics>,
    /// Requests the proxy or the policy answered itself.
    pub local: Arc<RouteMetrics>,
    /// Responses the proxy or the policy made, by status class.
    pub local_codes: Arc<StatusCounts>,
    /// Per pool, index = pool id.
    pub pools: Vec<PoolRoutes>,
    /// The shadow candidate's comparisons, when the listener has one.
    pub shadow: Option<Arc<ShadowRecord>>,
}

impl ListenerMetrics {
    /// The metrics of a listener serving `policy` over `pools`, sharing
    /// what still applies of `previous` (the listener's metrics before
    /// this config): decisions of the same policy, connections, and the
    /// counts of pools and backends it keeps, and the shadow record of the
    /// same candidate (`shadow`: its name).
    pub fn build(
        policy: &str,
        shadow: Option<&str>,
        pools: &[Arc<BackendPool>],
        previous: Option<&ListenerMetrics>,
    ) -> ListenerMetrics {
        let previous_shadow = previous.and_then(|p| p.shadow.as_ref());
        let shadow = shadow.map(|name| ShadowRecord::reuse(name, previous_shadow));
        let decisions = previous
            .filter(|p| p.policy == policy)
            .map_or_else(Arc::default, |p| Arc::clone(&p.decisions));
        let pools = pools
            .iter()
            .map(|pool| {
                let before = previous.and_then(|p| p.pools.iter().find(|r| r.name == pool.name));
                let backends = pool
                    .backends
                    .iter()
                    .map(|backend| {
                        let codes = before
                            .and_then(|r| r.backends.iter().find(|(a, _)| *a == backend.address))
                            .map_or_else(Arc::default, |(_, codes)| Arc::clone(codes));
                        (backend.address, codes)
                    })
                    .collect();
                PoolRoutes {
                    name: pool.name.clone(),
                    route: before.map_or_else(Arc::default, |r| Arc::clone(&r.route)),
                    backends,
                }
            })
            .collect();
        ListenerMetrics {
            policy: policy.to_owned(),
            decisions,
            connections: previous.map_or_else(Arc::default, |p| Arc::clone(&p.connections)),
            local: previous.map_or_else(Arc::default, |p| Arc::clone(&p.local)),
            local_codes: previous.map_or_else(Arc::default, |p| Arc::clone(&p.local_codes)),
            pools,
            shadow,
        }
    }
}

/// How one request ended, recorded once at the end of the pipeline
/// (`super::pipeline::process_request`), when the last byte of the
/// response was written (the fast codec) or when the response body ends
/// (hyper's).
#[derive(Debug)]
pub struct Outcome {
    /// When the pipeline started on it.
    pub started: Instant,
    /// The (pool id, backend index) of the last attempt; `None` when the
    /// proxy or the policy answered without a backend.
    pub route: Option<(u32, u32)>,
    /// The status the client got.
    pub status: u16,
    /// Attempts made (0 for a local answer).
    pub attempts: u32,
    /// Time spent in the policy, over every decision.
    pub decision_time: Duration,
    /// Its access log line, when the listener has a log.
    pub access: Option<AccessEntry>,
}

impl Outcome {
    /// Counts the request in its listener's metrics and logs it; `state`
    /// is the listener state it was served with.
    pub fn record(self, state: &ListenerState) {
        let elapsed = self.started.elapsed();
        count(&state.metrics, self.route, self.status, elapsed);
        if let Some(access) = self.access {
            access.write(state, self.route, self.status, elapsed);
        }
    }

    /// Counts the request in `metrics`, logging nothing.
    #[cfg(test)]
    fn count(self, metrics: &ListenerMetrics) {
        count(metrics, self.route, self.status, self.started.elapsed());
    }

    /// The part of a forwarded request's outcome that is counted when its
    /// response body ends (kept small: it rides in the body; the access
    /// entry, when there is one, is boxed).
    pub fn pending(self, state: &Arc<ListenerState>) -> PendingOutcome {
        PendingOutcome {
            state: Arc::clone(state),
            started: self.started,
            route: self.route.unwrap_or((u32::MAX, u32::MAX)),
            status: self.status,
            access: self.access.map(Box::new),
        }
    }
}

fn count(metrics: &ListenerMetrics, route: Option<(u32, u32)>, status: u16, elapsed: Duration) {
    let pool = route.and_then(|(pool, backend)| {
        let routes = metrics.pools.get(pool as usize)?;
        Some((routes, routes.backends.get(backend as usize)?))
    });
    match pool {
        Some((routes, (_, codes))) => {
            codes.count(status);
            routes.route.duration.observe(elapsed);
        }
        None => {
            metrics.local_codes.count(status);
            metrics.local.duration.observe(elapsed);
        }
    }
}

/// A forwarded request's outcome waiting for its response body to end.
#[derive(Debug)]
pub struct PendingOutcome {
    /// The listener state it was served with (its metrics and log).
    state: Arc<ListenerState>,
    started: Instant,
    route: (u32, u32),
    status: u16,
    access: Option<Box<AccessEntry>>,
}

impl PendingOutcome {
    /// Counts it now, and logs it with `body_bytes` sent to the client
    /// and, when they were counted as they streamed, `request_bytes`
    /// received from it.
    pub fn record(self, body_bytes: u64, request_bytes: Option<u64>) {
        let elapsed = self.started.elapsed();
        count(&self.state.metrics, Some(self.route), self.status, elapsed);
        if let Some(mut access) = self.access {
            access.exchanged.bytes_out = body_bytes;
            if let Some(bytes) = request_bytes {
                access.exchanged.bytes_in = bytes;
            }
            access.write(&self.state, Some(self.route), self.status, elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, PoolConfig};

    fn pool(name: &str, ports: &[u16]) -> Arc<BackendPool> {
        let config = PoolConfig {
            name: name.into(),
            backends: ports
                .iter()
                .map(|p| BackendConfig {
                    address: SocketAddr::from(([127, 0, 0, 1], *p)),
                    weight: 1,
                })
                .collect(),
            ..PoolConfig::default()
        };
        Arc::new(BackendPool::new(&config, None))
    }

    fn outcome(route: Option<(u32, u32)>, status: u16) -> Outcome {
        Outcome {
            started: Instant::now(),
            route,
            status,
            attempts: u32::from(route.is_some()),
            decision_time: Duration::ZERO,
            access: None,
        }
    }

    #[test]
    fn outcomes_count_per_backend_or_locally() {
        let m = ListenerMetrics::build("rr", None, &[pool("web", &[1, 2])], None);
        outcome(Some((0, 1)), 200).count(&m);
        outcome(None, 503).count(&m);
        assert_eq!(m.pools[0].backends[1].1.snapshot(), [0, 1, 0, 0, 0]);
        assert_eq!(m.pools[0].backends[0].1.snapshot(), [0; 5]);
        assert_eq!(m.local_codes.snapshot(), [0, 0, 0, 0, 1]);
        assert_eq!(m.pools[0].route.duration.count(), 1);
    }

    #[test]
    fn a_rebuild_keeps_the_counts_of_kept_backends_and_policy() {
        let before = ListenerMetrics::build("rr", Some("cand"), &[pool("web", &[1, 2])], None);
        outcome(Some((0, 1)), 200).count(&before);
        before.decisions.duration.observe_ns(5);
        let after =
            ListenerMetrics::build("rr", Some("cand"), &[pool("web", &[2, 3])], Some(&before));
        assert_eq!(after.pools[0].backends[0].1.snapshot()[1], 1, "port 2 kept");
        assert_eq!(after.pools[0].backends[1].1.snapshot()[1], 0, "port 3 new");
        assert_eq!(after.decisions.duration.count(), 1);
        let (kept, was) = (
            after.shadow.as_ref().unwrap(),
            before.shadow.as_ref().unwrap(),
        );
        assert!(
            Arc::ptr_eq(kept, was),
            "the same candidate keeps its record"
        );
        let other = ListenerMetrics::build("random", None, &[pool("web", &[2])], Some(&before));
        assert_eq!(
            other.decisions.duration.count(),
            0,
            "another policy starts over"
        );
        assert!(other.shadow.is_none());
    }
}
