//! The rolling signals of one backend that need more than one atomic: the
//! error rate over a sliding window and the utilization the backend reports
//! about itself. Both are lock-free; a racing update may be attributed to
//! the neighbouring window or mix two reports' fields, which a balancing
//! signal tolerates.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Length of one error-rate bucket. The rate covers the current bucket and
/// the previous one: 10 to 20 seconds of traffic.
pub const ERROR_BUCKET_MS: u64 = 10_000;

/// Milliseconds since the process first asked (a monotonic, process-wide
/// clock that fits the atomics).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Requests and failures in two fixed buckets (current and previous),
/// each packed as `failures << 32 | requests` in one atomic.
#[derive(Debug, Default)]
pub struct ErrorWindow {
    bucket: AtomicU64,
    current: AtomicU64,
    previous: AtomicU64,
}

impl ErrorWindow {
    /// Counts one completed request at `now_ms`.
    pub fn record(&self, failed: bool, now_ms: u64) {
        self.rotate(now_ms / ERROR_BUCKET_MS);
        let add = 1 | (u64::from(failed) << 32);
        self.current.fetch_add(add, Ordering::Relaxed);
    }

    /// Failures per thousand requests over the window at `now_ms`.
    pub fn rate_permille(&self, now_ms: u64) -> u32 {
        let now = now_ms / ERROR_BUCKET_MS;
        let bucket = self.bucket.load(Ordering::Relaxed);
        let (current, previous) = match now.saturating_sub(bucket) {
            0 => (
                self.current.load(Ordering::Relaxed),
                self.previous.load(Ordering::Relaxed),
            ),
            1 => (0, self.current.load(Ordering::Relaxed)),
            _ => (0, 0),
        };
        let requests = (current & 0xFFFF_FFFF) + (previous & 0xFFFF_FFFF);
        let failures = (current >> 32) + (previous >> 32);
        if requests == 0 {
            return 0;
        }
        u32::try_from((failures * 1000 / requests).min(1000)).unwrap_or(1000)
    }

    /// Requests counted in the window at `now_ms` (for minimum-volume rules).
    pub fn requests(&self, now_ms: u64) -> u64 {
        let now = now_ms / ERROR_BUCKET_MS;
        let bucket = self.bucket.load(Ordering::Relaxed);
        match now.saturating_sub(bucket) {
            0 => {
                (self.current.load(Ordering::Relaxed) & 0xFFFF_FFFF)
                    + (self.previous.load(Ordering::Relaxed) & 0xFFFF_FFFF)
            }
            1 => self.current.load(Ordering::Relaxed) & 0xFFFF_FFFF,
            _ => 0,
        }
    }

    fn rotate(&self, now: u64) {
        let bucket = self.bucket.load(Ordering::Relaxed);
        if bucket == now {
            return;
        }
        // One thread wins the move to the new bucket; the others count into
        // whichever bucket is current when they add.
        if self
            .bucket
            .compare_exchange(bucket, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let old = self.current.swap(0, Ordering::AcqRel);
            let previous = if now == bucket + 1 { old } else { 0 };
            self.previous.store(previous, Ordering::Relaxed);
        }
    }
}

/// The last utilization report of a backend.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// `cpu << 16 | mem`, each in 1/10000 (0..=10000).
    packed: AtomicU32,
    /// `now_ms() + 1` when received; 0 = never.
    received: AtomicU64,
}

/// A utilization report as read back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// 0.0..=1.0.
    pub cpu: f32,
    /// 0.0..=1.0.
    pub memory: f32,
    /// Milliseconds since it was received.
    pub age_ms: u32,
}

impl LoadReport {
    /// Stores a report (values are clamped to 0..=1).
    pub fn store(&self, cpu: f32, memory: f32, now_ms: u64) {
        let scale = |v: f32| (v.clamp(0.0, 1.0) * 10_000.0).round() as u32;
        self.packed
            .store(scale(cpu) << 16 | scale(memory), Ordering::Relaxed);
        self.received.store(now_ms + 1, Ordering::Release);
    }

