//! Round robin: per worker ([`RoundRobin`], or [`Rotation`] without
//! stats) or over a cursor shared by every worker ([`SharedRotation`]).

use super::fingerprint;
use crate::{BackendStats, Candidates};

/// Plain round robin over [`Candidates`]: every candidate gets one turn,
/// in pool order, whatever its weight. Unlike [`RoundRobin`] it needs no
/// stats (no list crosses into the guest), only the host's candidate mask,
/// so it is the cheapest balancing there is.
///
/// The state is one cursor, the backend picked last: each pick takes the
/// first candidate after it (wrapping around). An unhealthy backend is
/// skipped and rejoins at its place in the order when it recovers; a retry
/// takes the next untried backend. Per worker, like [`RoundRobin`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    last: Option<u32>,
}

impl Rotation {
    /// A rotation that starts at the first candidate.
    pub const fn new() -> Self {
        Rotation { last: None }
    }

    /// The next candidate's index, or `None` when there is no candidate
    /// (no healthy backend); then the cursor stays where it was.
    pub fn pick(&mut self, candidates: &mut Candidates<'_>) -> Option<u32> {
        let next = candidates.next_after(self.last)?;
        self.last = Some(next);
        Some(next)
    }

    /// The backend picked last, if any.
    pub fn last(&self) -> Option<u32> {
        self.last
    }
}

/// Weighted round robin over the healthy backends of a pool.
///
/// Keep one per pool in the policy's state and call [`pick`](Self::pick)
/// with the pool's current stats on every decision. With equal weights this
/// is a plain rotation (0, 1, 2, 0, 1, 2, ...); a backend with `weight = 2`
/// gets twice the turns of one with weight 1, interleaved rather than in
/// bursts (the "smooth" weighted round robin of nginx: for weights 5, 1, 1
/// the sequence is a a b a c a a). An unhealthy backend is skipped without
/// disturbing the others' rotation. [`RoundRobin::unweighted`] ignores the
/// weights.
///
/// The state is per worker: each worker's instance rotates on its own.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    /// Per backend: how far it is ahead of (positive) or behind its share.
    current: Vec<i64>,
    /// Every backend counts as weight 1.
    unweighted: bool,
}

impl RoundRobin {
    /// A weighted rotation that starts at the first healthy backend.
    pub const fn new() -> Self {
        RoundRobin {
            current: Vec::new(),
            unweighted: false,
        }
    }

