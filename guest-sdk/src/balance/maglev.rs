//! Consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI
//! 2016).

use super::{fingerprint, mix64};
use crate::{BackendStats, Candidates, PoolId, Subject};

/// The default lookup-table size: a prime, large enough for an even spread
/// over a hundred-odd backends (Maglev wants `size` well above 100 x the
/// backend count for a spread within 1 %), small enough to rebuild in
/// about a millisecond inside a policy.
pub const DEFAULT_TABLE_SIZE: u32 = 16_381;

/// Consistent hashing: a key hash maps to a healthy backend such that
/// every key keeps its backend while the set of healthy backends does not
/// change, and when one of N backends goes away (or comes back) only about
/// 1/N of the keys move: those of that backend, plus a small disruption
/// among the others (typically well under 1 % of the keys; bounded by the
/// table size).
///
/// The table is built over the healthy backends' [`stable_id`]s (not their
/// indexes), sorted, so it is the same in every worker and every proxy
/// process with the same backends, whatever their order in the config.
/// Weights are honoured: a backend of weight 2 fills twice the slots. The
/// table is cached and rebuilt only when the pool's members, weights or
/// health change (one cheap fingerprint compare per pick).
/// [`pick_for`](Self::pick_for) reads the pool itself and needs only its
/// health mask on a first attempt.
///
/// [`stable_id`]: BackendStats::stable_id
#[derive(Debug, Clone)]
pub struct Maglev {
    size: u32,
    fingerprint: Option<u64>,
    /// Member slot -> backend index.
    members: Vec<u32>,
    /// Table position -> member slot.
    table: Vec<u32>,
    /// What [`pick_for`](Self::pick_for) last built the table over.
    known: Option<KnownPool>,
}

/// A pool as [`Maglev::pick_for`] keeps it: the stats read once (stable ids
/// and weights do not change while an instance lives), with the health of
/// the last pick written in.
#[derive(Debug, Clone)]
struct KnownPool {
    pool: PoolId,
    stats: Vec<BackendStats>,
    /// The health words (see [`Candidates::word`]) the table was built
    /// for, and the table's fingerprint then: the table is still theirs
    /// while [`Maglev`]'s fingerprint is unchanged.
    health: Vec<u64>,
    fingerprint: Option<u64>,
}

impl KnownPool {
    /// Whether the table was built for exactly this health.
    fn matches(&self, healthy: &mut Candidates<'_>, table: Option<u64>) -> bool {
        self.fingerprint.is_some()
            && self.fingerprint == table
            && (0..self.health.len()).all(|k| healthy.word(k as u32) == self.health[k])
    }

    /// Writes `healthy` into the stats and remembers it.
    fn update(&mut self, healthy: &mut Candidates<'_>) {
        for b in &mut self.stats {
            b.healthy = healthy.contains(b.index);
        }
        let words = healthy.pool_size().div_ceil(64).max(1);
        self.health = (0..words).map(|k| healthy.word(k)).collect();
    }
}

impl Maglev {
    /// The largest table size accepted: building a table takes time
    /// roughly proportional to `size x ln(size)` (natively about 0.5 ms at
    /// the default size and 3 ms at this one), paid by one decision per
    /// worker whenever the pool's healthy set changes, and that decision
    /// must stay within the listener's decision timeout.
    pub const MAX_TABLE_SIZE: u32 = 65_537;

    /// An empty table of `size` slots, built on the first pick. `size` must
    /// be a prime between 7 and [`MAX_TABLE_SIZE`](Self::MAX_TABLE_SIZE);
    /// the error says why not.
    pub fn new(size: u32) -> Result<Self, String> {
        if !(7..=Self::MAX_TABLE_SIZE).contains(&size) {
            return Err(format!(
                "must be between 7 and {}, got {size}",
                Self::MAX_TABLE_SIZE
            ));
        }
        if !is_prime(size) {
            return Err(format!("must be a prime number, got {size}"));
        }
        Ok(Maglev {
            size,
            fingerprint: None,
            members: Vec::new(),
            table: Vec::new(),
            known: None,
        })
    }

