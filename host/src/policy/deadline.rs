//! The decision deadline, counted in the time the guest really ran.
//!
//! Epoch interruption measures wall time: a ticker thread
//! ([`super::ticker`]) moves the engine's epoch by one per 1 ms
//! ([`EPOCH_TICK`]) of wall time, and a store whose deadline epoch has
//! passed stops at the guest's next loop back-edge or call. A
//! worker thread that the OS takes off the CPU for a few ms in the middle
//! of a 1 us decision (a busy 2-core machine) came back to a passed
//! deadline, so the decision failed although the guest had run for
//! microseconds: about once per million decisions. Reading the thread's CPU
//! clock around every decision would tell, but `CLOCK_THREAD_CPUTIME_ID` is
//! a system call (it has no vDSO fast path) and a decision is ~1 us. So the
//! clock is read only when a tick passes during a call:
//!
//! - each decision starts with a deadline of one tick (the next epoch
//!   increment; [`DecisionClock::restart`]). A decision that no tick
//!   boundary crosses, which is all but about one in ten thousand 1 us
//!   decisions, never reaches the store's epoch callback and costs what it
//!   did before;
//! - the first time the deadline passes, the callback
//!   ([`DecisionClock::on_deadline`]) takes the thread's CPU time and the
//!   wall time as the decision's start and gives it `decision_timeout`;
//! - each later time, the guest is stopped (a timeout) once it has used
//!   `decision_timeout` of CPU time since that start, or once
//!   [`WALL_CAP`] × `decision_timeout` of wall time have passed since it (a
//!   hard cap: a looping guest on a thread that gets little CPU is still
//!   stopped); else the deadline moves by the CPU budget left ([`verdict`]).
//!
//! So a decision is stopped after `decision_timeout` of its own CPU time
//! (the time before its first tick is not counted: at most
//! [`super::ticker::IDLE_TICK`] of running), at most [`WALL_CAP`] ×
//! `decision_timeout` of wall time after its first tick, and never for the
//! time its thread was off the CPU before its first tick. Only a decision that crosses a tick and
//! *then* loses the CPU for longer than the cap can still time out without
//! having run for its timeout.

use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};
use wasmtime::UpdateDeadline;

use super::EPOCH_TICK;

/// The hard cap, as a multiple of `decision_timeout`, in wall time after a
/// decision's first tick.
pub const WALL_CAP: u32 = 4;

/// The deadline state of one store: what its epoch callback knows of the
/// decision running in it.
#[derive(Debug)]
pub struct DecisionClock {
    timeout: Duration,
    /// Wall and thread CPU time at the decision's first tick.
    start: Option<(Instant, Duration)>,
}

/// What the epoch callback does when a decision's deadline has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stop the guest: the decision timed out.
    Stop,
    /// Let it run for this much longer.
    Extend(Duration),
}

impl DecisionClock {
    /// The clock of a store whose decisions may use `timeout`.
    pub fn new(timeout: Duration) -> DecisionClock {
        DecisionClock {
            timeout,
            start: None,
        }
    }

    /// Before each decision: forget the previous one. Returns the first
    /// deadline, in ticks: the next one.
    pub fn restart(&mut self) -> u64 {
        self.start = None;
        1
    }

    /// The store's epoch callback: the decision's deadline has passed.
    pub fn on_deadline(&mut self) -> UpdateDeadline {
        let (now, cpu) = (Instant::now(), thread_cpu_time());
        let Some((start, start_cpu)) = self.start else {
            self.start = Some((now, cpu));
            return UpdateDeadline::Continue(ticks(self.timeout));
        };
        let used = cpu.saturating_sub(start_cpu);
        let wall = now.saturating_duration_since(start);
        match verdict(used, wall, self.timeout) {
            Verdict::Stop => UpdateDeadline::Interrupt,
            Verdict::Extend(left) => {
                if wall >= self.timeout {
                    tracing::debug!(
                        ?wall,
                        cpu = ?used,
                        "decision past its timeout in wall time, not in CPU time: extended"
                    );
                }
                UpdateDeadline::Continue(ticks_at_least(left))
            }
        }
    }
}

