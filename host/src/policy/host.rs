//! The host side of `wit/policy.wit` (0.3): generated bindings and the
//! functions a policy may call while it decides a request (the connection
//! resource is in `connection.rs`, 0.2 modules' imports in `v02.rs`).
//!
//! The request is never copied into the guest. During a decision the request
//! head is *moved* (not cloned) into the store's [`HostState`] and the guest
//! gets a borrow handle (`rep` 0, no resource-table entry, no allocation);
//! each accessor copies out just the part the guest asks for.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Resource;
use wasmtime::{StoreLimits, StoreLimitsBuilder};

pub use super::connection::ConnectionHandle;
use super::connection::ConnectionView;
use super::counters::{COUNTER_SLOTS, SharedCounters};
use super::deadline::DecisionClock;
use super::derived::{self, header_str};
use crate::pool::{BackendPool, now_ms};
use crate::random::Xorshift64Star;

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit",
    with: {
        "wasmroute:policy/host.request": RequestHandle,
        "wasmroute:policy/host.connection": ConnectionHandle,
    },
});

pub use self::wasmroute::policy::types::{
    BackendLoad, BackendStats, ConnectionForward, ConnectionKey, HeaderEdit, Method, RequestKey,
};

/// Names of generated items used elsewhere, kept in one place.
pub mod exports {
    pub use super::Decision;
    pub use super::Policy as PolicyBindings;
    pub use super::PolicyPre as PolicyBindingsPre;
}

/// Words per backend in `pool-stats-packed`.
const PACKED_WORDS: usize = 5;

/// The live stats of every backend of `pool`, in pool order, as policies
/// see them (both `pool-stats` and `pool-stats-packed`): a backend without
/// latency samples reports the pool's mean (see `wit/policy.wit`).
fn snapshots(pool: &BackendPool) -> impl Iterator<Item = BackendStats> + '_ {
    let now = now_ms();
    let mut seed = None;
    pool.backends
        .iter()
        .enumerate()
        .map(move |(index, backend)| {
            let stats = &backend.stats;
            let ewma = match stats.ewma_latency_us() {
                0 => *seed.get_or_insert_with(|| pool.seed_latency_us()),
                ewma => ewma,
            };
            BackendStats {
                index: index as u32,
                stable_id: backend.stable_id,
                weight: backend.weight,
                healthy: stats.healthy(),
                active_requests: stats.active(),
                ewma_latency_us: ewma,
                total_requests: stats.total(),
                error_rate_permille: stats.errors.rate_permille(now),
                load: stats.load.load(now).map(|l| BackendLoad {
                    cpu: l.cpu,
                    memory: l.memory,
                    age_ms: l.age_ms,
                }),
                ejected: stats.ejected(),
            }
        })
}

/// One backend in the `pool-stats-packed` layout (`wit/policy.wit`).
fn pack(stats: &BackendStats) -> [u64; PACKED_WORDS] {
    let mut flags = u64::from(stats.healthy) | u64::from(stats.ejected) << 1;
    if let Some(load) = &stats.load {
        let scale = |v: f32| (v.clamp(0.0, 1.0) * 10_000.0).round() as u64;
        let age = u64::from(load.age_ms).min((1 << 24) - 1);
        flags |= 1 << 2 | scale(load.cpu) << 8 | scale(load.memory) << 24 | age << 40;
    }
    [
        stats.stable_id,
        u64::from(stats.weight) | u64::from(stats.active_requests) << 32,
        u64::from(stats.ewma_latency_us) | u64::from(stats.error_rate_permille) << 32,
        stats.total_requests,
        flags,
    ]
}

/// Marker type of the `request` resource: the data lives in
/// [`HostState::request`] for the duration of one decision.
pub struct RequestHandle;

/// The request head a policy may look at, moved into the store for one call.
#[derive(Debug)]
pub struct RequestView {
    /// Method, URI, version and headers, as hyper parsed them.
    pub head: http::request::Parts,
    /// The peer of the client connection.
    pub client_ip: IpAddr,
    /// Whether the client connection is TLS.
    pub is_tls: bool,
    /// The SNI name of a TLS client connection.
    pub server_name: Option<Arc<str>>,
    /// Backends already tried for this request, as (pool, backend); empty
    /// (and unallocated) on the first attempt.
    pub tried: Vec<(u32, u32)>,
    /// Time spent in the policy for this request so far (every decision
    /// of its attempts).
    pub decision_time: Duration,
    /// When the last decision ended (`None` before the first, or when the
    /// policy was tripped and not called): the attempt that follows takes
    /// it as its start instead of reading the clock again.
    pub decided_at: Option<Instant>,
}

