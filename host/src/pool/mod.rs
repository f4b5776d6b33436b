//! Backend pools and the live signals the host keeps per backend.
//!
//! Every signal is an atomic, updated on the request path without a lock and
//! read by policies through `pool-stats` (see `wit/policy.wit` for the
//! definition of each field). A pool is rebuilt on config reload; backends
//! whose address is unchanged carry their stats over, so a reload does not
//! reset least-connections or latency state.

pub mod cut;
pub mod outlier;
mod signals;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderName;
use http::uri::Authority;

use crate::config::{BackendConfig, OnDown, PoolConfig, UpstreamConfig};
use crate::metrics::{Counter, Histogram, REQUEST_BUCKETS};
use crate::upstream::tls::UpstreamTlsPlan;
use crate::upstream::{Connections, IDLE_TIMEOUT};
use outlier::{Failure, Outlier, OutlierState};
pub use signals::{ERROR_BUCKET_MS, ErrorWindow, Load, LoadReport, now_ms, parse_load};

/// Weight of a new sample in the latency EWMA (1/5).
const EWMA_NEW_SAMPLE_DIVISOR: u64 = 5;

/// Live, lock-free signals of one backend.
#[derive(Debug)]
pub struct BackendStats {
    active: AtomicU32,
    ewma_latency_us: AtomicU32,
    total: AtomicU64,
    /// Up by the active health check (always true without one).
    check_up: AtomicBool,
    /// Ejected by passive health checking.
    ejected: AtomicBool,
    /// Failures over a sliding window.
    pub errors: ErrorWindow,
    /// The last utilization the backend reported.
    pub load: LoadReport,
    /// Passive health (outlier detection) counters.
    pub outlier: OutlierState,
    /// Drained by an operator (admin endpoint): offered to no policy, so
    /// it gets no new requests, until enabled again.
    drained: AtomicBool,
    /// Time to the response head of every request that got one.
    pub upstream_response: Histogram,
    /// Times passive health checking ejected the backend.
    pub ejections: Counter,
    /// Active health checks that passed.
    pub checks_passed: Counter,
    /// Active health checks that failed.
    pub checks_failed: Counter,
    /// Raised to close the connections to the backend (`on_down`).
    pub cut: cut::CutSignal,
}

impl Default for BackendStats {
    fn default() -> Self {
        BackendStats {
            active: AtomicU32::new(0),
            ewma_latency_us: AtomicU32::new(0),
            total: AtomicU64::new(0),
            check_up: AtomicBool::new(true),
            ejected: AtomicBool::new(false),
            errors: ErrorWindow::default(),
            load: LoadReport::default(),
            outlier: OutlierState::default(),
            drained: AtomicBool::new(false),
            upstream_response: Histogram::new(REQUEST_BUCKETS),
            ejections: Counter::default(),
            checks_passed: Counter::default(),
            checks_failed: Counter::default(),
            cut: cut::CutSignal::default(),
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
    /// Whether the backend may be chosen: up by its active check (if any),
    /// not ejected and not drained. Policies see it as `healthy`, so a
    /// drained backend is skipped like an unhealthy one.
    pub fn healthy(&self) -> bool {
        self.check_up.load(Ordering::Relaxed)
            && !self.ejected.load(Ordering::Relaxed)
            && !self.drained.load(Ordering::Relaxed)
    }
    /// Whether an operator drained the backend.
    pub fn drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }
    /// Drains the backend (no new requests) or enables it again.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
    }
    /// Marks the backend up or down, as the active health check sees it.
    pub fn set_healthy(&self, healthy: bool) {
        self.check_up.store(healthy, Ordering::Relaxed);
    }
    /// Whether the active health check considers the backend up.
    pub fn check_up(&self) -> bool {
        self.check_up.load(Ordering::Relaxed)
    }
    /// Whether passive health checking has ejected the backend.
    pub fn ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }
    /// Ejects the backend or lets it back in.
    pub fn set_ejected(&self, ejected: bool) {
        self.ejected.store(ejected, Ordering::Relaxed);
    }

    /// Records the response head time of one request in the EWMA (the
    /// first sample sets it: `policy test` sets up a backend's latency
    /// with one). A racing update from another worker may be lost; the
    /// average stays correct in expectation, which is all a balancing
    /// signal needs.
    pub fn record_latency(&self, latency: Duration) {
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
    /// `address` as a URI authority, built once: its text is what
    /// `SocketAddr`'s `Display` writes (the access log writes it as is).
    pub authority: Authority,
    /// Configured weight (at least 1).
    pub weight: u32,
    /// FNV-1a 64 of the address text: the `stable-id` policies see.
    pub stable_id: u64,
    /// Live signals, shared with the previous config's backend at the same
    /// address.
    pub stats: Arc<BackendStats>,
    /// The pool's load-report header (see [`BackendPool::load_header`]).
    pub load_header: HeaderName,
    /// The pool's timeouts and retry budget.
    pub upstream: UpstreamConfig,
    /// The pool's passive health checking, fed by every request's outcome.
    pub outlier: Arc<Outlier>,
    /// Its connections: idle ones of each kind, and how to open one
    /// (plain, or TLS for a pool with `[pools.tls]`).
    pub conns: Connections,
    /// `on_down = "close-connections"`: exchanges with it watch its cut
    /// signal (`stats.cut`).
    pub close_on_down: bool,
}

