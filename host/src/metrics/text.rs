//! The Prometheus text exposition format (version 0.0.4): `# HELP` and
//! `# TYPE` once per family, then its samples; histograms as cumulative
//! `_bucket{le="..."}` lines ending in `le="+Inf"`, then `_sum` and
//! `_count`. Durations are written in seconds.

use std::fmt::{Display, Write as _};

use super::HistogramSnapshot;

/// The content type of a scrape answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (names end in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

/// A scrape answer being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: its help text and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// One histogram of the current family (durations in seconds).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], snapshot: &HistogramSnapshot) {
        let mut cumulative = 0;
        for (index, count) in snapshot.counts.iter().enumerate() {
            cumulative += count;
            let le = match snapshot.bounds.get(index) {
                Some(&bound) => seconds(bound).to_string(),
                None => "+Inf".to_owned(),
            };
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", seconds(snapshot.sum_ns));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (index, (name, value)) in all.enumerate() {
            if index > 0 {
                self.out.push(',');
            }
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value);
            self.out.push('"');
        }
        self.out.push('}');
    }
}

/// Nanoseconds as seconds.
pub fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Histogram;

    #[test]
    fn families_samples_and_escaped_labels() {
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "Things.");
        e.sample("x_total", &[("a", "q\"b\\c\nd")], 3);
        e.sample("x_total", &[], 4);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"b\\\\c\\nd\"} 3\nx_total 4\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_in_seconds() {
        static BOUNDS: &[u64] = &[1_000_000, 500_000_000];
        let h = Histogram::new(BOUNDS);
        h.observe_ns(200_000);
        h.observe_ns(2_000_000_000);
        let mut e = Exposition::default();
        e.histogram("d_seconds", &[("p", "w")], &h.snapshot());
        assert_eq!(
            e.finish(),
            "d_seconds_bucket{p=\"w\",le=\"0.001\"} 1\n\
             d_seconds_bucket{p=\"w\",le=\"0.5\"} 1\n\
             d_seconds_bucket{p=\"w\",le=\"+Inf\"} 2\n\
             d_seconds_sum{p=\"w\"} 2.0002\n\
             d_seconds_count{p=\"w\"} 2\n"
        );
    }
}