    /// The table size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The healthy backend for a key hash (see
    /// [`hash_key`](super::hash_key)); `None` when no backend is healthy.
    pub fn pick(&mut self, stats: &[BackendStats], key_hash: u64) -> Option<u32> {
        self.pick_avoiding(stats, key_hash, &[])
    }

    /// Like [`pick`](Self::pick), but when the key's backend is in `avoid`
    /// (the backends a retried request already tried), the key is rehashed
    /// a few times to find another healthy backend, so retries of one key
    /// still agree with each other. Without any other healthy backend it
    /// picks an avoided one again. The table is not rebuilt for this.
    pub(crate) fn pick_avoiding(
        &mut self,
        stats: &[BackendStats],
        key_hash: u64,
        avoid: &[u32],
    ) -> Option<u32> {
        self.refresh(stats);
        let first = self.lookup(key_hash)?;
        if avoid.is_empty() || !avoid.contains(&first) {
            return Some(first);
        }
        let mut h = key_hash;
        for _ in 0..16 {
            h = mix64(h.wrapping_add(0x9e37_79b9_7f4a_7c15));
            if let Some(candidate) = self.lookup(h)
                && !avoid.contains(&candidate)
            {
                return Some(candidate);
            }
        }
        Some(
            self.members
                .iter()
                .copied()
                .find(|m| !avoid.contains(m))
                .unwrap_or(first),
        )
    }