    /// A rotation that gives every healthy backend one turn, whatever its
    /// weight.
    pub const fn unweighted() -> Self {
        RoundRobin {
            current: Vec::new(),
            unweighted: true,
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
            let weight = if self.unweighted {
                1
            } else {
                i64::from(backend.weight.max(1))
            };
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

/// Smooth weighted round robin driven by an external cursor, typically a
/// [`SharedCounter`](crate::shared::SharedCounter) that every worker
/// increments: the rotation is then global instead of per worker, so
/// consecutive requests alternate exactly whichever worker serves them.
///
/// It caches one period of the [`RoundRobin`] sequence over the healthy
/// backends (as long as the total weight is at most
/// [`SharedRotation::MAX_PERIOD`]; beyond that it maps the cursor onto the
/// cumulative weights, which is exact in proportion but bursty) and
/// rebuilds it only when the pool's health, weights or members change.
#[derive(Debug, Clone, Default)]
pub struct SharedRotation {
    fingerprint: Option<u64>,
    /// One period of the sequence; empty when the period is too long.
    schedule: Vec<u32>,
}

impl SharedRotation {
    /// The longest period cached (total weight of the healthy backends).
    pub const MAX_PERIOD: u64 = 4096;

    /// An empty rotation (built on the first pick).
    pub const fn new() -> Self {
        SharedRotation {
            fingerprint: None,
            schedule: Vec::new(),
        }
    }

    /// The backend for `cursor` (0, 1, 2, ... over time), or `None` when no
    /// backend is healthy.
    pub fn pick(&mut self, stats: &[BackendStats], cursor: u64) -> Option<u32> {
        let total: u64 = stats
            .iter()
            .filter(|b| b.healthy)
            .map(|b| u64::from(b.weight.max(1)))
            .sum();
        if total == 0 {
            return None;
        }
        if total > Self::MAX_PERIOD {
            return cumulative(stats, cursor % total);
        }
        let fp = fingerprint(stats);
        if self.fingerprint != Some(fp) || self.schedule.len() as u64 != total {
            let mut rr = RoundRobin::new();
            self.schedule.clear();
            self.schedule
                .extend((0..total).map_while(|_| rr.pick(stats)));
            self.fingerprint = Some(fp);
        }
        self.schedule.get((cursor % total) as usize).copied()
    }
}

/// The healthy backend whose cumulative weight range holds `point`
/// (`point < total healthy weight`).
fn cumulative(stats: &[BackendStats], mut point: u64) -> Option<u32> {
    for b in stats.iter().filter(|b| b.healthy) {
        let w = u64::from(b.weight.max(1));
        if point < w {
            return Some(b.index);
        }
        point -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn rotation_takes_turns_over_candidates() {
        let mut rotation = Rotation::new();
        let mut all = Candidates::from_words(3, &[0b111]);
        let seq: Vec<_> = (0..4).map(|_| rotation.pick(&mut all).unwrap()).collect();
        assert_eq!(seq, [0, 1, 2, 0]);
        // Backend 1 down: skipped; back: rejoins in order.
        let mut two = Candidates::from_words(3, &[0b101]);
        assert_eq!(rotation.pick(&mut two), Some(2));
        assert_eq!(rotation.pick(&mut two), Some(0));
        assert_eq!(rotation.pick(&mut all), Some(1));
        // None healthy: no pick, the cursor stays.
        assert_eq!(rotation.pick(&mut Candidates::from_words(3, &[0])), None);
        assert_eq!(rotation.last(), Some(1));
        // The pool shrank under the cursor: start over.
        let mut small = Candidates::from_words(1, &[1]);
        assert_eq!(rotation.pick(&mut all), Some(2));
        assert_eq!(rotation.pick(&mut small), Some(0));
    }

    #[test]
    fn rotation_matches_unweighted_round_robin_while_healthy() {
        let mut rotation = Rotation::new();
        let mut rr = RoundRobin::unweighted();
        let stats = vec![
            backend(0, true, 3, 0),
            backend(1, true, 1, 0),
            backend(2, true, 2, 0),
        ];
        let mut c = Candidates::from_words(3, &[0b111]);
        for _ in 0..9 {
            assert_eq!(rotation.pick(&mut c), rr.pick(&stats));
        }
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
    fn weighted_round_robin_never_bursts_more_than_needed() {
        // 3:1 -> the heavy backend never gets more than 3 in a row, and
        // every window of 4 holds exactly one light pick.
        let mut rr = RoundRobin::new();
        let stats = vec![backend(0, true, 3, 0), backend(1, true, 1, 0)];
        let seq: Vec<u32> = picks(&mut rr, &stats, 400).into_iter().flatten().collect();
        for window in seq.chunks(4) {
            assert_eq!(window.iter().filter(|&&b| b == 1).count(), 1, "{window:?}");
        }
    }

    #[test]
    fn unweighted_ignores_weights() {
        let mut rr = RoundRobin::unweighted();
        let stats = vec![backend(0, true, 5, 0), backend(1, true, 1, 0)];
        let expected: Vec<_> = [0, 1, 0, 1].into_iter().map(Some).collect();
        assert_eq!(picks(&mut rr, &stats, 4), expected);
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
    fn shared_rotation_follows_the_cursor() {
        let mut rotation = SharedRotation::new();
        let stats = vec![
            backend(0, true, 5, 0),
            backend(1, true, 1, 0),
            backend(2, true, 1, 0),
        ];
        let seq: Vec<_> = (0..14).map(|c| rotation.pick(&stats, c).unwrap()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
        // Any cursor, in any order, gives the same answer.
        assert_eq!(rotation.pick(&stats, 7 * 1000 + 2), Some(1));

        let mut down = stats.clone();
        down[0].healthy = false;
        let seq: Vec<_> = (0..4).map(|c| rotation.pick(&down, c).unwrap()).collect();
        assert_eq!(seq, [1, 2, 1, 2]);
        down[1].healthy = false;
        down[2].healthy = false;
        assert_eq!(rotation.pick(&down, 0), None);
    }

    #[test]
    fn shared_rotation_with_huge_weights_keeps_proportions() {
        let mut rotation = SharedRotation::new();
        let stats = vec![
            backend(0, true, 3000, 0),
            backend(1, true, 1000, 0),
            backend(2, false, 1, 0),
        ];
        // 4000 <= MAX_PERIOD: cached schedule.
        let counts = tally(4000, 3, {
            let mut c = 0;
            move || {
                c += 1;
                rotation.pick(&stats, c)
            }
        });
        assert_eq!(counts, [3000, 1000, 0]);

        let mut rotation = SharedRotation::new();
        let stats = vec![backend(0, true, 30_000, 0), backend(1, true, 10_000, 0)];
        let counts = tally(40_000, 2, {
            let mut c = 0;
            move || {
                c += 1;
                rotation.pick(&stats, c)
            }
        });
        assert_eq!(counts, [30_000, 10_000]);
    }
}
