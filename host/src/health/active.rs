//! Active health checks: one task per backend of a pool with
//! `[pools.health]`, probing it every `interval` (plus jitter) and moving
//! it up or down through the rise/fall state machine ([`RiseFall`]).
//!
//! A probe is a TCP connect (no `path`), a send/expect script
//! (`steps`: [`super::script`]) or an HTTP/1.1 `GET path`
//! on a fresh connection (`Host: <backend address>`, `Connection: close`,
//! `User-Agent: wasmroute-health`) that passes when the status is within
//! `expect_status` and, with `expect_body`, the first 64 KiB of the body
//! contain it. The whole probe (connect included) must finish within
//! `timeout`. An HTTP probe's response may carry the pool's load header;
//! it updates the backend's utilization like a proxied response does.
//!
//! With `on_down = "close-connections"`, marking a backend down raises its
//! cut signal (`crate::pool::cut`), and while it is down every check closes
//! its idle pooled connections (also those that exchanges in flight at the
//! cut gave back since).
//!
//! The checker also ends a passive ejection early: `rise` passing checks
//! in a row, each run entirely while the backend was ejected, let it back
//! in long before its ejection time is over ([`ReturnStreak`]). Envoy does
//! the same on a single passing check by default; asking for `rise` uses
//! the pool's own measure of how much evidence makes a backend trusted
//! again, so one lucky probe of a flapping backend is not enough (and
//! `rise = 1` behaves like Envoy).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{HealthChange, script};
use crate::config::HealthConfig;
use crate::pool::outlier::Outlier;
use crate::pool::{Backend, now_ms};
use crate::random::Xorshift64Star;
use crate::upstream::MaybeTls;

/// How much of a check response body is searched for `expect_body`.
const BODY_LIMIT: usize = 64 * 1024;

/// The rise/fall state machine of one backend.
///
/// The state is *up* or *down*; `streak` counts the results in a row that
/// disagree with it. `fall` failing checks in a row take an up backend
/// down; `rise` passing checks in a row bring a down backend up. A result
/// that agrees with the state resets the streak. A backend starts up (so
/// a new proxy serves at once; a dead backend is taken down by its first
/// `fall` checks, the first of which runs right away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    up: bool,
    streak: u32,
    rise: u32,
    fall: u32,
}

impl RiseFall {
    /// A machine in state `up`.
    pub fn new(up: bool, rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            up,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Whether the backend is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Feeds one check result; returns the new state when it changed.
    pub fn observe(&mut self, passed: bool) -> Option<bool> {
        if passed == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = passed;
        self.streak = 0;
        Some(passed)
    }
}

/// Counts the passing checks in a row that ran while the backend was
/// ejected (from before the probe started until after it ended), so that
/// a probe that was under way when the ejection began does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnStreak {
    passes: u32,
    rise: u32,
}

impl ReturnStreak {
    /// A streak that is complete at `rise` passes.
    pub fn new(rise: u32) -> ReturnStreak {
        ReturnStreak {
            passes: 0,
            rise: rise.max(1),
        }
    }

    /// Feeds one check result; `ejected_throughout` says whether the
    /// backend was ejected for the whole check. True when this check
    /// completes `rise` passes in a row during the ejection.
    pub fn observe(&mut self, ejected_throughout: bool, passed: bool) -> bool {
        if !(ejected_throughout && passed) {
            self.passes = 0;
            return false;
        }
        self.passes = self.passes.saturating_add(1);
        self.passes >= self.rise
    }
}

/// Checks one backend until aborted.
pub(super) async fn check_backend(
    backend: Arc<Backend>,
    outlier: Arc<Outlier>,
    config: Arc<HealthConfig>,
    pool: String,
) {
    let mut rng = Jitter::new(backend.stable_id);
    tokio::time::sleep(rng.below(config.jitter)).await;
    let stats = &backend.stats;
    let mut machine = RiseFall::new(stats.check_up(), config.rise, config.fall);
    let mut return_streak = ReturnStreak::new(config.rise);
    loop {
        let ejected_before = stats.ejected();
        let result = match tokio::time::timeout(config.timeout, probe(&backend, &config)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", config.timeout)),
        };
        let passed = result.is_ok();
        match passed {
            true => stats.checks_passed.inc(),
            false => stats.checks_failed.inc(),
        }
        match machine.observe(passed) {
            Some(true) => {
                stats.set_healthy(true);
                let reason = format!("{} passing health checks in a row", config.rise);
                tracing::info!(%pool, backend = %backend.address, %reason, "backend up");
                outlier.announce(backend.address, HealthChange::Up, reason);
            }
            Some(false) => {
                stats.set_healthy(false);
                let last = result.as_ref().err().map_or("", String::as_str);
                let reason = format!(
                    "{} failing health checks in a row (last: {last})",
                    config.fall
                );
                tracing::warn!(%pool, backend = %backend.address, %reason, "backend down");
                if backend.close_on_down {
                    stats.cut.raise();
                }
                outlier.announce(backend.address, HealthChange::Down, reason);
            }
            None => {}
        }
        if backend.close_on_down && !machine.is_up() {
            // Also those that exchanges in flight at the cut gave back.
            backend.conns.close_idle();
        }
        // The active state may have been changed by the previous config's
        // checker during a reload; this one's machine is the authority now.
        if stats.check_up() != machine.is_up() {
            stats.set_healthy(machine.is_up());
        }
        let streak_complete = return_streak.observe(ejected_before && stats.ejected(), passed);
        end_ejection(&backend, &outlier, &config, passed, streak_complete);
        if let Err(reason) = &result {
            tracing::debug!(%pool, backend = %backend.address, %reason, "health check failed");
        }
        let jitter = config.jitter;
        let wait = (config.interval + rng.below(jitter)).saturating_sub(jitter / 2);
        tokio::time::sleep(wait).await;
    }
}

