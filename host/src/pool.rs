//! Backend pools and the live signals the host keeps per backend.
//!
//! Every signal is an atomic, updated on the request path without a lock and
//! read by policies through `pool-stats` (see `wit/policy.wit` for the
//! definition of each field). A pool is rebuilt on config reload; backends
//! whose address is unchanged carry their stats over, so a reload does not
//! reset least-connections or latency state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;

use crate::config::{BackendConfig, PoolConfig};

/// Weight of a new sample in the latency EWMA (1/5).
const EWMA_NEW_SAMPLE_DIVISOR: u64 = 5;

/// Live, lock-free signals of one backend.
#[derive(Debug)]
pub struct BackendStats {
    active: AtomicU32,
    ewma_latency_us: AtomicU32,
    total: AtomicU64,
    healthy: AtomicBool,
}

impl Default for BackendStats {
    fn default() -> Self {
        BackendStats {
            active: AtomicU32::new(0),
            ewma_latency_us: AtomicU32::new(0),
            total: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        }
    }
}

impl BackendStats {
    /// Requests in flight right now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }
    /// EWMA of the time to response head, in microseconds (0: no sample yet).
    pub fn ewma_latency_us(&self) -> u32 {
        self.ewma_latency_us.load(Ordering::Relaxed)
    }
    /// Requests completed since the backend was first configured.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
    /// Whether the backend may be chosen.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
    /// Marks the backend up or down.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Records the response head time of one request in the EWMA. A racing
    /// update from another worker may be lost; the average stays correct in
    /// expectation, which is all a balancing signal needs.
    fn record_latency(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let old = u64::from(self.ewma_latency_us.load(Ordering::Relaxed));
        let new = if old == 0 {
            sample
        } else {
            (old * (EWMA_NEW_SAMPLE_DIVISOR - 1) + sample) / EWMA_NEW_SAMPLE_DIVISOR
        };
        let new = u32::try_from(new).unwrap_or(u32::MAX).max(1);
        self.ewma_latency_us.store(new, Ordering::Relaxed);
    }
}

/// One upstream server.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub address: SocketAddr,
    /// `address` as a URI authority, built once.
    pub authority: Authority,
    /// Configured weight (at least 1).
    pub weight: u32,
    /// Live signals, shared with the previous config's backend at the same
    /// address.
    pub stats: Arc<BackendStats>,
}

impl Backend {
    fn new(config: &BackendConfig, stats: Arc<BackendStats>) -> Backend {
        let authority = Authority::try_from(config.address.to_string())
            .expect("a socket address is a valid authority");
        Backend {
            address: config.address,
            authority,
            weight: config.weight,
            stats,
        }
    }

    /// Counts a request as started; the returned guard counts it as done
    /// when dropped (also when the client goes away mid-request).
    pub fn start_request(self: &Arc<Self>) -> ActiveRequest {
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest {
            backend: Arc::clone(self),
        }
    }
}

/// A request in flight to a backend; see [`Backend::start_request`].
#[derive(Debug)]
pub struct ActiveRequest {
    backend: Arc<Backend>,
}

impl ActiveRequest {
    /// Records the time the backend took to send its response head.
    pub fn record_response(&self, latency: Duration) {
        self.backend.stats.record_latency(latency);
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let stats = &self.backend.stats;
        stats.active.fetch_sub(1, Ordering::Relaxed);
        stats.total.fetch_add(1, Ordering::Relaxed);
    }
}

/// A named set of backends.
#[derive(Debug)]
pub struct BackendPool {
    /// The pool's name in the config.
    pub name: String,
    /// Backends in config order (index = backend id seen by policies).
    pub backends: Vec<Arc<Backend>>,
    fallback_cursor: AtomicUsize,
}

impl BackendPool {
    /// Builds a pool, reusing the stats of `previous`'s backends that have
    /// the same address.
    pub fn new(config: &PoolConfig, previous: Option<&BackendPool>) -> BackendPool {
        let backends = config
            .backends
            .iter()
            .map(|backend| {
                let stats = previous
                    .and_then(|pool| pool.backends.iter().find(|b| b.address == backend.address))
                    .map(|b| Arc::clone(&b.stats))
                    .unwrap_or_default();
                Arc::new(Backend::new(backend, stats))
            })
            .collect();
        BackendPool {
            name: config.name.clone(),
            backends,
            fallback_cursor: AtomicUsize::new(0),
        }
    }

    /// The host's own choice when a policy failed: round robin over the
    /// healthy backends. None when every backend is down.
    pub fn fallback_pick(&self) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.fallback_cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|offset| (start + offset) % n)
            .find(|&i| self.backends[i].stats.healthy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(addresses: &[&str]) -> PoolConfig {
        PoolConfig {
            name: "web".into(),
            backends: addresses
                .iter()
                .map(|a| BackendConfig {
                    address: a.parse().unwrap(),
                    weight: 1,
                })
                .collect(),
            health: None,
        }
    }

    #[test]
    fn ewma_starts_at_first_sample_then_moves_a_fifth_of_the_way() {
        let stats = BackendStats::default();
        stats.record_latency(Duration::from_micros(1000));
        assert_eq!(stats.ewma_latency_us(), 1000);
        stats.record_latency(Duration::from_micros(2000));
        assert_eq!(stats.ewma_latency_us(), 1200);
    }

    #[test]
    fn active_guard_counts_in_and_out() {
        let p = BackendPool::new(&pool(&["127.0.0.1:1"]), None);
        let guard = p.backends[0].start_request();
        assert_eq!(p.backends[0].stats.active(), 1);
        drop(guard);
        assert_eq!(p.backends[0].stats.active(), 0);
        assert_eq!(p.backends[0].stats.total(), 1);
    }

    #[test]
    fn reload_keeps_stats_of_unchanged_addresses_only() {
        let old = BackendPool::new(&pool(&["127.0.0.1:1", "127.0.0.1:2"]), None);
        old.backends[1]
            .stats
            .record_latency(Duration::from_micros(50));
        let new = BackendPool::new(&pool(&["127.0.0.1:2", "127.0.0.1:3"]), Some(&old));
        assert_eq!(new.backends[0].stats.ewma_latency_us(), 50);
        assert_eq!(new.backends[1].stats.ewma_latency_us(), 0);
    }

    #[test]
    fn fallback_skips_unhealthy_and_gives_up_when_all_are_down() {
        let p = BackendPool::new(&pool(&["127.0.0.1:1", "127.0.0.1:2"]), None);
        p.backends[0].stats.set_healthy(false);
        assert_eq!(p.fallback_pick(), Some(1));
        assert_eq!(p.fallback_pick(), Some(1));
        p.backends[1].stats.set_healthy(false);
        assert_eq!(p.fallback_pick(), None);
    }
}
