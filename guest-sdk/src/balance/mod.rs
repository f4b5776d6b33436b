//! Load-balancing helpers: pure functions and small state machines over a
//! pool's [`BackendStats`] (as returned by
//! [`PoolId::stats`](crate::PoolId::stats)), so they are unit-testable
//! natively and cost no host call themselves. Where a helper needs
//! randomness it takes it as an argument: pass
//! [`random()`](crate::random) in a policy, a fixed or seeded value in a
//! test.
//!
//! | helper | what |
//! |---|---|
//! | [`RoundRobin`] | smooth weighted (nginx) or plain rotation, per worker |
//! | [`Rotation`] | plain rotation over [`Candidates`](crate::Candidates), no stats |
//! | [`SharedRotation`] | the same rotation driven by a cursor shared by every worker |
//! | [`random_candidate`] | uniform random over [`Candidates`](crate::Candidates), no stats |
//! | [`weighted_random`] | weight-proportional random |
//! | [`utilization_weighted`] | weight x spare capacity from the backends' load reports |
//! | [`least_active`], [`least_connections`] | fewest requests in flight (per weight) |
//! | [`p2c_least_loaded`] | power of two random choices over latency EWMA x in-flight |
//! | [`Maglev`] | consistent hashing by a key (Maglev lookup table) |
//! | [`Balancer`] | one of the above, chosen by name from `policy_config` |
//!
//! Every helper skips unhealthy backends (the host refuses a decision that
//! picks one) and returns `None` when no backend is healthy; answer that
//! with [`Decision::no_backend`](crate::Decision::no_backend).
//!
//! Retries: when the host asks again for a request whose backend could not
//! be reached ([`Request::attempt`](crate::Request::attempt) > 0), a policy
//! should pick another backend. Nothing to do for that:
//! [`PoolId::stats`](crate::PoolId::stats) marks the already-tried
//! backends unhealthy (as long as another healthy backend remains), so
//! every helper then skips them; [`PoolId::candidates`](crate::PoolId::candidates)
//! applies the same rule on the host, for [`Rotation`] and
//! [`random_candidate`]; [`Maglev::pick_for`] rehashes the key instead, so
//! a retry does not rebuild its table.

mod least;
mod maglev;
pub(crate) mod mask;
mod p2c;
mod random;
mod round_robin;

pub use least::{least_active, least_connections};
pub use maglev::{DEFAULT_TABLE_SIZE, Maglev};
pub use p2c::p2c_least_loaded;
pub use random::{Utilization, random_candidate, utilization_weighted, weighted_random};
pub use round_robin::{Rotation, RoundRobin, SharedRotation};

use crate::BackendStats;

/// Marks the backends in `tried` (backend indexes of this pool) unhealthy,
/// unless that would leave no healthy backend: a retry then goes to a
/// backend not tried yet, and when every healthy backend was tried, to any
/// of them again. Returns true when it changed something.
pub(crate) fn avoid(stats: &mut [BackendStats], tried: &[u32]) -> bool {
    if tried.is_empty() {
        return false;
    }
    let others = stats.iter().any(|b| b.healthy && !tried.contains(&b.index));
    if !others {
        return false;
    }
    let mut changed = false;
    for backend in stats.iter_mut() {
        if backend.healthy && tried.contains(&backend.index) {
            backend.healthy = false;
            changed = true;
        }
    }
    changed
}

/// The healthy backend with this [`stable_id`](BackendStats::stable_id),
/// if any (for a cookie or a hash that names a backend by identity).
pub fn by_stable_id(stats: &[BackendStats], stable_id: u64) -> Option<u32> {
    stats
        .iter()
        .find(|b| b.healthy && b.stable_id == stable_id)
        .map(|b| b.index)
}

