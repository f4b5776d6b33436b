//! Passive health checking (outlier detection): ejecting a backend that
//! fails live traffic, without waiting for an active check.
//!
//! Rules, per pool (`[pools.passive]`, see `docs/config.md`):
//! - **consecutive failures**: `consecutive_failures` failures in a row
//!   (connect failure, reset before the response head, response or idle
//!   timeout, any 5xx) eject the backend. A success resets the count.
//! - **error rate**: when `error_rate_percent` is set, a failure that
//!   brings the backend's failure share over the error window (10-20 s,
//!   [`crate::pool::ErrorWindow`]) above it ejects the backend, provided
//!   the window holds at least `min_requests` requests. After a return the
//!   rule waits one full window, so the failures that caused an ejection
//!   do not cause the next one.
//! - **back-off**: the n-th ejection in a row lasts `ejection_time * 2^(n-1)`,
//!   capped at `max_ejection_time`; a backend that stayed in for
//!   `max_ejection_time` starts over at `ejection_time`.
//! - **cap**: at most `max_ejected_percent` of the pool's backends (rounded
//!   down) are ejected at once; a backend that would go over the cap stays
//!   in (logged once) so a pool-wide blip does not black-hole the pool.
//! - **return**: when the pool has no active check, a backend returns
//!   once its ejection time is over (the pool's sweeper task does it).
//!   With one, the checker lets it back in at the first passing check
//!   after that time, or earlier: `rise` passing checks in a row during
//!   the ejection end it (`active::ReturnStreak`), so a backend that was
//!   restarted is back within a few intervals, not after `ejection_time`.
//!
//! Cost on the request path: a success is one relaxed load (and a store
//! only when a failure streak ends); a failure is one `fetch_add`, plus the
//! error-window read when the rate rule is on. Ejecting takes a per-pool
//! flag with a compare-exchange (never waits: a failure that finds another
//! ejection in progress is simply not acted on; the next one is).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::config::PassiveConfig;
use crate::events::{HealthChange, ServerEvent};
use crate::pool::{BackendStats, ERROR_BUCKET_MS, now_ms};

/// Per-backend passive-health state, kept in [`BackendStats`] so it
/// survives a config reload like the other signals.
#[derive(Debug, Default)]
pub struct OutlierState {
    /// Failures in a row.
    consecutive: AtomicU32,
    /// When the current ejection ends (`now_ms`), meaningful while ejected.
    until_ms: AtomicU64,
    /// Ejections in a row (the back-off level); 0 = never ejected.
    ejections: AtomicU32,
    /// When the backend last returned from an ejection (`now_ms + 1`; 0 = never).
    returned_ms: AtomicU64,
    /// The cap kept this backend in, and that was logged.
    cap_logged: AtomicBool,
}

impl OutlierState {
    /// Failures in a row right now.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }
    /// When the current ejection ends (milliseconds of [`now_ms`]).
    pub fn ejected_until_ms(&self) -> u64 {
        self.until_ms.load(Ordering::Relaxed)
    }
    /// Ejections in a row (the back-off level).
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }
}

/// How a request to a backend failed, for the ejection log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The backend answered with this 5xx status.
    Status(u16),
    /// No connection could be made.
    Connect,
    /// The connection failed before a response head (reset, closed).
    Broken,
    /// No response head within `response_timeout`.
    Timeout,
    /// The response body paused longer than `idle_timeout`.
    Idle,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(status) => write!(f, "status {status}"),
            Failure::Connect => f.write_str("connect failed"),
            Failure::Broken => f.write_str("connection failed before the response"),
            Failure::Timeout => f.write_str("response timeout"),
            Failure::Idle => f.write_str("response body idle timeout"),
        }
    }
}

/// Why a backend is ejected.
enum Reason {
    Consecutive { failures: u32, last: Failure },
    Rate { permille: u32, requests: u64 },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Consecutive { failures, last } => {
                write!(f, "{failures} failures in a row (last: {last})")
            }
            Reason::Rate { permille, requests } => write!(
                f,
                "error rate {}.{}% over the last {requests} requests",
                permille / 10,
                permille % 10
            ),
        }
    }
}