/// Lets an ejected backend back in after a passing check: when its
/// ejection time is over, or when `streak_complete` (`rise` passes in a
/// row during the ejection) ends it early.
fn end_ejection(
    backend: &Backend,
    outlier: &Outlier,
    config: &HealthConfig,
    passed: bool,
    streak_complete: bool,
) {
    let stats = &backend.stats;
    if !passed || !stats.ejected() {
        return;
    }
    if Outlier::ejection_over(stats, now_ms()) {
        let why = "ejection time over and the health check passed";
        outlier.release(stats, backend.address, why);
    } else if streak_complete {
        let why = format!(
            "{} passing health checks in a row since the ejection",
            config.rise
        );
        outlier.release(stats, backend.address, &why);
    }
}

/// One probe; Err is why it failed. A TCP check only connects; an HTTP
/// check and a `steps` script speak to the backend as requests do (over
/// TLS for a pool with `[pools.tls]`), on `port` when set.
async fn probe(backend: &Backend, config: &HealthConfig) -> Result<(), String> {
    let target = match config.port {
        Some(port) => SocketAddr::new(backend.address.ip(), port),
        None => backend.address,
    };
    if !config.steps.is_empty() {
        let mut stream = open(backend, target).await?;
        return script::run(&mut stream, &config.steps).await;
    }
    let Some(path) = &config.path else {
        return TcpStream::connect(target)
            .await
            .map(drop)
            .map_err(|e| format!("connect: {e}"));
    };
    let stream = open(backend, target).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = Request::get(path.as_str())
        .header(header::HOST, backend.authority.as_str())
        .header(header::USER_AGENT, "wasmroute-health")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if let Some(value) = response.headers_mut().remove(&backend.load_header)
        && let Some((cpu, mem)) = value.to_str().ok().and_then(crate::pool::parse_load)
    {
        backend.stats.load.store(cpu, mem, now_ms());
    }
    let status = response.status().as_u16();
    let (low, high) = config.expect_status;
    if !(low..=high).contains(&status) {
        return Err(format!("status {status}, expected {low}-{high}"));
    }
    if let Some(expected) = &config.expect_body {
        let body = read_prefix(response.into_body()).await?;
        if !contains(&body, expected.as_bytes()) {
            return Err(format!("body does not contain {expected:?}"));
        }
    }
    drop(driver);
    Ok(())
}

/// A connection to `target` (the backend's address or its check port),
/// as the backend's connections are opened (PROXY header, TLS).
async fn open(backend: &Backend, target: SocketAddr) -> Result<MaybeTls, String> {
    (backend.conns.open_check(target).await).map_err(|e| format!("connect: {e}"))
}

/// The first [`BODY_LIMIT`] bytes of a body.
async fn read_prefix(mut body: hyper::body::Incoming) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while out.len() < BODY_LIMIT {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(format!("reading the body: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = BODY_LIMIT - out.len();
                    out.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
    Ok(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Aborts a task when dropped (a probe cut off by its timeout must not
/// leave its connection task behind).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Random delays for jitter, from the host's xorshift64*: checks only
/// need spreading, not good randomness. Seeded per backend and per
/// process start.
struct Jitter(Xorshift64Star);

impl Jitter {
    fn new(seed: u64) -> Jitter {
        Jitter(Xorshift64Star::from_entropy(seed))
    }

    /// A random duration in `0..=max`.
    fn below(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.0.next_u64() % (nanos + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_failures_in_a_row_take_it_down_and_rise_passes_bring_it_back() {
        let mut m = RiseFall::new(true, 3, 2);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(true), None, "a pass resets the failure streak");
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), Some(false));
        assert!(!m.is_up());
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(false), None, "a failure resets the pass streak");
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(true), Some(true));
        assert!(m.is_up());
    }

    #[test]
    fn thresholds_of_one_switch_at_once() {
        let mut m = RiseFall::new(true, 1, 1);
        assert_eq!(m.observe(false), Some(false));
        assert_eq!(m.observe(true), Some(true));
    }

    #[test]
    fn rise_passes_during_the_ejection_complete_the_return_streak() {
        let mut streak = ReturnStreak::new(3);
        assert!(!streak.observe(false, true), "not ejected: nothing to end");
        assert!(!streak.observe(true, true));
        assert!(!streak.observe(true, true));
        assert!(!streak.observe(true, false), "a failure starts over");
        assert!(!streak.observe(true, true));
        assert!(!streak.observe(true, true));
        assert!(streak.observe(true, true), "3 in a row");
        // A probe that began before the ejection does not count, and breaks
        // the streak like a failure.
        let mut streak = ReturnStreak::new(2);
        assert!(!streak.observe(true, true));
        assert!(!streak.observe(false, true));
        assert!(!streak.observe(true, true));
        assert!(streak.observe(true, true));
        assert!(
            ReturnStreak::new(1).observe(true, true),
            "rise = 1: at once"
        );
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut j = Jitter::new(42);
        let max = Duration::from_millis(10);
        for _ in 0..1000 {
            assert!(j.below(max) <= max);
        }
        assert_eq!(j.below(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: fine", b"ok"));
        assert!(contains(b"", b""));
    }
}
