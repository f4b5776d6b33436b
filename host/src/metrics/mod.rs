//! The building blocks of the proxy's metrics: counters, histograms and
//! per-status-class counts, each a few atomics, held where the request
//! already has a handle (a backend's stats, a listener's state, a bound
//! policy) and resolved when a config commits, so that counting a request
//! is a handful of relaxed `fetch_add`s: no lock, no map, no allocation.
//! The admin endpoint renders them by walking the live structures at
//! scrape time ([`text`]). Names and labels: `docs/operations.md`.

pub mod text;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (nanoseconds) of the policy decision histogram buckets:
/// 1 µs to 25 ms (a decision's deadline is a few ms).
pub const DECISION_BUCKETS: &[u64] = &[
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 25_000_000,
];

/// Upper bounds (nanoseconds) of the request and upstream response
/// histogram buckets: 0.5 ms to 60 s.
pub const REQUEST_BUCKETS: &[u64] = &[
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// A histogram with fixed buckets: one atomic per bucket (not cumulative;
/// the renderer sums them) plus the sum of the observations. The count is
/// the sum of the buckets, so an observation is two `fetch_add`s.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// `bounds.len() + 1` buckets, the last one `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these bucket upper bounds (ascending, ns).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation of `nanos` nanoseconds.
    #[inline]
    pub fn observe_ns(&self, nanos: u64) {
        let index = self
            .bounds
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Records one observation.
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        self.observe_ns(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Upper bounds and the count of each bucket (not cumulative; the last
    /// count is the `+Inf` bucket's).
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// A histogram as read at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds in nanoseconds.
    pub bounds: &'static [u64],
    /// Per-bucket counts, `bounds.len() + 1` of them (the last is `+Inf`).
    pub counts: Vec<u64>,
    /// Sum of the observations in nanoseconds.
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Requests by the class of the status sent to the client (1xx..5xx).
#[derive(Debug, Default)]
pub struct StatusCounts {
    classes: [AtomicU64; 5],
}

/// The `code` label of each [`StatusCounts`] class.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl StatusCounts {
    /// Counts one response with `status` (anything outside 100..=599
    /// counts as 5xx).
    #[inline]
    pub fn count(&self, status: u16) {
        let class = match status / 100 {
            class @ 1..=5 => usize::from(class) - 1,
            _ => 4,
        };
        self.classes[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of each class, in [`STATUS_CLASSES`] order.
    pub fn snapshot(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.classes[i].load(Ordering::Relaxed))
    }
}

/// Why a policy decision failed, as `wasmroute_policy_errors_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionErrorKind {
    /// The guest trapped, or no instance could be made for it.
    Trap = 0,
    /// The guest ran past `decision_timeout`.
    Timeout = 1,
    /// The decision named something that does not exist or may not be used.
    Invalid = 2,
    /// The policy is tripped and was not called.
    Tripped = 3,
}

/// The `kind` label of each [`DecisionErrorKind`], by its value.
pub const DECISION_ERROR_KINDS: [&str; 4] = ["trap", "timeout", "invalid", "tripped"];

/// What one listener's policy decisions cost and how they failed, kept
/// across module versions of the same policy (by listener and policy name).
#[derive(Debug)]
pub struct DecisionMetrics {
    /// Time of each call of the guest (the count is the decisions made).
    pub duration: Histogram,
    errors: [AtomicU64; 4],
}

impl Default for DecisionMetrics {
    fn default() -> Self {
        DecisionMetrics {
            duration: Histogram::new(DECISION_BUCKETS),
            errors: Default::default(),
        }
    }
}

impl DecisionMetrics {
    /// Counts a failed decision.
    #[inline]
    pub fn count_error(&self, kind: DecisionErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failures by kind, in [`DECISION_ERROR_KINDS`] order.
    pub fn errors(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.errors[i].load(Ordering::Relaxed))
    }
}

/// Connections of a listener, kept across reloads by listener name.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    /// Open right now.
    pub active: Gauge,
    /// Accepted since the listener first started.
    pub total: Counter,
    /// TLS handshakes that failed.
    pub tls_handshake_errors: Counter,
    /// `tcp` listeners: bytes relayed from clients to backends.
    pub received_bytes: Counter,
    /// `tcp` listeners: bytes relayed from backends to clients.
    pub sent_bytes: Counter,
}

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (connections open right now).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Removes one.
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::new(&[10, 100]);
        h.observe_ns(10);
        h.observe_ns(11);
        h.observe_ns(1000);
        let s = h.snapshot();
        assert_eq!(s.counts, [1, 1, 1]);
        assert_eq!(s.sum_ns, 1021);
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn statuses_count_by_class() {
        let c = StatusCounts::default();
        for status in [200, 204, 404, 503, 101, 0] {
            c.count(status);
        }
        assert_eq!(c.snapshot(), [1, 2, 0, 1, 2]);
    }

    #[test]
    fn bucket_bounds_ascend() {
        for bounds in [DECISION_BUCKETS, REQUEST_BUCKETS] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
