//! Load-balancing helpers: pure functions over a pool's [`BackendStats`]
//! (as returned by [`PoolId::stats`](crate::PoolId::stats)), so they are
//! unit-testable natively and cost no host call themselves.
//!
//! Every helper skips unhealthy backends (the host refuses a decision that
//! picks one) and returns `None` when no backend is healthy; answer that
//! with [`Decision::no_backend`](crate::Decision::no_backend).

use crate::BackendStats;

/// Weighted round robin over the healthy backends of a pool.
///
/// Keep one per pool in the policy's state and call [`pick`](Self::pick)
/// with the pool's current stats on every decision. With equal weights this
/// is a plain rotation (0, 1, 2, 0, 1, 2, ...); a backend with `weight = 2`
/// gets twice the turns of one with weight 1, interleaved rather than in
/// bursts (the "smooth" weighted round robin of nginx). An unhealthy
/// backend is skipped without disturbing the others' rotation.
///
/// The state is per worker: each worker's instance rotates on its own.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    /// Per backend: how far it is ahead of (positive) or behind its share.
    current: Vec<i64>,
}

impl RoundRobin {
    /// A rotation that starts at the first healthy backend.
    pub const fn new() -> Self {
        RoundRobin {
            current: Vec::new(),
        }
    }

    /// The next backend's index, or `None` when no backend is healthy.
    pub fn pick(&mut self, stats: &[BackendStats]) -> Option<u32> {
        if self.current.len() != stats.len() {
            // The pool changed: start over.
            self.current.clear();
            self.current.resize(stats.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, backend) in stats.iter().enumerate() {
            if !backend.healthy {
                // Rejoins the rotation neutrally when it recovers.
                self.current[i] = 0;
                continue;
            }
            let weight = i64::from(backend.weight.max(1));
            self.current[i] += weight;
            total += weight;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(stats[best].index)
    }
}

/// The healthy backend with the fewest requests in flight; `None` when no
/// backend is healthy. Weights are not considered.
///
/// Ties (common at low load, where every backend has 0 or 1 in flight) are
/// broken by `tie_breaker`: the tied backends are taken in pool order and
/// `tie_breaker % ties` selects one. Pass a counter incremented per
/// decision to rotate among equal backends, or [`random`](crate::random)
/// for a random choice; a constant would send every tie to the same
/// backend.
pub fn least_active(stats: &[BackendStats], tie_breaker: u64) -> Option<u32> {
    let mut fewest = u32::MAX;
    let mut ties = 0u64;
    for backend in stats.iter().filter(|b| b.healthy) {
        if backend.active_requests < fewest {
            fewest = backend.active_requests;
            ties = 1;
        } else if backend.active_requests == fewest {
            ties += 1;
        }
    }
    if ties == 0 {
        return None;
    }
    let nth = tie_breaker % ties;
    stats
        .iter()
        .filter(|b| b.healthy && b.active_requests == fewest)
        .nth(nth as usize)
        .map(|b| b.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(index: u32, healthy: bool, weight: u32, active: u32) -> BackendStats {
        BackendStats {
            index,
            weight,
            healthy,
            active_requests: active,
            ewma_latency_us: 0,
            total_requests: 0,
        }
    }

    /// Healthy backends of weight 1 and no load.
    fn pool(n: u32) -> Vec<BackendStats> {
        (0..n).map(|i| backend(i, true, 1, 0)).collect()
    }

    fn picks(rr: &mut RoundRobin, stats: &[BackendStats], n: usize) -> Vec<Option<u32>> {
        (0..n).map(|_| rr.pick(stats)).collect()
    }

    #[test]
    fn round_robin_rotates_fairly() {
        let mut rr = RoundRobin::new();
        let stats = pool(3);
        let expected: Vec<_> = [0, 1, 2, 0, 1, 2, 0].into_iter().map(Some).collect();
        assert_eq!(picks(&mut rr, &stats, 7), expected);
    }

    #[test]
    fn round_robin_skips_unhealthy() {
        let mut rr = RoundRobin::new();
        let mut stats = pool(3);
        stats[1].healthy = false;
        let expected: Vec<_> = [0, 2, 0, 2].into_iter().map(Some).collect();
        assert_eq!(picks(&mut rr, &stats, 4), expected);
        // Recovery: the backend rejoins, and each gets its share again.
        stats[1].healthy = true;
        let mut counts = [0; 3];
        for pick in picks(&mut rr, &stats, 30) {
            counts[pick.unwrap() as usize] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);
    }

    #[test]
    fn round_robin_honours_weights_smoothly() {
        let mut rr = RoundRobin::new();
        let stats = vec![backend(0, true, 2, 0), backend(1, true, 1, 0)];
        let expected: Vec<_> = [0, 1, 0, 0, 1, 0].into_iter().map(Some).collect();
        assert_eq!(picks(&mut rr, &stats, 6), expected);

        let mut rr = RoundRobin::new();
        let stats = vec![
            backend(0, true, 5, 0),
            backend(1, true, 1, 0),
            backend(2, true, 1, 0),
        ];
        let seq = picks(&mut rr, &stats, 7);
        // nginx's documented sequence for weights 5, 1, 1: a a b a c a a.
        let expected: Vec<_> = [0, 0, 1, 0, 2, 0, 0].into_iter().map(Some).collect();
        assert_eq!(seq, expected);
    }

    #[test]
    fn round_robin_none_when_nothing_healthy() {
        let mut rr = RoundRobin::new();
        assert_eq!(rr.pick(&[]), None);
        let mut stats = pool(2);
        stats.iter_mut().for_each(|b| b.healthy = false);
        assert_eq!(rr.pick(&stats), None);
        assert_eq!(rr.pick(&stats), None);
    }

    #[test]
    fn round_robin_follows_a_resized_pool() {
        let mut rr = RoundRobin::new();
        assert_eq!(rr.pick(&pool(3)), Some(0));
        assert_eq!(rr.pick(&pool(3)), Some(1));
        assert_eq!(rr.pick(&pool(1)), Some(0));
        assert_eq!(rr.pick(&pool(2)), Some(0));
        assert_eq!(rr.pick(&pool(2)), Some(1));
    }

    #[test]
    fn least_active_picks_the_least_loaded_healthy_backend() {
        let stats = vec![
            backend(0, true, 1, 5),
            backend(1, false, 1, 0),
            backend(2, true, 1, 2),
            backend(3, true, 1, 3),
        ];
        for tie_breaker in 0..5 {
            assert_eq!(least_active(&stats, tie_breaker), Some(2));
        }
    }

    #[test]
    fn least_active_rotates_among_ties() {
        let stats = vec![
            backend(0, true, 1, 1),
            backend(1, true, 1, 4),
            backend(2, false, 1, 1),
            backend(3, true, 1, 1),
        ];
        let seq: Vec<_> = (0..4).map(|t| least_active(&stats, t)).collect();
        assert_eq!(seq, [Some(0), Some(3), Some(0), Some(3)]);
        // u64::MAX is a valid tie breaker.
        assert!(least_active(&stats, u64::MAX).is_some());

        let idle = pool(3);
        let seq: Vec<_> = (0..6).map(|t| least_active(&idle, t)).collect();
        assert_eq!(seq, [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn least_active_handles_saturated_counters() {
        let stats = vec![backend(0, true, 1, u32::MAX), backend(1, true, 1, u32::MAX)];
        assert_eq!(least_active(&stats, 1), Some(1));
    }

    #[test]
    fn least_active_none_when_nothing_healthy() {
        assert_eq!(least_active(&[], 0), None);
        let mut stats = pool(3);
        stats.iter_mut().for_each(|b| b.healthy = false);
        assert_eq!(least_active(&stats, 7), None);
    }
}