impl Backend {
    fn new(
        config: &BackendConfig,
        pool: &PoolConfig,
        stats: Arc<BackendStats>,
        outlier: Arc<Outlier>,
        tls: &UpstreamTlsPlan,
    ) -> Backend {
        let authority = Authority::try_from(config.address.to_string())
            .expect("a socket address is a valid authority");
        Backend {
            address: config.address,
            authority,
            weight: config.weight,
            stable_id: fnv1a64(config.address.to_string().as_bytes()),
            stats,
            load_header: pool.load_header.clone(),
            upstream: pool.upstream,
            outlier,
            conns: Connections::new(
                config.address,
                tls.for_address(config.address),
                pool.proxy_protocol,
            ),
            close_on_down: pool.on_down == OnDown::CloseConnections,
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

/// 64-bit FNV-1a: tiny, fixed and documented, so every proxy process (and
/// every version) derives the same stable id from the same address. Also
/// the hash of `request.key-hash` (`policy::derived`).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(FNV1A64_OFFSET, bytes)
}

/// The FNV-1a 64 offset basis: the hash of no bytes.
pub(crate) const FNV1A64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues the FNV-1a 64 hash `hash` over `bytes` (start from
/// [`FNV1A64_OFFSET`]): hashing in pieces gives the hash of the whole.
pub(crate) fn fnv1a64_extend(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A request in flight to a backend; see [`Backend::start_request`].
#[derive(Debug)]
pub struct ActiveRequest {
    backend: Arc<Backend>,
}

impl ActiveRequest {
    /// Records a response head: its latency, and a failure when the status
    /// is a 5xx.
    pub fn record_response(&self, latency: Duration, status: http::StatusCode) {
        let backend = &self.backend;
        let stats = &backend.stats;
        stats.record_latency(latency);
        stats.upstream_response.observe(latency);
        let failed = status.is_server_error();
        let now = now_ms();
        stats.errors.record(failed, now);
        if failed {
            let failure = Failure::Status(status.as_u16());
            backend
                .outlier
                .record_failure(stats, backend.address, failure, now);
        } else {
            backend.outlier.record_success(stats);
        }
    }

    /// Records a TCP connection made to the backend (a `tcp` listener's
    /// relay): the connect time is its latency sample, and it counts as a
    /// success for the error window and passive health checking.
    pub fn record_connected(&self, latency: Duration) {
        let backend = &self.backend;
        let stats = &backend.stats;
        stats.record_latency(latency);
        stats.upstream_response.observe(latency);
        stats.errors.record(false, now_ms());
        backend.outlier.record_success(stats);
    }

    /// Records that the backend failed before a response head (connect
    /// error, reset, timeout).
    pub fn record_failure(&self) {
        self.record_error(Failure::Broken);
    }

    /// Records a failure of the given kind: in the error window, and for
    /// passive health checking.
    pub fn record_error(&self, failure: Failure) {
        let backend = &self.backend;
        let now = now_ms();
        backend.stats.errors.record(true, now);
        backend
            .outlier
            .record_failure(&backend.stats, backend.address, failure, now);
    }

    /// Records a failure after the response head (the body stalled past
    /// `idle_timeout`): for passive health checking only, the request is
    /// already counted in the error window.
    pub fn record_late_failure(&self, failure: Failure) {
        let backend = &self.backend;
        backend
            .outlier
            .record_failure(&backend.stats, backend.address, failure, now_ms());
    }

    /// The backend this request went to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
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
    /// The response header in which backends report their utilization.
    pub load_header: HeaderName,
    /// Timeouts and retry budget of requests to this pool.
    pub upstream: UpstreamConfig,
    /// Passive health checking (shared by the backends).
    pub outlier: Arc<Outlier>,
    /// Requests sent again to another backend after a failed attempt;
    /// shared with the previous config's pool of the same name.
    pub retries: Arc<Counter>,
    fallback_cursor: AtomicUsize,
}

impl BackendPool {
    /// Builds a pool of plain-TCP backends; see [`BackendPool::build`].
    pub fn new(config: &PoolConfig, previous: Option<&BackendPool>) -> BackendPool {
        BackendPool::build(config, previous, &UpstreamTlsPlan::default())
    }

    /// Builds a pool, reusing the stats of `previous`'s backends that have
    /// the same address; each backend speaks TLS as `tls` says.
    pub fn build(
        config: &PoolConfig,
        previous: Option<&BackendPool>,
        tls: &UpstreamTlsPlan,
    ) -> BackendPool {
        let stats: Vec<Arc<BackendStats>> = config
            .backends
            .iter()
            .map(|backend| {
                previous
                    .and_then(|pool| pool.backends.iter().find(|b| b.address == backend.address))
                    .map(|b| Arc::clone(&b.stats))
                    .unwrap_or_default()
            })
            .collect();
        let members = config.backends.iter().map(|b| b.address);
        let outlier = Arc::new(Outlier::new(
            &config.name,
            config.passive,
            config.health.is_some(),
            members.zip(stats.iter().cloned()).collect(),
        ));
        let backends = config
            .backends
            .iter()
            .zip(stats)
            .map(|(backend, stats)| {
                Arc::new(Backend::new(
                    backend,
                    config,
                    stats,
                    Arc::clone(&outlier),
                    tls,
                ))
            })
            .collect();
        BackendPool {
            name: config.name.clone(),
            backends,
            load_header: config.load_header.clone(),
            upstream: config.upstream,
            outlier,
            retries: previous.map_or_else(Arc::default, |p| Arc::clone(&p.retries)),
            fallback_cursor: AtomicUsize::new(0),
        }
    }

    /// The latency EWMA a backend without samples reports: the mean of the
    /// pool's backends that have one (0 when none has), so that a new
    /// backend looks average rather than fastest and is not flooded.
    pub fn seed_latency_us(&self) -> u32 {
        let (sum, count) = self
            .backends
            .iter()
            .map(|b| b.stats.ewma_latency_us())
            .filter(|&l| l != 0)
            .fold((0u64, 0u64), |(s, c), l| (s + u64::from(l), c + 1));
        // 0 when no backend has a sample yet.
        u32::try_from(sum.checked_div(count).unwrap_or(0)).unwrap_or(u32::MAX)
    }

    /// The host's own choice when a policy failed: round robin over the
    /// healthy backends. None when every backend is down.
    pub fn fallback_pick(&self) -> Option<usize> {
        self.fallback_pick_untried(0, &[])
    }

    /// Like [`BackendPool::fallback_pick`], skipping the backends of this
    /// pool (pool id `pool` for the listener) already tried for the
    /// request.
    pub fn fallback_pick_untried(&self, pool: u32, tried: &[(u32, u32)]) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.fallback_cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|offset| (start + offset) % n)
            .find(|&i| self.backends[i].stats.healthy() && !tried.contains(&(pool, i as u32)))
    }

    /// This pool was replaced by `next` (the pool of the same name in the
    /// config that commits, if any): its backends keep no connection from
    /// now on, and those whose address `next` still has hand their idle
    /// ones over (see [`crate::upstream::Connections::retire`]).
    pub fn retire(&self, next: Option<&BackendPool>) {
        for backend in &self.backends {
            let successor =
                next.and_then(|n| n.backends.iter().find(|b| b.address == backend.address));
            backend.conns.retire(successor.map(|b| &b.conns));
        }
    }
}

/// Closes the stale idle connections of `pool`'s backends every quarter
/// of [`IDLE_TIMEOUT`], forever (the pool's tasks abort it).
pub async fn close_idle_connections(pool: Arc<BackendPool>) {
    let mut ticks = tokio::time::interval(IDLE_TIMEOUT / 4);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for backend in &pool.backends {
            backend.conns.sweep();
        }
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
            load_header: HeaderName::from_static("x-backend-load"),
            ..PoolConfig::default()
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
    fn stable_id_is_fnv1a_of_the_address_text() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let p = BackendPool::new(&pool(&["127.0.0.1:1", "127.0.0.1:2"]), None);
        assert_eq!(p.backends[0].stable_id, fnv1a64(b"127.0.0.1:1"));
        assert_ne!(p.backends[0].stable_id, p.backends[1].stable_id);
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

    #[test]
    fn fallback_on_a_retry_skips_tried_backends() {
        let p = BackendPool::new(&pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]), None);
        for _ in 0..6 {
            assert_eq!(p.fallback_pick_untried(0, &[(0, 0), (0, 2)]), Some(1));
        }
        // Another pool's tried backends do not count.
        assert!(
            p.fallback_pick_untried(0, &[(1, 0), (1, 1), (1, 2)])
                .is_some()
        );
        assert_eq!(p.fallback_pick_untried(0, &[(0, 0), (0, 1), (0, 2)]), None);
    }

    #[test]
    fn five_failures_in_a_row_eject_one_backend_of_two() {
        let p = BackendPool::new(&pool(&["127.0.0.1:1", "127.0.0.1:2"]), None);
        for backend in &p.backends {
            for _ in 0..5 {
                backend.start_request().record_error(Failure::Connect);
            }
        }
        assert!(p.backends[0].stats.ejected());
        assert!(!p.backends[1].stats.ejected(), "the cap is 1 of 2");
        let guard = p.backends[1].start_request();
        guard.record_response(Duration::from_millis(1), http::StatusCode::OK);
        assert_eq!(p.backends[1].stats.outlier.consecutive_failures(), 0);
    }
}