impl RequestView {
    /// A view of a request head on its first attempt.
    pub fn new(
        head: http::request::Parts,
        client_ip: IpAddr,
        is_tls: bool,
        server_name: Option<Arc<str>>,
    ) -> RequestView {
        RequestView {
            head,
            client_ip,
            is_tls,
            server_name,
            tried: Vec::new(),
            decision_time: Duration::ZERO,
            decided_at: None,
        }
    }
}

/// Per-instance state of a policy store.
pub struct HostState {
    /// The request being decided (`None` between calls).
    pub request: Option<RequestView>,
    /// The TCP connection being decided (`None` between calls).
    pub connection: Option<ConnectionView>,
    /// The listener's pools, index = pool id.
    pub pools: Arc<[Arc<BackendPool>]>,
    /// The listener's shared counters.
    pub counters: Arc<SharedCounters>,
    /// Memory cap.
    pub limits: StoreLimits,
    /// The running decision's deadline, for the store's epoch callback.
    pub clock: DecisionClock,
    rng: Xorshift64Star,
}

impl HostState {
    /// State for one instance. Of WASI only clocks and random work (see
    /// `wasi.rs`); everything else traps.
    pub fn new(
        pools: Arc<[Arc<BackendPool>]>,
        counters: Arc<SharedCounters>,
        memory_limit: usize,
        decision_timeout: Duration,
        seed: u64,
    ) -> HostState {
        HostState {
            request: None,
            connection: None,
            pools,
            counters,
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .instances(32)
                .tables(64)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            clock: DecisionClock::new(decision_timeout),
            rng: Xorshift64Star::new(seed),
        }
    }

    /// The next number of the instance's xorshift64* generator.
    pub fn next_random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// `candidates` of the listener's pool `pool` for a request or
    /// connection that tried `tried`; 0 for an unknown pool.
    pub(super) fn candidates_in(&self, pool: u32, tried: &[(u32, u32)], first: u32) -> u64 {
        match self.pools.get(pool as usize) {
            Some(backends) => derived::candidates(backends, pool, tried, first),
            None => 0,
        }
    }

    /// `least-active` of the listener's pool `pool` for a request or
    /// connection that tried `tried`; `None` for an unknown pool.
    pub(super) fn least_active_in(
        &self,
        pool: u32,
        tried: &[(u32, u32)],
        tie_breaker: u64,
    ) -> Option<u32> {
        let backends = self.pools.get(pool as usize)?;
        derived::least_active(backends, pool, tried, tie_breaker)
    }

    fn view(&self) -> &RequestView {
        // Only reachable through a borrow handle the host hands out during
        // `decide`, when the view is present.
        self.request
            .as_ref()
            .expect("request accessed outside of a decision")
    }
}

/// Links the policy world's imports into a linker (WASI is linked per
/// component, see `wasi.rs`).
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    self::wasmroute::policy::host::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
        linker,
        |state| state,
    )
}

impl self::wasmroute::policy::types::Host for HostState {}

impl self::wasmroute::policy::host::Host for HostState {
    fn pool_size(&mut self, pool: u32) -> u32 {
        self.pools
            .get(pool as usize)
            .map_or(0, |p| p.backends.len() as u32)
    }

    fn pool_stats(&mut self, pool: u32) -> Vec<BackendStats> {
        match self.pools.get(pool as usize) {
            Some(pool) => snapshots(pool).collect(),
            None => Vec::new(),
        }
    }

    fn pool_stats_packed(&mut self, pool: u32) -> Vec<u64> {
        let Some(pool) = self.pools.get(pool as usize) else {
            return Vec::new();
        };
        let mut words = Vec::with_capacity(pool.backends.len() * PACKED_WORDS);
        for stats in snapshots(pool) {
            words.extend_from_slice(&pack(&stats));
        }
        words
    }

    fn counter_slots(&mut self) -> u32 {
        COUNTER_SLOTS as u32
    }

    fn counter_add(&mut self, slot: u32, delta: i64) -> i64 {
        self.counters.add(slot, delta)
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: fast, per-instance, seeded from the OS at instantiation.
        self.next_random()
    }
}

impl self::wasmroute::policy::host::HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> Method {
        let method = &self.view().head.method;
        match *method {
            http::Method::GET => Method::Get,
            http::Method::HEAD => Method::Head,
            http::Method::POST => Method::Post,
            http::Method::PUT => Method::Put,
            http::Method::DELETE => Method::Delete,
            http::Method::CONNECT => Method::Connect,
            http::Method::OPTIONS => Method::Options,
            http::Method::TRACE => Method::Trace,
            http::Method::PATCH => Method::Patch,
            _ => Method::Other(method.as_str().to_owned()),
        }
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> String {
        self.view().head.uri.path().to_owned()
    }

