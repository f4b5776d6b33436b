//! The backends of a pool a request (or connection) may go to, as the
//! host's bitmask.

use crate::balance::mask;
use crate::{PoolId, Subject};

/// The backends of a pool that a request may go to: the healthy ones it has
/// not tried yet, or, when it has tried every healthy backend, all healthy
/// ones (the rule of [`PoolId::stats`]). Returned by
/// [`PoolId::candidates`].
///
/// The host answers with 64 backends per call as a bitmask, so nothing but
/// numbers crosses into the guest: for a pool of up to 64 backends building
/// the set costs one host call and no allocation (the pool's size is asked
/// once per instance, see [`PoolId::size`]).
/// Larger pools fetch each further group of 64 only when a method needs it.
/// The set is a snapshot: build it once per decision.
///
/// Use it with [`Rotation`](crate::balance::Rotation) and
/// [`random_candidate`](crate::balance::random_candidate) when a policy
/// needs nothing but health (no weights, loads or stable ids); the other
/// helpers take [`PoolId::stats`] instead.
#[derive(Debug, Clone)]
pub struct Candidates<'a> {
    size: u32,
    /// Backends 0..64.
    head: u64,
    /// Backends 64.., by group of 64; `None` until fetched.
    tail: Vec<Option<u64>>,
    /// Where to fetch the tail from; `None` when every word is known.
    source: Option<(Subject<'a>, PoolId)>,
}

impl<'a> Candidates<'a> {
    /// The candidates of `pool` for `req`, from the host.
    pub(crate) fn fetch(pool: PoolId, req: Subject<'a>) -> Self {
        let size = pool.size();
        let head = if size == 0 {
            0
        } else {
            req.candidate_mask(pool, 0)
        };
        Candidates {
            size,
            head,
            tail: Vec::new(),
            source: Some((req, pool)),
        }
    }
}

impl Candidates<'static> {
    /// A fixed set, for native unit tests of policy logic: a pool of `size`
    /// backends where bit `i` of `words[k]` says backend `64k + i` is a
    /// candidate (missing words are 0).
    pub fn from_words(size: u32, words: &[u64]) -> Candidates<'static> {
        let word = |k: usize| words.get(k).copied().unwrap_or(0);
        let count = mask::word_count(size) as usize;
        Candidates {
            size,
            head: word(0),
            tail: (1..count.max(1)).map(|k| Some(word(k))).collect(),
            source: None,
        }
    }
}

impl Candidates<'_> {
    /// Number of backends in the pool (candidates or not).
    pub fn pool_size(&self) -> u32 {
        self.size
    }

    /// The mask of backends `64k .. 64k + 64` (bit `i` = backend
    /// `64k + i`); 0 past the pool's end. Fetched from the host on first
    /// use for `k > 0`.
    pub(crate) fn word(&mut self, k: u32) -> u64 {
        if k == 0 {
            return self.head;
        }
        if k >= mask::word_count(self.size) {
            return 0;
        }
        let slot = (k - 1) as usize;
        if self.tail.len() <= slot {
            self.tail
                .resize(mask::word_count(self.size) as usize - 1, None);
        }
        let source = self.source;
        *self.tail[slot].get_or_insert_with(|| match source {
            Some((req, pool)) => req.candidate_mask(pool, k * 64),
            None => 0,
        })
    }

    /// Whether `backend` is a candidate.
    pub fn contains(&mut self, backend: u32) -> bool {
        backend < self.size && self.word(backend / 64) & 1 << (backend % 64) != 0
    }

    /// Number of candidates.
    pub fn count(&mut self) -> u32 {
        mask::count(self.size, |k| self.word(k))
    }

    /// The `n`-th candidate (from 0) in pool order, if there are more than
    /// `n`.
    pub fn nth(&mut self, n: u32) -> Option<u32> {
        mask::nth(self.size, n, |k| self.word(k))
    }

    /// The first candidate after backend `last` in pool order, wrapping
    /// around; the first candidate when `last` is `None`. `None` when there
    /// is no candidate.
    pub fn next_after(&mut self, last: Option<u32>) -> Option<u32> {
        mask::next_after(self.size, last, |k| self.word(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_pool() {
        let mut c = Candidates::from_words(5, &[0b10110]);
        assert_eq!(c.pool_size(), 5);
        assert_eq!(c.count(), 3);
        assert!(c.contains(1) && !c.contains(0) && !c.contains(5));
        assert_eq!(c.next_after(Some(2)), Some(4));
        assert_eq!(c.next_after(Some(4)), Some(1));
        assert_eq!(c.nth(2), Some(4));
        assert_eq!(c.word(1), 0);
    }

    #[test]
    fn large_pool() {
        let mut c = Candidates::from_words(130, &[0, 1 << 5, 0b10]);
        assert_eq!(c.count(), 2);
        assert!(c.contains(69) && c.contains(129) && !c.contains(130));
        assert_eq!(c.next_after(None), Some(69));
        assert_eq!(c.next_after(Some(69)), Some(129));
        assert_eq!(c.next_after(Some(129)), Some(69));
        assert_eq!(c.nth(1), Some(129));
    }

    #[test]
    fn empty() {
        let mut c = Candidates::from_words(0, &[]);
        assert_eq!((c.count(), c.next_after(None), c.nth(0)), (0, None, None));
        let mut c = Candidates::from_words(3, &[0]);
        assert_eq!((c.count(), c.next_after(Some(1))), (0, None));
    }
}
