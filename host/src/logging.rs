//! The process's own log lines: one record per line on stderr, as text
//! (colour only on a terminal) or JSON ([`LogFormat`]), and a limiter for
//! lines that a failing policy would otherwise repeat per request
//! ([`RepeatLimiter`]).
//!
//! Filter: `RUST_LOG` when set (`RUST_LOG=wasmroute=debug`), else
//! [`DEFAULT_FILTER`]: wasmroute at `info`, its dependencies at `warn`.

use std::fmt::Write as _;
use std::io::{self, IsTerminal as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The filter without `RUST_LOG`: dependencies only when they warn.
pub const DEFAULT_FILTER: &str = "warn,wasmroute=info";

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL target: message key=value ...`, one line each.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`,
    /// `message` and each field by name.
    Json,
}

/// Installs the global subscriber: stderr, `RUST_LOG` or
/// [`DEFAULT_FILTER`], `format`.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_FILTER.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(OneLine);
    match format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.event_format(JsonLines).init(),
    }
}

/// Writes each record to stderr with its inner line breaks escaped, so a
/// multi-line value (an error chain, a config error list) stays one line.
#[derive(Debug, Clone, Copy)]
struct OneLine;

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLineWriter;

    fn make_writer(&'a self) -> OneLineWriter {
        OneLineWriter
    }
}

/// See [`OneLine`]; the formatter hands it one whole record per write.
struct OneLineWriter;

impl io::Write for OneLineWriter {
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        io::stderr().lock().write_all(&one_line(record))?;
        Ok(record.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `record` with its line breaks escaped (`\n`), ending in one newline.
fn one_line(record: &[u8]) -> Vec<u8> {
    let body = record.strip_suffix(b"\n").unwrap_or(record);
    let mut line = Vec::with_capacity(record.len() + 8);
    for &byte in body {
        match byte {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            _ => line.push(byte),
        }
    }
    line.push(b'\n');
    line
}

/// The JSON event format (the offline registry has no `tracing-serde`,
/// which tracing-subscriber's own `json` feature needs).
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":");
        push_json_string(&mut line, &timestamp);
        line.push_str(",\"level\":");
        push_json_string(&mut line, meta.level().as_str());
        line.push_str(",\"target\":");
        push_json_string(&mut line, meta.target());
        let mut fields = JsonFields { line };
        event.record(&mut fields);
        let mut line = fields.line;
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// Appends each field as `,"name":value`.
struct JsonFields {
    line: String,
}

impl JsonFields {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        push_json_string(&mut self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_string(&mut self.line, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        push_json_string(&mut self.line, &format!("{value:?}"));
    }
}

/// `text` as a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Lets the first of a run of repeated log lines through, then at most
/// one per `interval`, which carries how many were suppressed since the
/// previous one. Lock-free; costs a clock read per call, so it belongs on
/// failure paths only.
#[derive(Debug)]
pub struct RepeatLimiter {
    interval: Duration,
    start: Instant,
    /// Milliseconds since `start` of the last line let through, plus one
    /// (0: none yet).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RepeatLimiter {
    /// A limiter letting one line per `interval` through.
    pub fn new(interval: Duration) -> RepeatLimiter {
        RepeatLimiter {
            interval,
            start: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log this one, saying `n` were suppressed before it;
    /// `None`: suppressed (and counted).
    pub fn admit(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now - last >= self.interval.as_millis() as u64;
        let won = due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if won {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_passes_and_repeats_are_counted() {
        let limiter = RepeatLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.admit(), Some(0));
        for _ in 0..1000 {
            assert_eq!(limiter.admit(), None);
        }
        assert_eq!(limiter.suppressed.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn after_the_interval_one_line_passes_with_the_count() {
        let limiter = RepeatLimiter::new(Duration::ZERO);
        assert_eq!(limiter.admit(), Some(0));
        // A zero interval: every call is due again.
        assert_eq!(limiter.admit(), Some(0));
        let limiter = RepeatLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.admit(), Some(0));
        assert_eq!(limiter.admit(), None);
        assert_eq!(limiter.admit(), None);
        // Pretend the interval passed: the next line reports the two.
        limiter.last.store(1, Ordering::Relaxed);
        let limiter = RepeatLimiter {
            start: Instant::now() - Duration::from_secs(7200),
            ..limiter
        };
        assert_eq!(limiter.admit(), Some(2));
        assert_eq!(limiter.admit(), None);
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn a_multi_line_record_is_written_as_one_line() {
        assert_eq!(
            one_line(b"refused: first\nsecond\r\n\n"),
            b"refused: first\\nsecond\\r\\n\n"
        );
        assert_eq!(one_line(b"plain\n"), b"plain\n");
    }
}