    /// [`pick`](Self::pick) for `req` over `pool`, retry-aware: on a retry,
    /// when the key's backend was tried already, the key is rehashed a few
    /// times to find another healthy backend, so retries of one key still
    /// agree with each other (without any other healthy backend a tried
    /// one is picked again), and the table is not rebuilt for it. Cheap:
    /// on a first attempt it reads only the pool's health
    /// ([`PoolId::candidates`], no list crosses into the guest). The stats (stable ids, weights) are read on
    /// the first call and kept: a pool's backends do not change during the
    /// life of an instance (a config reload starts new instances; see
    /// `init` in `wit/policy.wit`). A retry reads the stats and the tried
    /// list.
    ///
    /// `req` is a [`Request`](crate::Request) or a
    /// [`Connection`](crate::Connection): one routine serves HTTP and TCP
    /// listeners.
    pub fn pick_for<'a>(
        &mut self,
        pool: PoolId,
        req: impl Into<Subject<'a>>,
        key_hash: u64,
    ) -> Option<u32> {
        self.pick_for_subject(pool, req.into(), key_hash)
    }

    /// [`pick_for`](Self::pick_for), compiled once for both kinds of
    /// subject.
    fn pick_for_subject(&mut self, pool: PoolId, req: Subject<'_>, key_hash: u64) -> Option<u32> {
        if req.attempt() > 0 {
            return self.pick_avoiding(&pool.all_stats(), key_hash, &req.tried_in(pool));
        }
        // On a first attempt the candidates are exactly the healthy ones.
        let mut healthy = pool.candidates(req);
        self.pick_healthy(pool, &mut healthy, key_hash, || pool.all_stats())
    }

    /// [`pick`](Self::pick) over `pool` with the backends in `healthy`
    /// healthy; `stats` reads the pool's stats, called only when `pool` is
    /// not the one known already.
    fn pick_healthy(
        &mut self,
        pool: PoolId,
        healthy: &mut Candidates<'_>,
        key_hash: u64,
        stats: impl FnOnce() -> Vec<BackendStats>,
    ) -> Option<u32> {
        let mut known = match self.known.take() {
            Some(k) if k.pool == pool && k.stats.len() == healthy.pool_size() as usize => k,
            _ => KnownPool {
                pool,
                stats: stats(),
                health: Vec::new(),
                fingerprint: None,
            },
        };
        if !known.matches(healthy, self.fingerprint) {
            known.update(healthy);
            self.refresh(&known.stats);
            known.fingerprint = self.fingerprint;
        }
        self.known = Some(known);
        self.lookup(key_hash)
    }

    /// The member the table maps `key_hash` to; `None` when it is empty.
    fn lookup(&self, key_hash: u64) -> Option<u32> {
        let slot = *self.table.get((key_hash % u64::from(self.size)) as usize)?;
        self.members.get(slot as usize).copied()
    }

    /// Rebuilds the table if the pool changed since the last build.
    fn refresh(&mut self, stats: &[BackendStats]) {
        let fp = fingerprint(stats);
        if self.fingerprint == Some(fp) {
            return;
        }
        self.fingerprint = Some(fp);
        let mut healthy: Vec<&BackendStats> = stats.iter().filter(|b| b.healthy).collect();
        healthy.sort_by_key(|b| (b.stable_id, b.index));
        self.members = healthy.iter().map(|b| b.index).collect();
        self.table.clear();
        if healthy.is_empty() {
            return;
        }
        let m = u64::from(self.size);
        // Per member: its next position in its permutation, and its skip.
        let mut cursor: Vec<(u64, u64)> = healthy
            .iter()
            .map(|b| {
                let offset = mix64(b.stable_id ^ 0x6d61_676c_6576_3031) % m;
                let skip = mix64(b.stable_id ^ 0x736b_6970_736b_6970) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        // Weights, reduced by their gcd so a 10:10 pool fills like 1:1.
        let g = healthy.iter().fold(0u32, |g, b| gcd(g, b.weight.max(1)));
        let turns: Vec<u32> = healthy.iter().map(|b| b.weight.max(1) / g).collect();
        const EMPTY: u32 = u32::MAX;
        self.table.resize(self.size as usize, EMPTY);
        let mut filled = 0u64;
        'fill: loop {
            for (slot, (pos, skip)) in cursor.iter_mut().enumerate() {
                for _ in 0..turns[slot] {
                    // pos, skip < m, so one subtraction replaces `% m`.
                    while self.table[*pos as usize] != EMPTY {
                        *pos += *skip;
                        if *pos >= m {
                            *pos -= m;
                        }
                    }
                    self.table[*pos as usize] = slot as u32;
                    *pos += *skip;
                    if *pos >= m {
                        *pos -= m;
                    }
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::hash_key;
    use super::super::testing::*;
    use super::*;

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| hash_key(format!("client-{i}").as_bytes()))
            .collect()
    }

    fn map(m: &mut Maglev, stats: &[BackendStats], keys: &[u64]) -> Vec<u64> {
        // By stable id, which survives index changes.
        keys.iter()
            .map(|&k| stats[m.pick(stats, k).unwrap() as usize].stable_id)
            .collect()
    }

    #[test]
    fn sizes_must_be_prime() {
        assert!(Maglev::new(DEFAULT_TABLE_SIZE).is_ok());
        assert!(Maglev::new(65_537).is_ok());
        assert!(Maglev::new(7).is_ok());
        assert_eq!(
            Maglev::new(16_384).unwrap_err(),
            "must be a prime number, got 16384"
        );
        assert!(Maglev::new(5).is_err());
        assert!(Maglev::new(2_000_000).is_err());
    }

    #[test]
    fn spreads_evenly_and_honours_weights() {
        let mut m = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        let stats = pool(4);
        let mut counts = [0usize; 4];
        for k in keys(8000) {
            counts[m.pick(&stats, k).unwrap() as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (1800..2200).contains(&c)),
            "{counts:?}"
        );

        let stats = vec![backend(0, true, 3, 0), backend(1, true, 1, 0)];
        let mut counts = [0usize; 2];
        for k in keys(8000) {
            counts[m.pick(&stats, k).unwrap() as usize] += 1;
        }
        let share = counts[0] as f64 / 8000.0;
        assert!((share - 0.75).abs() < 0.03, "{counts:?}");
    }

    #[test]
    fn stable_when_nothing_changes_and_independent_of_order() {
        let keys = keys(2000);
        let stats = pool(5);
        let mut a = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        let before = map(&mut a, &stats, &keys);
        assert_eq!(before, map(&mut a, &stats, &keys));
        // Another instance, with the pool in another order: same answers.
        let mut reversed = stats.clone();
        reversed.reverse();
        for (i, b) in reversed.iter_mut().enumerate() {
            b.index = i as u32;
        }
        let mut b = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(before, map(&mut b, &reversed, &keys));
    }

    #[test]
    fn removing_one_of_four_moves_about_a_quarter() {
        let keys = keys(10_000);
        let all = pool(4);
        let mut m = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        let before = map(&mut m, &all, &keys);
        // Backend 2 removed from the config: the others are re-indexed.
        let mut fewer: Vec<_> = all.iter().filter(|b| b.index != 2).cloned().collect();
        for (i, b) in fewer.iter_mut().enumerate() {
            b.index = i as u32;
        }
        let after = map(&mut m, &fewer, &keys);
        let removed = all[2].stable_id;
        let kept = before.iter().zip(&after).filter(|(a, b)| a == b).count();
        let moved_needlessly = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| **a != removed && a != b)
            .count();
        assert!(kept >= 7_300, "kept {kept} of 10000");
        assert!(
            moved_needlessly < 300,
            "{moved_needlessly} keys left a surviving backend"
        );

        // Marking it unhealthy instead of removing it: the same.
        let mut down = all.clone();
        down[2].healthy = false;
        let after_down = map(&mut m, &down, &keys);
        assert_eq!(after, after_down);
        // And it comes back to exactly the old mapping.
        assert_eq!(before, map(&mut m, &all, &keys));
    }

    #[test]
    fn avoiding_tried_backends() {
        let stats = pool(4);
        let mut m = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        for k in keys(200) {
            let first = m.pick(&stats, k).unwrap();
            let second = m.pick_avoiding(&stats, k, &[first]).unwrap();
            assert_ne!(first, second);
            // Deterministic per key.
            assert_eq!(second, m.pick_avoiding(&stats, k, &[first]).unwrap());
            let third = m.pick_avoiding(&stats, k, &[first, second]).unwrap();
            assert!(third != first && third != second);
        }
        // Everything tried: back to the key's own backend.
        let k = keys(1)[0];
        let own = m.pick(&stats, k).unwrap();
        assert_eq!(m.pick_avoiding(&stats, k, &[0, 1, 2, 3]), Some(own));
    }

    /// The health of `stats` as candidate words.
    fn health_words(stats: &[BackendStats]) -> Vec<u64> {
        let mut words = vec![0u64; stats.len().div_ceil(64).max(1)];
        for b in stats.iter().filter(|b| b.healthy) {
            words[b.index as usize / 64] |= 1 << (b.index % 64);
        }
        words
    }

    /// Picks every key by mask (`m`, whose stats read bumps `reads`) and
    /// by stats (`by_stats`) over `current`, `all` with some backends down.
    fn same_by_mask(
        m: &mut Maglev,
        by_stats: &mut Maglev,
        (all, current): (&[BackendStats], &[BackendStats]),
        reads: &mut u32,
    ) {
        let words = health_words(current);
        for k in keys(500) {
            let mut healthy = Candidates::from_words(all.len() as u32, &words);
            let stats = || {
                *reads += 1;
                all.to_vec()
            };
            let expected = by_stats.pick(current, k);
            assert_eq!(m.pick_healthy(PoolId(0), &mut healthy, k, stats), expected);
        }
    }

    #[test]
    fn picks_by_health_mask_as_by_stats() {
        let mut all = pool(70);
        all[3].weight = 4;
        let mut down = all.clone();
        down[3].healthy = false;
        down[66].healthy = false;
        let mut m = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        let mut by_stats = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        let mut reads = 0;
        for current in [&all, &down, &all] {
            same_by_mask(&mut m, &mut by_stats, (&all, current), &mut reads);
        }
        assert_eq!(reads, 1, "the stats are read once");
        // The table used with other stats in between: rebuilt for the mask.
        assert_eq!(m.pick(&pool(2), 5), by_stats.pick(&pool(2), 5));
        same_by_mask(&mut m, &mut by_stats, (&all, &down), &mut reads);
        assert_eq!(reads, 1);
        let mut nobody = Candidates::from_words(70, &[0, 0]);
        assert_eq!(m.pick_healthy(PoolId(0), &mut nobody, 1, Vec::new), None);
    }

    #[test]
    fn none_when_nothing_healthy() {
        let mut m = Maglev::new(7).unwrap();
        assert_eq!(m.pick(&[], 1), None);
        let mut stats = pool(2);
        stats.iter_mut().for_each(|b| b.healthy = false);
        assert_eq!(m.pick(&stats, 1), None);
        stats[1].healthy = true;
        assert_eq!(m.pick(&stats, 1), Some(1));
    }
}
