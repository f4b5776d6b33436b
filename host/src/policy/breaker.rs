//! The circuit breaker of one bound policy.
//!
//! Worker threads are shared by every listener. A looping policy costs each
//! of its requests the whole decision timeout, a trapping one a fresh
//! instance per request (a trapped instance is dropped): one looping policy
//! on one listener slowed every other listener of the worker by 94-97%. The
//! breaker stops calling a policy that keeps failing:
//!
//! - **closed** (normal): every decision calls the guest. A failure that
//!   costs the worker counts: a trap, a timeout, an instance that could not
//!   be created. [`TRIP_AFTER`] of them in a row trip the breaker. A call
//!   that returned a decision resets the count, *also when the decision is
//!   invalid*: the guest returned in microseconds (that costs the worker
//!   nothing), the request goes to `on_error` anyway, and counting it would
//!   keep a policy off its listener for a back-off because, say, a backend
//!   went down while the policy was choosing it;
//! - **open** (tripped) for a back-off: [`super::decide`] returns
//!   [`super::DecisionError::Tripped`] at once, without touching any
//!   instance, and the listener's `on_error` serves the request. The
//!   back-off is [`FIRST_BACK_OFF`], doubled at each trip in a row, at most
//!   [`MAX_BACK_OFF`];
//! - **half-open**: the first request after the back-off (chosen with a
//!   compare-exchange; every other request stays tripped meanwhile) is the
//!   probe and calls the guest. A decision closes the breaker and forgets
//!   the back-off; a failure trips it again, for twice as long.
//!
//! The state lives in the [`super::BoundPolicy`], in atomics shared by all
//! worker threads (no lock). A new module version or `policy_config` binds
//! a new policy, so a fixed module starts closed. For a healthy policy the
//! breaker costs a load of a word nobody writes before the call and one
//! after it (the count is stored only when it is not 0 already).
//!
//! A probe that never reports back (a panic on the host side) must not
//! leave the policy tripped forever: claiming the probe sets the open state
//! to a lease ([`Breaker::new`]) longer than any call can take, after which
//! another request probes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Failures in a row (traps, timeouts, failed instantiations) that trip a
/// policy.
pub const TRIP_AFTER: u32 = 5;
/// How long the first trip keeps a policy off.
pub const FIRST_BACK_OFF: Duration = Duration::from_secs(1);
/// The longest back-off, reached after trips in a row.
pub const MAX_BACK_OFF: Duration = Duration::from_secs(30);

/// `open_until` of a closed breaker.
const CLOSED: u64 = 0;

/// What a request may do, from [`Breaker::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call the guest.
    Closed,
    /// Call the guest: the back-off is over and this request is the one
    /// probe.
    Probe,
    /// Do not call the guest.
    Open,
}

/// A trip, reported once by the call that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trip {
    /// How long the policy is off.
    pub back_off: Duration,
    /// Trips in a row, this one included (1: the first; more: failed
    /// probes).
    pub in_a_row: u32,
}

/// The breaker state of one bound policy.
#[derive(Debug)]
pub struct Breaker {
    born: Instant,
    /// [`CLOSED`], or nanoseconds since `born` until which the policy is
    /// off (the back-off's end, or while a probe runs, its lease's end).
    open_until: AtomicU64,
    /// Failures in a row while closed.
    failures: AtomicU32,
    /// Trips in a row (0 while closed).
    trips: AtomicU32,
    probe_lease: u64,
}

impl Breaker {
    /// A closed breaker whose probe, once claimed, keeps the others off for
    /// `probe_lease`: longer than a call can take.
    pub fn new(probe_lease: Duration) -> Breaker {
        Breaker {
            born: Instant::now(),
            open_until: AtomicU64::new(CLOSED),
            failures: AtomicU32::new(0),
            trips: AtomicU32::new(0),
            probe_lease: nanos(probe_lease),
        }
    }

    /// Whether this request may call the guest. Reads the clock only when
    /// the breaker is not closed.
    pub fn admit(&self) -> Admission {
        self.admit_with(|| self.now())
    }