/// The rule, for a decision that has used `used` of CPU time and `wall` of
/// wall time since its first tick.
pub fn verdict(used: Duration, wall: Duration, timeout: Duration) -> Verdict {
    let cap = timeout.saturating_mul(WALL_CAP);
    if used >= timeout || wall >= cap {
        return Verdict::Stop;
    }
    Verdict::Extend((timeout - used).min(cap - wall))
}

/// Epoch ticks for a deadline of `timeout` from now (+1: the current tick
/// may be about to end).
pub fn ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_micros() / EPOCH_TICK.as_micros();
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1) + 1
}

/// Ticks covering at least `duration` (rounded up, at least 1).
fn ticks_at_least(duration: Duration) -> u64 {
    let ticks = duration.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    Duration::try_from(clock_gettime(ClockId::ThreadCPUTime)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(5);

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_guest_that_used_its_timeout_of_cpu_is_stopped() {
        assert_eq!(verdict(ms(5), ms(5), TIMEOUT), Verdict::Stop);
        assert_eq!(verdict(ms(6), ms(7), TIMEOUT), Verdict::Stop);
    }

    #[test]
    fn a_descheduled_guest_gets_the_cpu_budget_it_has_left() {
        // 9 ms of wall time, 1 ms of it running: 4 ms to go.
        assert_eq!(verdict(ms(1), ms(9), TIMEOUT), Verdict::Extend(ms(4)));
        // Not descheduled, not done: the rest of its timeout.
        assert_eq!(verdict(ms(2), ms(2), TIMEOUT), Verdict::Extend(ms(3)));
    }

    #[test]
    fn the_wall_cap_stops_a_guest_that_gets_little_cpu() {
        let cap = TIMEOUT * WALL_CAP;
        assert_eq!(verdict(ms(1), cap, TIMEOUT), Verdict::Stop);
        assert_eq!(verdict(Duration::ZERO, cap * 3, TIMEOUT), Verdict::Stop);
        // Near the cap, the extension ends at the cap.
        assert_eq!(verdict(ms(1), cap - ms(2), TIMEOUT), Verdict::Extend(ms(2)));
    }

    #[test]
    fn extensions_are_whole_ticks_of_at_least_the_time_left() {
        assert_eq!(ticks_at_least(Duration::from_micros(1)), 1);
        assert_eq!(ticks_at_least(ms(1)), 1);
        assert_eq!(ticks_at_least(Duration::from_micros(1001)), 2);
        assert_eq!(ticks_at_least(Duration::ZERO), 1);
        assert_eq!(ticks(ms(5)), 6);
    }

    #[test]
    fn the_first_deadline_starts_the_clock_and_grants_the_timeout() {
        let mut clock = DecisionClock::new(TIMEOUT);
        assert_eq!(clock.restart(), 1);
        assert!(matches!(
            clock.on_deadline(),
            UpdateDeadline::Continue(t) if t == ticks(TIMEOUT)
        ));
        assert!(clock.start.is_some());
        clock.restart();
        assert!(clock.start.is_none(), "each decision starts afresh");
    }

    /// The premise of the rule: a thread's CPU clock does not run while the
    /// thread is off the CPU (here asleep), and does run while it computes.
    #[test]
    fn thread_cpu_time_stands_still_while_off_the_cpu() {
        let before = thread_cpu_time();
        std::thread::sleep(ms(20));
        let asleep = thread_cpu_time() - before;
        assert!(asleep < ms(10), "asleep 20 ms, CPU clock moved {asleep:?}");

        let before = thread_cpu_time();
        let mut spins = 0u64;
        while thread_cpu_time() - before < ms(2) {
            spins = std::hint::black_box(spins + 1);
        }
        assert!(spins > 0);
    }

    /// A clock started by a decision that then computes for its timeout
    /// stops it, whatever the wall time.
    #[test]
    fn a_computing_guest_is_stopped_by_the_clock() {
        let mut clock = DecisionClock::new(TIMEOUT);
        clock.restart();
        let _ = clock.on_deadline();
        let before = thread_cpu_time();
        while thread_cpu_time() - before < TIMEOUT {
            std::hint::black_box(());
        }
        assert!(matches!(clock.on_deadline(), UpdateDeadline::Interrupt));
    }
}