/// The passive-health side of one pool: its rules and its members' state.
/// Every backend of the pool holds it; it holds the members' stats (not
/// the backends), so there is no cycle.
#[derive(Debug)]
pub struct Outlier {
    config: Option<PassiveConfig>,
    pool: String,
    members: Vec<(SocketAddr, Arc<BackendStats>)>,
    /// Whether the pool has an active check (which then decides returns).
    active_checks: bool,
    /// Taken while one ejection is decided (cap check + eject).
    ejecting: AtomicBool,
    /// Wakes the pool's sweeper when an ejection starts.
    wake: Notify,
    /// Where health changes are announced (set when the pool starts serving).
    events: OnceLock<broadcast::Sender<ServerEvent>>,
}

impl Outlier {
    /// The passive-health state of a pool with these members.
    pub fn new(
        pool: &str,
        config: Option<PassiveConfig>,
        active_checks: bool,
        members: Vec<(SocketAddr, Arc<BackendStats>)>,
    ) -> Outlier {
        Outlier {
            config,
            pool: pool.to_owned(),
            members,
            active_checks,
            ejecting: AtomicBool::new(false),
            wake: Notify::new(),
            events: OnceLock::new(),
        }
    }

    /// Announces this pool's health changes on `events` from now on.
    pub fn announce_to(&self, events: broadcast::Sender<ServerEvent>) {
        let _ = self.events.set(events);
    }

    /// Announces a health change of a member (the caller logs it).
    pub fn announce(&self, backend: SocketAddr, change: HealthChange, reason: String) {
        if let Some(events) = self.events.get() {
            let _ = events.send(ServerEvent::BackendHealth {
                pool: self.pool.clone(),
                backend,
                change,
                reason,
            });
        }
    }

    /// The rules; none when passive checking is off.
    pub fn config(&self) -> Option<&PassiveConfig> {
        self.config.as_ref()
    }

    /// How many backends may be ejected at once.
    pub fn cap(&self) -> usize {
        self.config.map_or(0, |c| {
            self.members.len() * c.max_ejected_percent as usize / 100
        })
    }

    /// Counts a request that got a response head that is not a failure.
    #[inline]
    pub fn record_success(&self, stats: &BackendStats) {
        if self.config.is_some() && stats.outlier.consecutive.load(Ordering::Relaxed) != 0 {
            stats.outlier.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failed request and ejects the backend if a rule says so.
    /// `now` is [`now_ms`] (the caller has it already).
    pub fn record_failure(
        &self,
        stats: &BackendStats,
        address: SocketAddr,
        failure: Failure,
        now: u64,
    ) {
        let Some(config) = &self.config else { return };
        let state = &stats.outlier;
        let failures = state.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if stats.ejected() {
            return;
        }
        if config.consecutive_failures != 0 && failures >= config.consecutive_failures {
            let reason = Reason::Consecutive {
                failures,
                last: failure,
            };
            self.try_eject(config, stats, address, &reason, now);
            return;
        }
        if config.error_rate_percent == 0 {
            return;
        }
        let returned = state.returned_ms.load(Ordering::Relaxed);
        if returned != 0 && now.saturating_sub(returned - 1) < 2 * ERROR_BUCKET_MS {
            return;
        }
        let requests = stats.errors.requests(now);
        if requests < u64::from(config.min_requests) {
            return;
        }
        let permille = stats.errors.rate_permille(now);
        if permille > config.error_rate_percent * 10 {
            let reason = Reason::Rate { permille, requests };
            self.try_eject(config, stats, address, &reason, now);
        }
    }

    fn try_eject(
        &self,
        config: &PassiveConfig,
        stats: &BackendStats,
        address: SocketAddr,
        reason: &Reason,
        now: u64,
    ) {
        if self
            .ejecting
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.eject_locked(config, stats, address, reason, now);
        self.ejecting.store(false, Ordering::Release);
    }

    fn eject_locked(
        &self,
        config: &PassiveConfig,
        stats: &BackendStats,
        address: SocketAddr,
        reason: &Reason,
        now: u64,
    ) {
        if stats.ejected() {
            return;
        }
        let state = &stats.outlier;
        let ejected = self.members.iter().filter(|(_, s)| s.ejected()).count();
        let cap = self.cap();
        if ejected >= cap {
            if !state.cap_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    pool = %self.pool, backend = %address, %reason, ejected, cap,
                    "backend not ejected: the pool is at its ejection cap (max_ejected_percent)"
                );
            }
            return;
        }
        let returned = state.returned_ms.load(Ordering::Relaxed);
        let max_ms = millis(config.max_ejection_time);
        let stayed_long = returned != 0 && now.saturating_sub(returned - 1) >= max_ms;
        let level = if stayed_long {
            1
        } else {
            state.ejections.load(Ordering::Relaxed).saturating_add(1)
        };
        let time = ejection_time(config, level);
        state.ejections.store(level, Ordering::Relaxed);
        state.until_ms.store(now + millis(time), Ordering::Relaxed);
        state.consecutive.store(0, Ordering::Relaxed);
        state.cap_logged.store(false, Ordering::Relaxed);
        stats.set_ejected(true);
        stats.ejections.inc();
        self.wake.notify_one();
        tracing::warn!(
            pool = %self.pool, backend = %address, %reason, ejection = level, duration = ?time,
            "backend ejected"
        );
        let reason = format!("{reason}; ejection {level} for {time:?}");
        self.announce(address, HealthChange::Ejected, reason);
    }