    /// Reports a call that returned a decision (valid or not). True when it
    /// was the probe and closed the breaker.
    pub fn succeeded(&self, admission: Admission) -> bool {
        if admission == Admission::Probe {
            self.failures.store(0, Relaxed);
            self.trips.store(0, Relaxed);
            self.open_until.store(CLOSED, Relaxed);
            return true;
        }
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        false
    }

    /// Reports a failed call (trap, timeout, no instance). `Some` when this
    /// failure tripped the breaker: the caller reports the trip.
    pub fn failed(&self, admission: Admission) -> Option<Trip> {
        self.failed_at(admission, self.now())
    }

    fn admit_with(&self, now: impl FnOnce() -> u64) -> Admission {
        let until = self.open_until.load(Relaxed);
        if until == CLOSED {
            return Admission::Closed;
        }
        let now = now();
        if now < until {
            return Admission::Open;
        }
        let lease_end = now.saturating_add(self.probe_lease);
        match self
            .open_until
            .compare_exchange(until, lease_end, Relaxed, Relaxed)
        {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Open,
        }
    }

    fn failed_at(&self, admission: Admission, now: u64) -> Option<Trip> {
        if admission == Admission::Probe {
            let in_a_row = self.trips.fetch_add(1, Relaxed).saturating_add(1);
            return Some(self.open_for(now, in_a_row));
        }
        let failures = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        if failures < TRIP_AFTER {
            return None;
        }
        // From closed, and only once: concurrent failures (and calls that
        // started before a trip) see the breaker open and only count.
        let until = now.saturating_add(nanos(FIRST_BACK_OFF));
        self.open_until
            .compare_exchange(CLOSED, until, Relaxed, Relaxed)
            .ok()?;
        self.failures.store(0, Relaxed);
        self.trips.store(1, Relaxed);
        Some(Trip {
            back_off: FIRST_BACK_OFF,
            in_a_row: 1,
        })
    }

    fn open_for(&self, now: u64, in_a_row: u32) -> Trip {
        let back_off = back_off(in_a_row);
        self.open_until
            .store(now.saturating_add(nanos(back_off)), Relaxed);
        Trip { back_off, in_a_row }
    }

    /// Nanoseconds since the breaker was made (never [`CLOSED`] once a
    /// back-off or lease is added).
    fn now(&self) -> u64 {
        nanos(self.born.elapsed())
    }
}

