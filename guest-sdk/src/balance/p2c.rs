//! Power of two random choices over latency x load (Linkerd's
//! least-response-time balancer).

use std::cmp::Ordering;

use crate::BackendStats;

/// The expected cost of sending one more request to `b`, scaled by weight:
/// `ewma_latency * (active + 1) / weight`, compared exactly.
fn cost_cmp(a: &BackendStats, b: &BackendStats) -> Ordering {
    let cost = |x: &BackendStats| {
        u128::from(x.ewma_latency_us.max(1)) * (u128::from(x.active_requests) + 1)
    };
    let lhs = cost(a) * u128::from(b.weight.max(1));
    let rhs = cost(b) * u128::from(a.weight.max(1));
    lhs.cmp(&rhs)
        .then(a.active_requests.cmp(&b.active_requests))
}

/// Least response time by the power of two random choices: two distinct
/// healthy backends are drawn at random (from the one random number `r`),
/// and the one with the lower `ewma_latency_us * (active_requests + 1) /
/// weight` wins. This is how Linkerd balances: it tracks latency and load
/// like a full least-loaded scan, but a backend that just got fast is not
/// flooded by every worker at once (the "herd" effect of always taking the
/// minimum over stale stats). With a single healthy backend it is chosen;
/// `None` when no backend is healthy.
///
/// The host seeds a backend's EWMA with the mean of the others' until its
/// first response, so a new backend is not taken for the fastest.
pub fn p2c_least_loaded(stats: &[BackendStats], r: u64) -> Option<u32> {
    let healthy = stats.iter().filter(|b| b.healthy).count() as u64;
    match healthy {
        0 => return None,
        1 => return stats.iter().find(|b| b.healthy).map(|b| b.index),
        _ => {}
    }
    let first = (r & 0xFFFF_FFFF) % healthy;
    let mut second = (r >> 32) % (healthy - 1);
    if second >= first {
        second += 1;
    }
    let nth = |n: u64| stats.iter().filter(|b| b.healthy).nth(n as usize);
    let (a, b) = (nth(first)?, nth(second)?);
    Some(if cost_cmp(b, a) == Ordering::Less {
        b.index
    } else {
        a.index
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn timed(index: u32, ewma_us: u32, active: u32) -> BackendStats {
        let mut b = backend(index, true, 1, active);
        b.ewma_latency_us = ewma_us;
        b
    }

    #[test]
    fn p2c_prefers_the_faster_backend() {
        // Two backends: both are always drawn, the faster always wins.
        let stats = vec![timed(0, 21_000, 0), timed(1, 1_000, 0)];
        let mut rng = Rng(11);
        let counts = tally(1000, 2, || p2c_least_loaded(&stats, rng.next()));
        assert_eq!(counts, [0, 1000]);
        // ...until the fast one is loaded enough: 1 ms x 25 > 21 ms x 1.
        let stats = vec![timed(0, 21_000, 0), timed(1, 1_000, 24)];
        assert_eq!(p2c_least_loaded(&stats, 12345), Some(0));
    }

    #[test]
    fn p2c_draws_two_distinct_backends_uniformly() {
        // Equal costs: the first draw wins, so every backend is picked
        // about equally often, and never an unhealthy one.
        let mut stats: Vec<_> = (0..5).map(|i| timed(i, 1000, 0)).collect();
        stats[3].healthy = false;
        let mut rng = Rng(12);
        let counts = tally(40_000, 5, || p2c_least_loaded(&stats, rng.next()));
        assert_eq!(counts[3], 0);
        for i in [0, 1, 2, 4] {
            assert!((9_000..11_000).contains(&counts[i]), "{counts:?}");
        }
    }

    #[test]
    fn p2c_slowest_backend_is_never_picked_among_many() {
        // The slowest of n backends loses every duel it is drawn into.
        let stats: Vec<_> = (0..16).map(|i| timed(i, 1000 + i * 100, 0)).collect();
        let mut rng = Rng(13);
        let counts = tally(20_000, 16, || p2c_least_loaded(&stats, rng.next()));
        assert_eq!(counts[15], 0);
        assert!(
            counts[0] > counts[8] && counts[8] > counts[14],
            "{counts:?}"
        );
    }

    #[test]
    fn p2c_weights_and_edge_cases() {
        // Weight 4 at 4 ms costs as much as weight 1 at 1 ms...
        let mut heavy = timed(0, 4_000, 0);
        heavy.weight = 4;
        assert_eq!(cost_cmp(&heavy, &timed(1, 1_000, 0)), Ordering::Equal);
        // ...until it has one in flight: 4 ms x 2 / 4 > 1 ms.
        heavy.active_requests = 1;
        assert_eq!(cost_cmp(&heavy, &timed(1, 1_000, 0)), Ordering::Greater);
        // No latency known yet (0): decided by load.
        let stats = vec![timed(0, 0, 3), timed(1, 0, 1)];
        assert_eq!(p2c_least_loaded(&stats, 0), Some(1));
        assert_eq!(p2c_least_loaded(&stats, u64::MAX), Some(1));
        // One healthy backend, or none.
        let mut stats = pool(3);
        stats[0].healthy = false;
        stats[2].healthy = false;
        assert_eq!(p2c_least_loaded(&stats, 99), Some(1));
        stats[1].healthy = false;
        assert_eq!(p2c_least_loaded(&stats, 99), None);
    }
}
