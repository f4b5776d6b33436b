//! A fast, non-cryptographic random generator (xorshift64*) for the
//! host's own draws: a policy instance's `random` host function, the
//! shadow sample, health-check jitter. Never for secrets.

/// An xorshift64* generator: a `u64` of state, one multiply per draw.
#[derive(Debug, Clone, Copy)]
pub struct Xorshift64Star(u64);

impl Xorshift64Star {
    /// A generator started from `seed` (any value: a zero seed, which
    /// xorshift cannot leave, is made odd).
    pub const fn new(seed: u64) -> Xorshift64Star {
        Xorshift64Star(seed | 1)
    }

    /// A generator seeded from std's per-process random keys, hashing
    /// `salt` (a thread id, a backend address) so two generators differ.
    pub fn from_entropy(salt: impl std::hash::Hash) -> Xorshift64Star {
        use std::hash::{BuildHasher, RandomState};
        Xorshift64Star::new(RandomState::new().hash_one(salt))
    }

    /// The next uniform `u64`.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_seed_still_draws_and_equal_seeds_draw_alike() {
        let mut zero = Xorshift64Star::new(0);
        let draws: Vec<u64> = (0..4).map(|_| zero.next_u64()).collect();
        assert!(draws.iter().all(|&d| d != 0), "{draws:?}");
        let (mut a, mut b) = (Xorshift64Star::new(42), Xorshift64Star::new(42));
        assert_eq!(
            (0..8).map(|_| a.next_u64()).collect::<Vec<_>>(),
            (0..8).map(|_| b.next_u64()).collect::<Vec<_>>()
        );
    }
}