/// The back-off of the `in_a_row`-th trip in a row: 1 s, 2 s, 4 s... 30 s.
fn back_off(in_a_row: u32) -> Duration {
    let doublings = in_a_row.saturating_sub(1).min(16);
    FIRST_BACK_OFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACK_OFF)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(5);
    const MS: u64 = 1_000_000;
    const SECOND: u64 = 1_000 * MS;

    /// A breaker tripped (first trip) at `at`.
    fn tripped_at(at: u64) -> Breaker {
        let breaker = Breaker::new(LEASE);
        for _ in 1..TRIP_AFTER {
            assert_eq!(breaker.failed_at(Admission::Closed, at), None);
        }
        let trip = breaker.failed_at(Admission::Closed, at);
        assert_eq!(
            trip,
            Some(Trip {
                back_off: FIRST_BACK_OFF,
                in_a_row: 1
            })
        );
        breaker
    }

    fn admit_at(breaker: &Breaker, now: u64) -> Admission {
        breaker.admit_with(|| now)
    }

    #[test]
    fn trips_after_failures_in_a_row_and_not_before() {
        let breaker = Breaker::new(LEASE);
        for _ in 1..TRIP_AFTER {
            assert_eq!(breaker.failed_at(Admission::Closed, SECOND), None);
            assert_eq!(admit_at(&breaker, SECOND), Admission::Closed);
        }
        assert!(breaker.failed_at(Admission::Closed, SECOND).is_some());
        assert_eq!(admit_at(&breaker, SECOND), Admission::Open);
    }

    #[test]
    fn a_decision_resets_the_count() {
        let breaker = Breaker::new(LEASE);
        for _ in 0..3 {
            for _ in 1..TRIP_AFTER {
                assert_eq!(breaker.failed_at(Admission::Closed, SECOND), None);
            }
            assert!(!breaker.succeeded(Admission::Closed));
        }
        assert_eq!(admit_at(&breaker, SECOND), Admission::Closed);
    }

    #[test]
    fn open_for_the_back_off_then_exactly_one_probe() {
        let breaker = tripped_at(10 * SECOND);
        let end = 10 * SECOND + nanos(FIRST_BACK_OFF);
        assert_eq!(admit_at(&breaker, end - 1), Admission::Open);
        assert_eq!(admit_at(&breaker, end), Admission::Probe);
        assert_eq!(admit_at(&breaker, end), Admission::Open);
        assert_eq!(admit_at(&breaker, end + SECOND), Admission::Open);
    }

    #[test]
    fn a_successful_probe_closes_and_forgets_the_back_off() {
        let breaker = tripped_at(SECOND);
        let probe_time = 2 * SECOND;
        assert_eq!(admit_at(&breaker, probe_time), Admission::Probe);
        assert!(breaker.succeeded(Admission::Probe));
        assert_eq!(admit_at(&breaker, probe_time), Admission::Closed);
        // A new run of failures trips again after the full count, with the
        // first back-off.
        for _ in 1..TRIP_AFTER {
            assert_eq!(breaker.failed_at(Admission::Closed, probe_time), None);
        }
        let trip = breaker.failed_at(Admission::Closed, probe_time).unwrap();
        assert_eq!(trip.back_off, FIRST_BACK_OFF);
    }

    #[test]
    fn each_failed_probe_doubles_the_back_off_up_to_the_cap() {
        let mut now = SECOND;
        let breaker = tripped_at(now);
        let mut back_off = FIRST_BACK_OFF;
        for in_a_row in 2..12 {
            now += nanos(back_off);
            assert_eq!(admit_at(&breaker, now), Admission::Probe);
            let trip = breaker.failed_at(Admission::Probe, now).unwrap();
            let expected = (back_off * 2).min(MAX_BACK_OFF);
            assert_eq!(
                trip,
                Trip {
                    back_off: expected,
                    in_a_row
                }
            );
            assert_eq!(
                admit_at(&breaker, now + nanos(expected) - 1),
                Admission::Open
            );
            back_off = expected;
        }
        assert_eq!(back_off, MAX_BACK_OFF);
    }

    #[test]
    fn failures_of_calls_admitted_before_the_trip_only_count() {
        let breaker = tripped_at(SECOND);
        for _ in 0..3 * TRIP_AFTER {
            assert_eq!(breaker.failed_at(Admission::Closed, SECOND), None);
        }
        // The back-off did not move: the probe comes after the first one.
        let end = SECOND + nanos(FIRST_BACK_OFF);
        assert_eq!(admit_at(&breaker, end), Admission::Probe);
    }

    #[test]
    fn a_lost_probe_lets_another_request_probe_after_its_lease() {
        let breaker = tripped_at(SECOND);
        let end = SECOND + nanos(FIRST_BACK_OFF);
        assert_eq!(admit_at(&breaker, end), Admission::Probe);
        assert_eq!(admit_at(&breaker, end + nanos(LEASE) - 1), Admission::Open);
        assert_eq!(admit_at(&breaker, end + nanos(LEASE)), Admission::Probe);
    }

    #[test]
    fn concurrent_failures_trip_once_and_admit_one_probe() {
        let breaker = Breaker::new(LEASE);
        let trips: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..200)
                            .filter(|_| breaker.failed_at(Admission::Closed, SECOND).is_some())
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(trips, 1);
        let end = SECOND + nanos(FIRST_BACK_OFF);
        let probes: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..200)
                            .filter(|_| admit_at(&breaker, end) == Admission::Probe)
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(probes, 1);
    }

    #[test]
    fn the_real_clock_starts_closed_and_trips() {
        let breaker = Breaker::new(LEASE);
        assert_eq!(breaker.admit(), Admission::Closed);
        let trips = (0..TRIP_AFTER)
            .filter_map(|_| breaker.failed(Admission::Closed))
            .count();
        assert_eq!(trips, 1);
        // Open, or a probe if this thread was off the CPU for the back-off.
        assert_ne!(breaker.admit(), Admission::Closed);
    }
}
