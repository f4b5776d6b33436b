//! Random choices: uniform, by weight, and by weight x spare capacity.

use crate::{BackendStats, Candidates};

/// A uniformly random candidate (weights ignored) from one random number
/// `r`, without any stats; `None` when there is no candidate.
pub fn random_candidate(candidates: &mut Candidates<'_>, r: u64) -> Option<u32> {
    match u64::from(candidates.count()) {
        0 => None,
        n => candidates.nth((r % n) as u32),
    }
}

/// A random healthy backend, each with a probability proportional to its
/// weight, from one random number `r`; `None` when no backend is healthy.
pub fn weighted_random(stats: &[BackendStats], r: u64) -> Option<u32> {
    pick_by(stats, r, |b| u64::from(b.weight.max(1)))
}

/// Picks a healthy backend with probability proportional to `share(b)`
/// (backends with share 0 are never picked).
fn pick_by(stats: &[BackendStats], r: u64, share: impl Fn(&BackendStats) -> u64) -> Option<u32> {
    let total: u64 = stats.iter().filter(|b| b.healthy).map(&share).sum();
    if total == 0 {
        return None;
    }
    let mut point = r % total;
    for b in stats.iter().filter(|b| b.healthy) {
        let s = share(b);
        if point < s {
            return Some(b.index);
        }
        point -= s;
    }
    None
}

/// How [`utilization_weighted`] reads the backends' load reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Utilization {
    /// A report older than this (milliseconds) is ignored. Default 5,000.
    pub max_age_ms: u32,
    /// The spare capacity (0..=1) assumed for a backend without a fresh
    /// report while others have one. Default 0.5.
    pub unreported_spare: f32,
    /// The least spare capacity a reporting backend is credited with, so a
    /// saturated backend keeps a trickle of requests (whose responses carry
    /// its next report) instead of none. Default 0.01.
    pub min_spare: f32,
}

impl Default for Utilization {
    fn default() -> Self {
        Utilization {
            max_age_ms: 5_000,
            unreported_spare: 0.5,
            min_spare: 0.01,
        }
    }
}

impl Utilization {
    /// The spare capacity of a backend in thousandths, or `None` when it
    /// has no fresh, sensible report. Spare = 1 - max(cpu, memory).
    pub fn spare_permille(&self, b: &BackendStats) -> Option<u64> {
        let load = b.load.as_ref().filter(|l| l.age_ms <= self.max_age_ms)?;
        if !load.cpu.is_finite() || !load.memory.is_finite() {
            return None;
        }
        let busy = load.cpu.max(load.memory);
        let spare = (1.0 - busy).clamp(self.min_spare.clamp(0.0, 1.0), 1.0);
        Some((spare * 1000.0).round() as u64)
    }
}