    /// The last report, if any.
    pub fn load(&self, now_ms: u64) -> Option<Load> {
        let received = self.received.load(Ordering::Acquire);
        if received == 0 {
            return None;
        }
        let packed = self.packed.load(Ordering::Relaxed);
        Some(Load {
            cpu: (packed >> 16) as f32 / 10_000.0,
            memory: (packed & 0xFFFF) as f32 / 10_000.0,
            age_ms: u32::try_from(now_ms.saturating_sub(received - 1)).unwrap_or(u32::MAX),
        })
    }
}

/// Parses a load header value: comma- or semicolon-separated `key=value`
/// pairs, `cpu` and `mem` (or `memory`) as fractions 0..1 or percentages
/// (`cpu=42%`). Unknown keys are ignored; a missing one counts as 0. None
/// when neither is present or a value does not parse.
pub fn parse_load(value: &str) -> Option<(f32, f32)> {
    let (mut cpu, mut mem) = (None, None);
    for pair in value.split([',', ';']) {
        let Some((key, raw)) = pair.split_once('=') else {
            continue;
        };
        let raw = raw.trim();
        let number = match raw.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f32>().ok()? / 100.0,
            None => raw.parse::<f32>().ok()?,
        };
        if !number.is_finite() {
            return None;
        }
        match key.trim().to_ascii_lowercase().as_str() {
            "cpu" => cpu = Some(number),
            "mem" | "memory" => mem = Some(number),
            _ => {}
        }
    }
    if cpu.is_none() && mem.is_none() {
        return None;
    }
    Some((cpu.unwrap_or(0.0), mem.unwrap_or(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_covers_two_buckets_then_forgets() {
        let w = ErrorWindow::default();
        for i in 0..10 {
            w.record(i < 3, 1_000);
        }
        assert_eq!(w.rate_permille(1_000), 300);
        // Next bucket: the previous one still counts.
        w.record(false, ERROR_BUCKET_MS + 5);
        w.record(false, ERROR_BUCKET_MS + 5);
        assert_eq!(w.rate_permille(ERROR_BUCKET_MS + 5), 250);
        assert_eq!(w.requests(ERROR_BUCKET_MS + 5), 12);
        // Two buckets later only the last one counts; three later nothing.
        assert_eq!(w.rate_permille(2 * ERROR_BUCKET_MS + 1), 0);
        assert_eq!(w.requests(2 * ERROR_BUCKET_MS + 1), 2);
        assert_eq!(w.requests(3 * ERROR_BUCKET_MS + 1), 0);
    }

    #[test]
    fn error_rate_after_a_long_pause_starts_fresh() {
        let w = ErrorWindow::default();
        w.record(true, 0);
        w.record(false, 10 * ERROR_BUCKET_MS);
        assert_eq!(w.rate_permille(10 * ERROR_BUCKET_MS), 0);
    }

    #[test]
    fn load_report_round_trips_and_ages() {
        let r = LoadReport::default();
        assert_eq!(r.load(5), None);
        r.store(0.42, 1.7, 100);
        let load = r.load(350).unwrap();
        assert!((load.cpu - 0.42).abs() < 1e-4);
        assert_eq!(load.memory, 1.0);
        assert_eq!(load.age_ms, 250);
    }

    #[test]
    fn load_header_forms() {
        assert_eq!(parse_load("cpu=0.42, mem=0.61"), Some((0.42, 0.61)));
        assert_eq!(parse_load("mem=50%; cpu=25%"), Some((0.25, 0.5)));
        assert_eq!(parse_load("cpu=0.9"), Some((0.9, 0.0)));
        assert_eq!(parse_load("gpu=1"), None);
        assert_eq!(parse_load("cpu=high"), None);
        assert_eq!(parse_load(""), None);
    }
}