    fn query(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        self.view().head.uri.query().map(str::to_owned)
    }

    fn authority(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        derived::authority(&self.view().head).map(str::to_owned)
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        header_str(&self.view().head.headers, &name).map(str::to_owned)
    }

    fn cookie(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        find_cookie(&self.view().head.headers, &name).map(str::to_owned)
    }

    fn client_ip(&mut self, _: Resource<RequestHandle>) -> String {
        self.view().client_ip.to_string()
    }

    fn http_version(&mut self, _: Resource<RequestHandle>) -> u8 {
        match self.view().head.version {
            http::Version::HTTP_09 => 9,
            http::Version::HTTP_10 => 10,
            http::Version::HTTP_2 => 20,
            http::Version::HTTP_3 => 30,
            _ => 11,
        }
    }

    fn is_tls(&mut self, _: Resource<RequestHandle>) -> bool {
        self.view().is_tls
    }

    fn server_name(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        self.view().server_name.as_deref().map(str::to_owned)
    }

    fn attempt(&mut self, _: Resource<RequestHandle>) -> u32 {
        self.view().tried.len() as u32
    }

    fn tried(&mut self, _: Resource<RequestHandle>) -> Vec<(u32, u32)> {
        self.view().tried.clone()
    }

    fn key_hash(&mut self, _: Resource<RequestHandle>, key: RequestKey) -> Option<u64> {
        derived::key_hash(self.view(), &key)
    }

    fn candidates(&mut self, _: Resource<RequestHandle>, pool: u32, first: u32) -> u64 {
        self.candidates_in(pool, &self.view().tried, first)
    }

    fn least_active(
        &mut self,
        _: Resource<RequestHandle>,
        pool: u32,
        tie_breaker: u64,
    ) -> Option<u32> {
        self.least_active_in(pool, &self.view().tried, tie_breaker)
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        // Borrow handles are never owned by the guest; nothing to free.
        Ok(())
    }
}

/// The value of cookie `name` across every `Cookie` header.
pub fn find_cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use self::super::wasmroute::policy::host::Host as _;
    use super::*;
    use crate::config::{BackendConfig, PoolConfig};

    /// Every field at the position `wit/policy.wit` documents for
    /// `pool-stats-packed`, and the same values as `pool-stats`.
    #[test]
    fn packed_stats_follow_the_documented_layout() {
        let config = PoolConfig {
            name: "web".into(),
            backends: ["127.0.0.1:1", "127.0.0.1:2"]
                .iter()
                .map(|a| BackendConfig {
                    address: a.parse().unwrap(),
                    weight: 3,
                })
                .collect(),
            ..PoolConfig::default()
        };
        let pool = Arc::new(BackendPool::new(&config, None));
        let b0 = &pool.backends[0];
        let _active = b0.start_request();
        b0.stats.load.store(0.42, 0.95, now_ms());
        b0.stats.errors.record(true, now_ms());
        b0.stats.errors.record(false, now_ms());
        pool.backends[1].stats.set_ejected(true);
        let mut state = HostState::new(
            vec![pool.clone()].into(),
            Arc::default(),
            1 << 20,
            Duration::from_millis(5),
            7,
        );
        let words = state.pool_stats_packed(0);
        let records = state.pool_stats(0);
        assert_eq!(words.len(), 10);
        assert_eq!(words[0], b0.stable_id);
        assert_eq!(words[1], 3 | 1 << 32, "weight 3, one active request");
        assert_eq!(words[2] >> 32, 500, "error rate 1 in 2");
        assert_eq!(words[4] & 7, 1 | 4, "healthy, not ejected, load present");
        assert_eq!((words[4] >> 8) & 0xFFFF, 4200);
        assert_eq!((words[4] >> 24) & 0xFFFF, 9500);
        assert!(words[4] >> 40 < 1000, "a fresh report");
        assert_eq!(words[9] & 7, 2, "backend 1: ejected, so not healthy");
        assert_eq!(records[0].error_rate_permille, 500);
        assert!(records[1].ejected && !records[1].healthy);
        assert_eq!(state.pool_stats_packed(1), Vec::<u64>::new());
    }

    #[test]
    fn cookie_is_found_in_any_cookie_header() {
        let mut headers = http::HeaderMap::new();
        headers.append("cookie", "a=1; b=2".parse().unwrap());
        headers.append("cookie", "sticky=\"web-1\"".parse().unwrap());
        assert_eq!(find_cookie(&headers, "b"), Some("2"));
        assert_eq!(find_cookie(&headers, "sticky"), Some("web-1"));
        assert_eq!(find_cookie(&headers, "c"), None);
    }
}
