//! Fewest requests in flight.

use std::cmp::Ordering;

use crate::BackendStats;

/// The healthy backend with the fewest requests in flight; `None` when no
/// backend is healthy. Weights are not considered. When the stats are not
/// needed for anything else, [`PoolId::least_active`](crate::PoolId::least_active)
/// gives the same answer without fetching them.
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

/// `a.active / a.weight` compared with `b.active / b.weight`, exactly.
fn per_weight(a: &BackendStats, b: &BackendStats) -> Ordering {
    let lhs = u64::from(a.active_requests) * u64::from(b.weight.max(1));
    let rhs = u64::from(b.active_requests) * u64::from(a.weight.max(1));
    lhs.cmp(&rhs)
}

/// Weighted least connections (nginx `least_conn`, HAProxy `leastconn`):
/// the healthy backend with the fewest requests in flight per unit of
/// weight, so a backend of weight 2 is as loaded with 2 in flight as one of
/// weight 1 with 1. Ties (every backend idle, say) are broken by weight: a
/// tied backend is chosen with probability proportional to its weight,
/// from the random number `r`. `None` when no backend is healthy.
pub fn least_connections(stats: &[BackendStats], r: u64) -> Option<u32> {
    let mut best: Option<&BackendStats> = None;
    let mut tied_weight = 0u64;
    for b in stats.iter().filter(|b| b.healthy) {
        let w = u64::from(b.weight.max(1));
        match best.map(|best| per_weight(b, best)) {
            None | Some(Ordering::Less) => {
                best = Some(b);
                tied_weight = w;
            }
            Some(Ordering::Equal) => tied_weight += w,
            Some(Ordering::Greater) => {}
        }
    }
    let best = best?;
    let mut point = r % tied_weight;
    for b in stats
        .iter()
        .filter(|b| b.healthy && per_weight(b, best) == Ordering::Equal)
    {
        let w = u64::from(b.weight.max(1));
        if point < w {
            return Some(b.index);
        }
        point -= w;
    }
    Some(best.index)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

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

    #[test]
    fn least_connections_counts_per_weight() {
        // 4 in flight on weight 4 (1 per weight) beats 2 on weight 1.
        let stats = vec![
            backend(0, true, 1, 2),
            backend(1, true, 4, 4),
            backend(2, false, 9, 0),
        ];
        for r in 0..10 {
            assert_eq!(least_connections(&stats, r), Some(1));
        }
        // Away from a backend holding slow requests.
        let stats = vec![
            backend(0, true, 1, 8),
            backend(1, true, 1, 0),
            backend(2, true, 1, 1),
        ];
        for r in 0..10 {
            assert_eq!(least_connections(&stats, r), Some(1));
        }
    }

    #[test]
    fn least_connections_breaks_ties_by_weight() {
        let stats = vec![
            backend(0, true, 3, 0),
            backend(1, true, 1, 0),
            backend(2, true, 5, 3),
        ];
        let mut rng = Rng(9);
        let counts = tally(40_000, 3, || least_connections(&stats, rng.next()));
        assert_eq!(counts[2], 0);
        let heavy = counts[0] as f64 / 40_000.0;
        assert!((heavy - 0.75).abs() < 0.015, "{counts:?}");
        // Deterministic for a given r.
        assert_eq!(least_connections(&stats, 0), Some(0));
        assert_eq!(least_connections(&stats, 3), Some(1));
    }

    #[test]
    fn least_connections_none_when_nothing_healthy() {
        assert_eq!(least_connections(&[], 0), None);
        let mut stats = pool(2);
        stats.iter_mut().for_each(|b| b.healthy = false);
        assert_eq!(least_connections(&stats, 3), None);
        let saturated = vec![
            backend(0, true, u32::MAX, u32::MAX),
            backend(1, true, 1, u32::MAX),
        ];
        assert_eq!(least_connections(&saturated, 1), Some(0));
    }
}
