//! Shadow decisions: a listener's candidate policy (`[listeners.shadow]`)
//! decides a sample of its requests on the same [`RequestView`], after the
//! live decision and before the attempt, and its answer is compared with
//! where the request goes; it never changes the route, the response or
//! the live decision's deadline (the candidate has its own).
//!
//! Each compared request counts once in [`ShadowRecord`]: `same` (the
//! same pool and backend, or the same status of a local answer),
//! `different`, or `error` (the candidate trapped, timed out, answered
//! something invalid, is tripped, or could not be bound). A `different`
//! or `error` request is also kept in the record's ring of the latest
//! [`DIVERGENCES_KEPT`] divergences, the only place that allocates.
//!
//! Cost: a listener without a shadow pays one branch on an `Option`; a
//! request left out of the sample one step of a per-thread xorshift.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use crate::metrics::Counter;
use crate::policy::{self, BoundPolicy, Decision, DecisionError, RequestView};
use crate::pool::BackendPool;
use crate::random::Xorshift64Star;

/// How many divergences a listener keeps for `GET /shadow/{listener}`.
pub const DIVERGENCES_KEPT: usize = 100;

/// A listener's shadow, as its requests read it.
#[derive(Debug)]
pub struct Shadow {
    /// The candidate bound to the listener's pools, or why it could not be
    /// (every sampled request then counts as `error`).
    pub candidate: Result<Arc<BoundPolicy>, Arc<str>>,
    /// The share of requests compared, `0.0..=1.0`.
    pub sample: f64,
    /// `sample` as a threshold of [`next_random`]: `None` = every request.
    threshold: Option<u64>,
    /// What the comparisons counted (kept across reloads of the listener
    /// while its candidate's name stays).
    pub record: Arc<ShadowRecord>,
}

impl Shadow {
    /// The shadow of a listener: `candidate` (or why it failed), deciding
    /// `sample` of the requests, counting into `record`.
    pub fn new(
        candidate: Result<Arc<BoundPolicy>, Arc<str>>,
        sample: f64,
        record: Arc<ShadowRecord>,
    ) -> Shadow {
        // `sample * 2^64` as the bound of a uniform u64; 1.0 needs no draw.
        let threshold =
            (sample < 1.0).then(|| (sample.max(0.0) * 18_446_744_073_709_551_616.0) as u64);
        Shadow {
            candidate,
            sample,
            threshold,
            record,
        }
    }

    /// Why the candidate could not be bound, when it could not.
    pub fn failure(&self) -> Option<&str> {
        self.candidate.as_ref().err().map(|reason| &reason[..])
    }

    /// The candidate's name.
    pub fn policy(&self) -> &str {
        &self.record.policy
    }

    /// Whether this request is in the sample.
    #[inline]
    fn sampled(&self) -> bool {
        self.threshold
            .is_none_or(|threshold| next_random() < threshold)
    }
}

/// Where the live path sends the request, as the comparison sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveRoute {
    /// To backend `.1` of pool `.0`.
    Forward(u32, u32),
    /// A local answer with this status (the policy's, or the proxy's
    /// refusal).
    Status(u16),
}

/// Lets the candidate decide the request in `view` (when it is sampled)
/// and counts how its answer compares with `live`; `pools` are the
/// listener's (the candidate's too). The view comes back with its timing
/// untouched.
pub fn compare(
    shadow: &Shadow,
    pools: &[Arc<BackendPool>],
    view: RequestView,
    live: LiveRoute,
) -> RequestView {
    if !shadow.sampled() {
        return view;
    }
    let record = &shadow.record;
    let (view, answer) = match &shadow.candidate {
        Ok(candidate) => {
            let (view, result) = policy::decide_aside(candidate, view);
            (view, answer_of(result))
        }
        Err(reason) => (view, Answer::Error(Arc::clone(reason))),
    };
    match (&answer, live) {
        (Answer::Forward(pool, backend), LiveRoute::Forward(p, b))
            if (*pool, *backend) == (p, b) =>
        {
            record.same.inc();
        }
        (Answer::Status(status), LiveRoute::Status(s)) if *status == s => record.same.inc(),
        _ => {
            match answer {
                Answer::Error(_) => record.error.inc(),
                _ => record.different.inc(),
            }
            record.keep(Divergence::of(&view, live, answer, pools));
        }
    }
    view
}

/// What the candidate answered, reduced to what is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Forward(u32, u32),
    Status(u16),
    Error(Arc<str>),
}

fn answer_of(result: Result<Decision, DecisionError>) -> Answer {
    match result {
        Ok(Decision::Forward(forward)) => Answer::Forward(forward.pool, forward.backend),
        Ok(Decision::Respond(respond)) => Answer::Status(respond.status),
        Err(error) => Answer::Error(error.to_string().into()),
    }
}

/// One side of a divergence, as `GET /shadow/{listener}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// To this backend of this pool.
    Forward {
        /// The pool's name.
        pool: String,
        /// The backend's address.
        backend: SocketAddr,
    },
    /// A local answer.
    Status(u16),
    /// The candidate failed.
    Error(Arc<str>),
}

/// A request on which the candidate did not answer what the live path did.
#[derive(Debug, Clone)]
pub struct Divergence {
    /// When it was compared.
    pub time: SystemTime,
    /// The request's method, `Host` (or URI authority) and path.
    pub method: http::Method,
    /// See `method`.
    pub host: String,
    /// See `method`.
    pub path: String,
    /// Where the request went.
    pub live: Side,
    /// What the candidate said.
    pub candidate: Side,
}

