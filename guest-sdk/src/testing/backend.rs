//! [`TestBackend`]: one backend of a test host's pool and its live
//! signals.

use std::net::SocketAddr;

use crate::balance::fnv1a64;
use crate::bindings::types::BackendLoad;

/// One backend of a [`TestHost`](super::TestHost) pool: what the host's
/// `pool-stats` would report about it, set with builder methods.
///
/// ```
/// use wasmroute_policy::testing::TestBackend;
/// let busy = TestBackend::up().weight(3).active(7).ewma_us(1500).load(0.42, 0.61);
/// let ejected = TestBackend::up().ejected(true); // healthy no more, as on the host
/// # let _ = (busy, ejected);
/// ```
///
/// Its stable id is derived as the host derives it, the 64-bit FNV-1a hash
/// of its address text: give the address with
/// [`address`](Self::address), or let the host give backend `i` of pool
/// `p` the address `10.<p>.<i / 256>.<i % 256>:80`;
/// [`stable_id`](Self::stable_id) sets the id itself.
#[derive(Debug, Clone)]
pub struct TestBackend {
    pub(crate) address: Option<SocketAddr>,
    pub(crate) stable_id: Option<u64>,
    pub(crate) weight: u32,
    pub(crate) up: bool,
    pub(crate) ejected: bool,
    pub(crate) active: u32,
    pub(crate) ewma_us: u32,
    pub(crate) total: u64,
    pub(crate) error_permille: u32,
    pub(crate) load: Option<BackendLoad>,
}

impl TestBackend {
    /// A healthy backend of weight 1, idle, never measured, without a load
    /// report.
    pub fn up() -> TestBackend {
        TestBackend {
            address: None,
            stable_id: None,
            weight: 1,
            up: true,
            ejected: false,
            active: 0,
            ewma_us: 0,
            total: 0,
            error_permille: 0,
            load: None,
        }
    }

    /// A backend down by its health check; otherwise as [`up`](Self::up).
    pub fn down() -> TestBackend {
        TestBackend::up().healthy(false)
    }

    /// Up or down by the active health check.
    pub fn healthy(mut self, healthy: bool) -> Self {
        self.up = healthy;
        self
    }

    /// Ejected by passive health checking (or let back in): an ejected
    /// backend is not healthy, whatever its health check says.
    pub fn ejected(mut self, ejected: bool) -> Self {
        self.ejected = ejected;
        self
    }

    /// The configured weight; at least 1, as the host's config requires.
    pub fn weight(mut self, weight: u32) -> Self {
        assert!(weight >= 1, "TestBackend::weight: at least 1, got 0");
        self.weight = weight;
        self
    }

    /// Requests (or connections) in flight.
    pub fn active(mut self, active: u32) -> Self {
        self.active = active;
        self
    }

    /// The latency EWMA in microseconds; 0 (the default) for a backend
    /// that never answered, which reports the mean of its pool's measured
    /// backends, as on the host.
    pub fn ewma_us(mut self, ewma_us: u32) -> Self {
        self.ewma_us = ewma_us;
        self
    }

    /// Requests completed.
    pub fn total(mut self, total: u64) -> Self {
        self.total = total;
        self
    }

    /// The recent error rate in thousandths (0..=1000).
    pub fn error_permille(mut self, permille: u32) -> Self {
        assert!(
            permille <= 1000,
            "TestBackend::error_permille: 0..=1000, got {permille}"
        );
        self.error_permille = permille;
        self
    }

    /// A fresh load report (age 0 ms): CPU and memory utilization, 0.0 to
    /// 1.0 (sent in ten-thousandths, as the host packs them).
    pub fn load(self, cpu: f32, memory: f32) -> Self {
        self.load_aged(cpu, memory, 0)
    }

    /// A load report received `age_ms` milliseconds ago.
    pub fn load_aged(mut self, cpu: f32, memory: f32, age_ms: u32) -> Self {
        self.load = Some(BackendLoad {
            cpu,
            memory,
            age_ms,
        });
        self
    }

    /// No load report (the default).
    pub fn no_load(mut self) -> Self {
        self.load = None;
        self
    }

    /// The backend's address (`127.0.0.1:9001`, `[::1]:9001`), from which
    /// its stable id is derived as the host derives it.
    pub fn address(mut self, address: &str) -> Self {
        let parsed = address
            .parse()
            .unwrap_or_else(|e| panic!("TestBackend::address: {address:?}: {e}"));
        self.address = Some(parsed);
        self
    }

    /// Sets the stable id instead of deriving it from the address.
    pub fn stable_id(mut self, stable_id: u64) -> Self {
        self.stable_id = Some(stable_id);
        self
    }

    /// Whether the host reports it healthy: up and not ejected.
    pub(crate) fn is_healthy(&self) -> bool {
        self.up && !self.ejected
    }

    /// The stable id the host reports.
    pub(crate) fn id(&self) -> u64 {
        match (self.stable_id, self.address) {
            (Some(id), _) => id,
            (None, Some(address)) => fnv1a64(address.to_string().as_bytes()),
            (None, None) => unreachable!("a pool's backends get an address when added"),
        }
    }

    /// Gives the backend the default address of backend `index` of pool
    /// `pool`, unless it has one.
    pub(crate) fn place(mut self, pool: usize, index: usize) -> Self {
        if self.address.is_none() {
            let ip = std::net::Ipv4Addr::new(10, pool as u8, (index >> 8) as u8, index as u8);
            self.address = Some(SocketAddr::from((ip, 80)));
        }
        self
    }
}
