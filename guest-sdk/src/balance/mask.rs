//! Pure functions over a set of backends given as 64-bit masks, the form of
//! [`Candidates`](crate::Candidates): `word(k)` holds backends `64k ..
//! 64k + 64` (bit `i` = backend `64k + i`), of a pool of `size` backends.
//! Words are asked for in increasing order and only as far as needed, so a
//! caller can fetch them lazily.

/// Number of 64-bit words that cover `size` backends.
pub(crate) fn word_count(size: u32) -> u32 {
    size.div_ceil(64)
}

/// The lowest member at or after `from`, if any.
pub(crate) fn first_from(size: u32, from: u32, mut word: impl FnMut(u32) -> u64) -> Option<u32> {
    if from >= size {
        return None;
    }
    let mut k = from / 64;
    let mut bits = word(k) & (u64::MAX << (from % 64));
    loop {
        if bits != 0 {
            let index = k * 64 + bits.trailing_zeros();
            return (index < size).then_some(index);
        }
        k += 1;
        if k >= word_count(size) {
            return None;
        }
        bits = word(k);
    }
}

/// The member after `last` in pool order, wrapping around to the lowest
/// one; the lowest member when `last` is `None` (or past the pool's end).
/// `None` only when the set is empty. This is a round-robin step.
pub(crate) fn next_after(
    size: u32,
    last: Option<u32>,
    mut word: impl FnMut(u32) -> u64,
) -> Option<u32> {
    let from = last.map_or(0, |l| l.saturating_add(1));
    first_from(size, from, &mut word).or_else(|| first_from(size, 0, word))
}

/// Number of members.
pub(crate) fn count(size: u32, mut word: impl FnMut(u32) -> u64) -> u32 {
    (0..word_count(size))
        .map(|k| (word(k) & valid_bits(size, k)).count_ones())
        .sum()
}

/// The `n`-th member (from 0) in pool order, if there are more than `n`.
pub(crate) fn nth(size: u32, mut n: u32, mut word: impl FnMut(u32) -> u64) -> Option<u32> {
    for k in 0..word_count(size) {
        let mut bits = word(k) & valid_bits(size, k);
        let ones = bits.count_ones();
        if n >= ones {
            n -= ones;
            continue;
        }
        for _ in 0..n {
            bits &= bits - 1; // clears the lowest member
        }
        return Some(k * 64 + bits.trailing_zeros());
    }
    None
}

/// The bits of word `k` that name backends below `size`.
fn valid_bits(size: u32, k: u32) -> u64 {
    match size.saturating_sub(k * 64) {
        n if n >= 64 => u64::MAX,
        n => (1 << n) - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set given as words, for the tests.
    fn set(words: &[u64]) -> impl FnMut(u32) -> u64 + '_ {
        |k| words.get(k as usize).copied().unwrap_or(0)
    }

    #[test]
    fn next_after_rotates_over_members() {
        let words = [0b1011_0100];
        let mut last = None;
        let seq: Vec<u32> = (0..6)
            .map(|_| {
                last = next_after(8, last, set(&words));
                last.unwrap()
            })
            .collect();
        assert_eq!(seq, [2, 4, 5, 7, 2, 4]);
        assert_eq!(next_after(8, Some(100), set(&words)), Some(2));
        assert_eq!(next_after(8, Some(u32::MAX), set(&words)), Some(2));
        assert_eq!(next_after(8, None, set(&[0])), None);
        assert_eq!(next_after(0, None, set(&[1])), None);
    }

    #[test]
    fn bits_past_the_size_are_ignored() {
        let words = [0b1_0000_0001];
        assert_eq!(next_after(5, Some(0), set(&words)), Some(0));
        assert_eq!(count(5, set(&words)), 1);
        assert_eq!(nth(5, 1, set(&words)), None);
        assert_eq!(first_from(5, 1, set(&words)), None);
    }

    #[test]
    fn large_pools_span_words_and_fetch_only_what_is_needed() {
        // 150 backends: members 3, 64, 149.
        let words = [1 << 3, 1, 1 << (149 - 128)];
        assert_eq!(next_after(150, Some(3), set(&words)), Some(64));
        assert_eq!(next_after(150, Some(64), set(&words)), Some(149));
        assert_eq!(next_after(150, Some(149), set(&words)), Some(3));
        assert_eq!(count(150, set(&words)), 3);
        assert_eq!(nth(150, 2, set(&words)), Some(149));
        assert_eq!(nth(150, 3, set(&words)), None);
        let mut asked = Vec::new();
        let first = first_from(150, 0, |k| {
            asked.push(k);
            words[k as usize]
        });
        assert_eq!((first, asked), (Some(3), vec![0]));
        let mut asked = Vec::new();
        next_after(150, Some(10), |k| {
            asked.push(k);
            words[k as usize]
        });
        assert_eq!(asked, [0, 1]);
    }

    #[test]
    fn nth_counts_in_pool_order() {
        let words = [0b1011_0100];
        let members: Vec<_> = (0..5).map(|n| nth(8, n, set(&words))).collect();
        assert_eq!(members, [Some(2), Some(4), Some(5), Some(7), None]);
        assert_eq!(count(8, set(&words)), 4);
        assert_eq!(count(64, set(&[u64::MAX])), 64);
        assert_eq!(nth(64, 63, set(&[u64::MAX])), Some(63));
    }
}
