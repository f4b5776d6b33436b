//! The answers the host computes for a policy, by the host's rules
//! (`host/src/policy/derived.rs` and `host.rs`): the `candidates` mask,
//! `least-active`, and the `pool-stats-packed` words.

use crate::testing::TestBackend;

/// Bit `i` set when backend `first + i` of `backends` (pool `pool`) is
/// healthy and not in `tried`, or healthy when every healthy backend of
/// the pool was tried already. 0 at or past the pool's end.
pub(crate) fn candidates(
    backends: &[TestBackend],
    pool: u32,
    tried: &[(u32, u32)],
    first: u32,
) -> u64 {
    let start = first as usize;
    if start >= backends.len() {
        return 0;
    }
    let candidate = is_candidate(backends, pool, tried);
    let end = backends.len().min(start + 64);
    (start..end)
        .filter(|&i| candidate(i))
        .fold(0, |mask, i| mask | 1 << (i - start))
}

/// The candidate with the fewest requests in flight; ties taken in pool
/// order, `tie_breaker % ties` choosing one. `None` without a candidate.
pub(crate) fn least_active(
    backends: &[TestBackend],
    pool: u32,
    tried: &[(u32, u32)],
    tie_breaker: u64,
) -> Option<u32> {
    let candidate = is_candidate(backends, pool, tried);
    let fewest = (0..backends.len())
        .filter(|&i| candidate(i))
        .map(|i| backends[i].active)
        .min()?;
    let tied: Vec<usize> = (0..backends.len())
        .filter(|&i| candidate(i) && backends[i].active == fewest)
        .collect();
    let nth = (tie_breaker % tied.len() as u64) as usize;
    Some(tied[nth] as u32)
}

/// Whether backend `i` is a candidate for a subject that tried `tried`.
fn is_candidate<'a>(
    backends: &'a [TestBackend],
    pool: u32,
    tried: &'a [(u32, u32)],
) -> impl Fn(usize) -> bool + 'a {
    let tried_here = move |i: usize| tried.contains(&(pool, i as u32));
    let fresh_remains = (0..backends.len()).any(|i| backends[i].is_healthy() && !tried_here(i));
    let skip_tried = fresh_remains && tried.iter().any(|&(p, _)| p == pool);
    move |i| backends[i].is_healthy() && !(skip_tried && tried_here(i))
}

/// One backend in the `pool-stats-packed` layout (`wit/policy.wit`); a
/// backend without a latency sample reports the mean of those of `pool`
/// that have one, as the host does.
pub(crate) fn pack(backend: &TestBackend, pool: &[TestBackend]) -> [u64; 5] {
    let ewma = match backend.ewma_us {
        0 => seed_latency_us(pool),
        ewma => ewma,
    };
    let mut flags = u64::from(backend.is_healthy()) | u64::from(backend.ejected) << 1;
    if let Some(load) = &backend.load {
        let scale = |v: f32| (v.clamp(0.0, 1.0) * 10_000.0).round() as u64;
        let age = u64::from(load.age_ms).min((1 << 24) - 1);
        flags |= 1 << 2 | scale(load.cpu) << 8 | scale(load.memory) << 24 | age << 40;
    }
    [
        backend.id(),
        u64::from(backend.weight) | u64::from(backend.active) << 32,
        u64::from(ewma) | u64::from(backend.error_permille) << 32,
        backend.total,
        flags,
    ]
}

/// The mean latency EWMA of the backends that have one; 0 when none has.
fn seed_latency_us(pool: &[TestBackend]) -> u32 {
    let sampled = pool
        .iter()
        .map(|b| u64::from(b.ewma_us))
        .filter(|&l| l != 0);
    let (sum, count) = sampled.fold((0, 0), |(s, c), l| (s + l, c + 1));
    u32::try_from(sum.checked_div(count).unwrap_or(0)).unwrap_or(u32::MAX)
}