    /// Lets an ejected backend back in (its time is over, or its active
    /// checks passed; see the module docs), logged and announced.
    pub fn release(&self, stats: &BackendStats, address: SocketAddr, why: &str) {
        if !stats.ejected() {
            return;
        }
        let state = &stats.outlier;
        state.consecutive.store(0, Ordering::Relaxed);
        state.returned_ms.store(now_ms() + 1, Ordering::Relaxed);
        stats.set_ejected(false);
        tracing::info!(pool = %self.pool, backend = %address, reason = why, "backend returned from ejection");
        self.announce(address, HealthChange::Returned, why.to_owned());
    }

    /// Whether `stats`' ejection time is over at `now`.
    pub fn ejection_over(stats: &BackendStats, now: u64) -> bool {
        stats.ejected() && now >= stats.outlier.until_ms.load(Ordering::Relaxed)
    }

    /// The pool's sweeper: returns ejected backends when their time is
    /// over. Only for pools without an active check (with one, the checker
    /// returns them). Runs until aborted.
    pub async fn sweep(self: Arc<Self>) {
        if self.active_checks || self.config.is_none() {
            return;
        }
        loop {
            let now = now_ms();
            let mut next: Option<u64> = None;
            for (address, stats) in &self.members {
                if !stats.ejected() {
                    continue;
                }
                let until = stats.outlier.until_ms.load(Ordering::Relaxed);
                if now >= until {
                    self.release(stats, *address, "ejection time over");
                } else {
                    next = Some(next.map_or(until, |n| n.min(until)));
                }
            }
            match next {
                Some(until) => {
                    let wait = Duration::from_millis(until - now);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }
}

/// `ejection_time * 2^(level-1)`, capped at `max_ejection_time`.
fn ejection_time(config: &PassiveConfig, level: u32) -> Duration {
    let factor = 1u32
        .checked_shl(level.saturating_sub(1))
        .unwrap_or(u32::MAX);
    config
        .ejection_time
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(config.max_ejection_time)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PassiveConfig {
        PassiveConfig {
            consecutive_failures: 3,
            error_rate_percent: 0,
            min_requests: 4,
            ejection_time: Duration::from_secs(1),
            max_ejection_time: Duration::from_secs(5),
            max_ejected_percent: 50,
        }
    }

    fn outlier(n: usize, config: PassiveConfig) -> Outlier {
        let members = (0..n)
            .map(|i| {
                let address: SocketAddr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
                (address, Arc::new(BackendStats::default()))
            })
            .collect();
        Outlier::new("web", Some(config), false, members)
    }

    fn fail(o: &Outlier, i: usize, times: u32, now: u64) {
        let (address, stats) = &o.members[i];
        for _ in 0..times {
            o.record_failure(stats, *address, Failure::Status(500), now);
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let c = config();
        let times: Vec<u64> = (1..=5).map(|l| millis(ejection_time(&c, l))).collect();
        assert_eq!(times, [1000, 2000, 4000, 5000, 5000]);
        assert_eq!(millis(ejection_time(&c, 100)), 5000);
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets() {
        let o = outlier(4, config());
        fail(&o, 0, 2, 10);
        o.record_success(&o.members[0].1);
        fail(&o, 0, 2, 10);
        assert!(!o.members[0].1.ejected());
        fail(&o, 0, 1, 10);
        let stats = &o.members[0].1;
        assert!(stats.ejected());
        assert!(!stats.healthy());
        assert_eq!(stats.outlier.ejected_until_ms(), 1010);
        assert_eq!(stats.outlier.ejections(), 1);
        assert!(!Outlier::ejection_over(stats, 1009));
        assert!(Outlier::ejection_over(stats, 1010));
    }

    #[test]
    fn cap_holds_at_half_the_pool_rounded_down() {
        let o = outlier(3, config());
        assert_eq!(o.cap(), 1);
        for i in 0..3 {
            fail(&o, i, 3, 10);
        }
        let ejected = o.members.iter().filter(|(_, s)| s.ejected()).count();
        assert_eq!(ejected, 1);
        // A single-backend pool is never ejected at 50%.
        let single = outlier(1, config());
        fail(&single, 0, 10, 10);
        assert!(!single.members[0].1.ejected());
        // Releasing one makes room for another.
        let (address, stats) = &o.members[0];
        o.release(stats, *address, "test");
        fail(&o, 1, 3, 20);
        assert!(o.members[1].1.ejected());
    }

    #[test]
    fn repeated_ejections_back_off_and_start_over_after_a_long_stay() {
        let o = outlier(2, config());
        let (address, stats) = (o.members[0].0, Arc::clone(&o.members[0].1));
        fail(&o, 0, 3, 0);
        assert_eq!(stats.outlier.ejected_until_ms(), 1000);
        o.release(&stats, address, "test");
        let now = now_ms();
        fail(&o, 0, 3, now);
        assert_eq!(stats.outlier.ejections(), 2);
        assert_eq!(stats.outlier.ejected_until_ms(), now + 2000);
        o.release(&stats, address, "test");
        // Back in for longer than max_ejection_time: level 1 again.
        let later = now_ms() + 5_001;
        fail(&o, 0, 3, later);
        assert_eq!(stats.outlier.ejections(), 1);
        assert_eq!(stats.outlier.ejected_until_ms(), later + 1000);
    }

    #[test]
    fn error_rate_rule_needs_min_requests() {
        let mut c = config();
        c.consecutive_failures = 0;
        c.error_rate_percent = 50;
        let o = outlier(2, c);
        let (address, stats) = (o.members[0].0, Arc::clone(&o.members[0].1));
        let now = 5;
        // 2 failures of 3 requests: 66% but under min_requests (4).
        for failed in [true, false, true] {
            stats.errors.record(failed, now);
            if failed {
                o.record_failure(&stats, address, Failure::Connect, now);
            }
        }
        assert!(!stats.ejected());
        stats.errors.record(true, now);
        o.record_failure(&stats, address, Failure::Connect, now);
        assert!(stats.ejected(), "3 of 4 failed: 75% > 50%");
    }

    #[test]
    fn disabled_passive_never_ejects() {
        let stats = Arc::new(BackendStats::default());
        let address: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let o = Outlier::new("web", None, false, vec![(address, Arc::clone(&stats))]);
        for _ in 0..100 {
            o.record_failure(&stats, address, Failure::Connect, 1);
        }
        assert!(!stats.ejected());
        assert_eq!(stats.outlier.consecutive_failures(), 0);
    }
}