impl Divergence {
    fn of(
        view: &RequestView,
        live: LiveRoute,
        answer: Answer,
        pools: &[Arc<BackendPool>],
    ) -> Divergence {
        let head = &view.head;
        let host = (head.headers.get(http::header::HOST))
            .and_then(|value| value.to_str().ok())
            .or_else(|| head.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let forward = |pool: u32, backend: u32| {
            let pool = pools.get(pool as usize);
            let backend = pool.and_then(|p| p.backends.get(backend as usize));
            match (pool, backend) {
                (Some(pool), Some(backend)) => Side::Forward {
                    pool: pool.name.clone(),
                    backend: backend.address,
                },
                _ => Side::Error("names a backend the listener does not have".into()),
            }
        };
        Divergence {
            time: SystemTime::now(),
            method: head.method.clone(),
            host: host.to_owned(),
            path: head.uri.path().to_owned(),
            live: match live {
                LiveRoute::Forward(pool, backend) => forward(pool, backend),
                LiveRoute::Status(status) => Side::Status(status),
            },
            candidate: match answer {
                Answer::Forward(pool, backend) => forward(pool, backend),
                Answer::Status(status) => Side::Status(status),
                Answer::Error(reason) => Side::Error(reason),
            },
        }
    }
}

/// A listener's shadow counts and its latest divergences; lock-free: the
/// ring is slots of [`ArcSwapOption`] written round-robin.
#[derive(Debug)]
pub struct ShadowRecord {
    /// The candidate's name (`policy` label).
    pub policy: String,
    /// The candidate answered what the live path did.
    pub same: Counter,
    /// It answered something else.
    pub different: Counter,
    /// It failed (trap, timeout, invalid decision, tripped, not bound).
    pub error: Counter,
    next: AtomicU64,
    ring: Box<[ArcSwapOption<(u64, Divergence)>]>,
}

impl ShadowRecord {
    /// An empty record for candidate `policy`.
    pub fn new(policy: &str) -> ShadowRecord {
        ShadowRecord {
            policy: policy.to_owned(),
            same: Counter::default(),
            different: Counter::default(),
            error: Counter::default(),
            next: AtomicU64::new(0),
            ring: (0..DIVERGENCES_KEPT)
                .map(|_| ArcSwapOption::empty())
                .collect(),
        }
    }

    /// The record of candidate `policy`: `previous` when it counted the
    /// same candidate, else a new one.
    pub fn reuse(policy: &str, previous: Option<&Arc<ShadowRecord>>) -> Arc<ShadowRecord> {
        match previous.filter(|p| p.policy == policy) {
            Some(previous) => Arc::clone(previous),
            None => Arc::new(ShadowRecord::new(policy)),
        }
    }

    fn keep(&self, divergence: Divergence) {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = &self.ring[(sequence % DIVERGENCES_KEPT as u64) as usize];
        slot.store(Some(Arc::new((sequence, divergence))));
    }

    /// The latest divergences, newest first, at most [`DIVERGENCES_KEPT`].
    pub fn divergences(&self) -> Vec<Divergence> {
        let mut kept: Vec<Arc<(u64, Divergence)>> = self
            .ring
            .iter()
            .filter_map(ArcSwapOption::load_full)
            .collect();
        kept.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.0));
        kept.iter().map(|entry| entry.1.clone()).collect()
    }
}

thread_local! {
    /// This worker's generator.
    static RANDOM: Cell<Xorshift64Star> =
        Cell::new(Xorshift64Star::from_entropy(std::thread::current().id()));
}

/// A uniform u64 from this thread's generator: no lock.
#[inline]
fn next_random() -> u64 {
    RANDOM.with(|state| {
        let mut generator = state.get();
        let draw = generator.next_u64();
        state.set(generator);
        draw
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_share_is_kept() {
        let record = Arc::new(ShadowRecord::new("c"));
        let half = Shadow::new(Err("unbound".into()), 0.25, Arc::clone(&record));
        let hits = (0..40_000).filter(|_| half.sampled()).count();
        assert!((9_000..11_000).contains(&hits), "{hits} of 40000 at 0.25");
        let none = Shadow::new(Err("unbound".into()), 0.0, Arc::clone(&record));
        assert!(!(0..10_000).any(|_| none.sampled()));
        let all = Shadow::new(Err("unbound".into()), 1.0, record);
        assert!((0..10_000).all(|_| all.sampled()));
    }

    #[test]
    fn the_ring_keeps_the_latest_newest_first() {
        let record = ShadowRecord::new("c");
        for status in 0..(DIVERGENCES_KEPT as u16 + 20) {
            record.keep(Divergence {
                time: SystemTime::now(),
                method: http::Method::GET,
                host: String::new(),
                path: String::new(),
                live: Side::Status(status),
                candidate: Side::Status(0),
            });
        }
        let kept = record.divergences();
        assert_eq!(kept.len(), DIVERGENCES_KEPT);
        let first = DIVERGENCES_KEPT as u16 + 19;
        let expected: Vec<Side> = (20..=first).rev().map(Side::Status).collect();
        let seen: Vec<Side> = kept.into_iter().map(|d| d.live).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_record_is_kept_for_the_same_candidate_only() {
        let first = Arc::new(ShadowRecord::new("a"));
        first.same.inc();
        assert!(Arc::ptr_eq(&ShadowRecord::reuse("a", Some(&first)), &first));
        assert_eq!(ShadowRecord::reuse("b", Some(&first)).same.get(), 0);
    }
}