/// A 64-bit hash of a key (FNV-1a, then the murmur3 finalizer so that
/// similar keys spread over every bit), for [`Maglev::pick`]. Stable
/// across processes, versions and platforms: consistent hashing in several
/// proxies agrees. [`HashKey::hash`](crate::key::HashKey::hash) gives the
/// same value for a request's key, hashed by the host without copying the
/// key into the guest.
pub fn hash_key(key: &[u8]) -> u64 {
    finish_key_hash(fnv1a64(key))
}

/// The hash of no bytes: the FNV-1a 64 offset basis.
pub(crate) const FNV1A64_EMPTY: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a of `bytes` (offset basis [`FNV1A64_EMPTY`], prime
/// 0x100000001b3): what the host's `key-hash` returns for the same bytes,
/// and how backends' stable ids are derived from their addresses.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV1A64_EMPTY, |h, &byte| {
        (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The last step of [`hash_key`]: scrambles an FNV-1a 64 hash (from
/// [`fnv1a64`] or [`Request::key_hash`](crate::Request::key_hash)) with the
/// murmur3 finalizer.
pub(crate) fn finish_key_hash(fnv: u64) -> u64 {
    mix64(fnv)
}

/// The murmur3 64-bit finalizer: a bijective scramble of every bit.
pub(crate) fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// A cheap fingerprint of what a cached structure depends on: the pool's
/// order, identities, weights and health. Equal fingerprints mean "nothing
/// relevant changed" (up to a 2^-64 collision).
pub(crate) fn fingerprint(stats: &[BackendStats]) -> u64 {
    let mut h = stats.len() as u64;
    for b in stats {
        h = mix64(h ^ b.stable_id);
        h = mix64(h ^ (u64::from(b.index) << 33 | u64::from(b.weight) << 1 | u64::from(b.healthy)));
    }
    h
}

/// Which balancing algorithm a policy uses, chosen by name (for a
/// `policy_config` key such as `balance = "least-connections"`), with its
/// per-worker state.
#[derive(Debug, Clone)]
pub enum Balancer {
    /// `round-robin`: smooth weighted round robin ([`RoundRobin`]).
    RoundRobin(RoundRobin),
    /// `random`: weighted random ([`weighted_random`]).
    Random,
    /// `least-connections`: fewest in flight per weight
    /// ([`least_connections`]).
    LeastConnections,
    /// `least-response-time`: power of two choices over latency x in
    /// flight ([`p2c_least_loaded`]).
    LeastResponseTime,
}

impl Balancer {
    /// The accepted names, for error messages and docs.
    pub const NAMES: &'static [&'static str] = &[
        "round-robin",
        "random",
        "least-connections",
        "least-response-time",
    ];

    /// The algorithm called `name`; the error lists the accepted names.
    /// `key` is the config key, named in the error.
    pub fn from_name(key: &str, name: &str) -> Result<Self, String> {
        match name {
            "round-robin" => Ok(Balancer::RoundRobin(RoundRobin::new())),
            "random" => Ok(Balancer::Random),
            "least-connections" => Ok(Balancer::LeastConnections),
            "least-response-time" => Ok(Balancer::LeastResponseTime),
            other => Err(format!(
                "{key}: unknown algorithm {other:?} (one of: {})",
                Self::NAMES.join(", ")
            )),
        }
    }

    /// Picks a healthy backend; `random` is called at most once, and only
    /// by the algorithms that need it.
    pub fn pick(&mut self, stats: &[BackendStats], random: impl FnOnce() -> u64) -> Option<u32> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(stats),
            Balancer::Random => weighted_random(stats, random()),
            Balancer::LeastConnections => least_connections(stats, random()),
            Balancer::LeastResponseTime => p2c_least_loaded(stats, random()),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Stats builders for the helpers' unit tests.
    use crate::BackendStats;

    pub fn backend(index: u32, healthy: bool, weight: u32, active: u32) -> BackendStats {
        BackendStats {
            index,
            stable_id: super::mix64(u64::from(index) + 1),
            weight,
            healthy,
            active_requests: active,
            ewma_latency_us: 0,
            total_requests: 0,
            error_rate_permille: 0,
            load: None,
            ejected: false,
        }
    }

    /// Healthy backends of weight 1 and no load.
    pub fn pool(n: u32) -> Vec<BackendStats> {
        (0..n).map(|i| backend(i, true, 1, 0)).collect()
    }

    /// A deterministic pseudo-random sequence (splitmix64).
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            super::mix64(self.0)
        }
    }

    /// How often each backend index was picked in `n` picks.
    pub fn tally(n: usize, size: usize, mut pick: impl FnMut() -> Option<u32>) -> Vec<usize> {
        let mut counts = vec![0; size];
        for _ in 0..n {
            counts[pick().expect("a backend") as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn avoid_marks_tried_backends_unless_none_would_remain() {
        let mut stats = pool(3);
        assert!(!avoid(&mut stats, &[]));
        assert!(avoid(&mut stats, &[0, 2]));
        assert_eq!(
            stats.iter().map(|b| b.healthy).collect::<Vec<_>>(),
            [false, true, false]
        );

        let mut stats = pool(2);
        stats[1].healthy = false;
        // Backend 0 is the only healthy one: it stays eligible.
        assert!(!avoid(&mut stats, &[0]));
        assert!(stats[0].healthy);
    }

    #[test]
    fn by_stable_id_finds_only_healthy() {
        let mut stats = pool(3);
        let id = stats[2].stable_id;
        assert_eq!(by_stable_id(&stats, id), Some(2));
        stats[2].healthy = false;
        assert_eq!(by_stable_id(&stats, id), None);
        assert_eq!(by_stable_id(&stats, 12345), None);
    }

    #[test]
    fn hash_key_is_stable_and_spreads() {
        // Pinned: other proxies (and other versions) must agree.
        assert_eq!(hash_key(b""), mix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_key(b"a"), mix64(0xaf63_dc4c_8601_ec8c));
        assert_ne!(hash_key(b"10.0.0.1"), hash_key(b"10.0.0.2"));
        let mut buckets = [0u32; 4];
        for i in 0..4000 {
            buckets[(hash_key(format!("user-{i}").as_bytes()) % 4) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (900..1100).contains(&n)),
            "{buckets:?}"
        );
    }

    #[test]
    fn hash_key_splits_into_fnv_and_finish() {
        assert_eq!(fnv1a64(b""), FNV1A64_EMPTY);
        // The host's stable-id test pins the same value.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        for key in ["", "10.0.0.1", "::1", "/video/1.mp4", "user-42"] {
            let key = key.as_bytes();
            assert_eq!(finish_key_hash(fnv1a64(key)), hash_key(key));
        }
    }

    #[test]
    fn fingerprint_sees_health_weight_and_identity() {
        let stats = pool(3);
        let base = fingerprint(&stats);
        assert_eq!(base, fingerprint(&pool(3)));
        let mut changed = stats.clone();
        changed[1].healthy = false;
        assert_ne!(base, fingerprint(&changed));
        let mut changed = stats.clone();
        changed[1].weight = 2;
        assert_ne!(base, fingerprint(&changed));
        let mut changed = stats.clone();
        changed[1].stable_id ^= 1;
        assert_ne!(base, fingerprint(&changed));
        // Load does not matter.
        let mut changed = stats;
        changed[1].active_requests = 9;
        assert_eq!(base, fingerprint(&changed));
    }

    #[test]
    fn balancer_by_name() {
        for name in Balancer::NAMES {
            let mut b = Balancer::from_name("balance", name).unwrap();
            assert!(b.pick(&pool(3), || 7).is_some(), "{name}");
            let mut down = pool(2);
            down.iter_mut().for_each(|b| b.healthy = false);
            assert_eq!(b.pick(&down, || 7), None, "{name}");
        }
        let err = Balancer::from_name("balance", "fastest").unwrap_err();
        assert!(
            err.starts_with("balance: unknown algorithm \"fastest\""),
            "{err}"
        );
    }
}