/// A random healthy backend with probability proportional to its weight
/// times its spare capacity (`1 - max(cpu, memory)` from its load report):
/// a backend reporting cpu = 0.95 gets a twentieth of the traffic of an
/// idle one of the same weight. A backend without a fresh report counts as
/// [`Utilization::unreported_spare`]; when no healthy backend has a fresh
/// report this is plain [`weighted_random`]. `None` when no backend is
/// healthy.
pub fn utilization_weighted(stats: &[BackendStats], r: u64, how: &Utilization) -> Option<u32> {
    if !stats
        .iter()
        .any(|b| b.healthy && how.spare_permille(b).is_some())
    {
        return weighted_random(stats, r);
    }
    let unreported = (how.unreported_spare.clamp(0.0, 1.0) * 1000.0).round() as u64;
    pick_by(stats, r, |b| {
        u64::from(b.weight.max(1)) * how.spare_permille(b).unwrap_or(unreported).max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::bindings::types::BackendLoad;

    /// Uniform random over the healthy backends of full stats: what
    /// [`random_candidate`] must agree with.
    fn random_healthy(stats: &[BackendStats], r: u64) -> Option<u32> {
        let healthy = stats.iter().filter(|b| b.healthy).count() as u64;
        if healthy == 0 {
            return None;
        }
        stats
            .iter()
            .filter(|b| b.healthy)
            .nth((r % healthy) as usize)
            .map(|b| b.index)
    }

    fn share(counts: &[usize], i: usize) -> f64 {
        counts[i] as f64 / counts.iter().sum::<usize>() as f64
    }

    #[test]
    fn random_candidate_picks_as_random_healthy_does() {
        let mut stats = pool(70);
        for i in [2, 40, 64, 69] {
            stats[i].healthy = false;
        }
        let mask = |range: std::ops::Range<usize>| {
            stats[range.clone()]
                .iter()
                .enumerate()
                .filter(|(_, b)| b.healthy)
                .fold(0u64, |m, (i, _)| m | 1 << i)
        };
        let words = [mask(0..64), mask(64..70)];
        let mut candidates = Candidates::from_words(70, &words);
        let mut rng = Rng(3);
        for _ in 0..500 {
            let r = rng.next();
            assert_eq!(
                random_candidate(&mut candidates, r),
                random_healthy(&stats, r)
            );
        }
        let mut none = Candidates::from_words(70, &[]);
        assert_eq!(random_candidate(&mut none, 7), None);
    }

    #[test]
    fn random_healthy_is_uniform_over_healthy() {
        let mut stats = pool(4);
        stats[2].healthy = false;
        let mut rng = Rng(1);
        let counts = tally(30_000, 4, || random_healthy(&stats, rng.next()));
        assert_eq!(counts[2], 0);
        for i in [0, 1, 3] {
            assert!((share(&counts, i) - 1.0 / 3.0).abs() < 0.02, "{counts:?}");
        }
        stats.iter_mut().for_each(|b| b.healthy = false);
        assert_eq!(random_healthy(&stats, 5), None);
        assert_eq!(random_healthy(&[], 5), None);
    }

    #[test]
    fn weighted_random_follows_weights() {
        let stats = vec![
            backend(0, true, 3, 0),
            backend(1, true, 1, 0),
            backend(2, false, 10, 0),
        ];
        let mut rng = Rng(2);
        let counts = tally(40_000, 3, || weighted_random(&stats, rng.next()));
        assert_eq!(counts[2], 0);
        assert!((share(&counts, 0) - 0.75).abs() < 0.015, "{counts:?}");
        // Every r maps somewhere, including the extremes.
        assert!(weighted_random(&stats, u64::MAX).is_some());
        assert_eq!(weighted_random(&stats, 0), Some(0));
        assert_eq!(weighted_random(&stats, 3), Some(1));
    }

    fn with_load(mut b: BackendStats, cpu: f32, memory: f32, age_ms: u32) -> BackendStats {
        b.load = Some(BackendLoad {
            cpu,
            memory,
            age_ms,
        });
        b
    }

    #[test]
    fn utilization_shifts_away_from_a_busy_backend() {
        let how = Utilization::default();
        let stats = vec![
            with_load(backend(0, true, 1, 0), 0.95, 0.1, 100),
            with_load(backend(1, true, 1, 0), 0.10, 0.3, 100),
        ];
        let mut rng = Rng(3);
        let counts = tally(20_000, 2, || utilization_weighted(&stats, rng.next(), &how));
        // 0.05 / (0.05 + 0.7) = 6.7 %
        assert!((share(&counts, 0) - 0.0667).abs() < 0.015, "{counts:?}");

        // Memory counts as much as CPU.
        let stats = vec![
            with_load(backend(0, true, 1, 0), 0.0, 0.95, 100),
            with_load(backend(1, true, 1, 0), 0.0, 0.0, 100),
        ];
        let counts = tally(20_000, 2, || utilization_weighted(&stats, rng.next(), &how));
        assert!(share(&counts, 0) < 0.07, "{counts:?}");
    }

    #[test]
    fn utilization_treats_unreported_as_half_busy() {
        let how = Utilization::default();
        let stats = vec![
            with_load(backend(0, true, 1, 0), 0.95, 0.0, 0),
            backend(1, true, 1, 0),
        ];
        let mut rng = Rng(4);
        let counts = tally(20_000, 2, || utilization_weighted(&stats, rng.next(), &how));
        // 0.05 / (0.05 + 0.5) = 9 %
        assert!((share(&counts, 0) - 0.091).abs() < 0.015, "{counts:?}");
    }

    #[test]
    fn utilization_falls_back_to_weights_without_fresh_reports() {
        let how = Utilization {
            max_age_ms: 1000,
            ..Utilization::default()
        };
        // Stale reports (and a NaN) are ignored: plain 3:1 weights.
        let stats = vec![
            with_load(backend(0, true, 3, 0), 0.99, 0.99, 5000),
            with_load(backend(1, true, 1, 0), f32::NAN, 0.0, 10),
        ];
        let mut rng = Rng(5);
        let counts = tally(40_000, 2, || utilization_weighted(&stats, rng.next(), &how));
        assert!((share(&counts, 0) - 0.75).abs() < 0.015, "{counts:?}");
    }

    #[test]
    fn utilization_keeps_a_trickle_and_skips_unhealthy() {
        let how = Utilization::default();
        let stats = vec![
            with_load(backend(0, true, 1, 0), 1.0, 1.0, 0),
            with_load(backend(1, true, 1, 0), 0.0, 0.0, 0),
            with_load(backend(2, false, 1, 0), 0.0, 0.0, 0),
        ];
        let mut rng = Rng(6);
        let counts = tally(50_000, 3, || utilization_weighted(&stats, rng.next(), &how));
        assert_eq!(counts[2], 0);
        assert!(counts[0] > 100 && share(&counts, 0) < 0.02, "{counts:?}");
        let down: Vec<_> = stats
            .iter()
            .cloned()
            .map(|mut b| {
                b.healthy = false;
                b
            })
            .collect();
        assert_eq!(utilization_weighted(&down, 1, &how), None);
    }
}
