//! Counters and latency histograms for `/metrics` (Prometheus text format, written by hand).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// A latency histogram: cumulative counts per bucket, sum and count.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, n) in BUCKETS.iter().zip(&mut self.buckets) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// The gateway's metrics. Shared by the engine (statements) and the kernel (compiles).
#[derive(Debug, Default)]
pub struct Metrics {
    /// `(name, labels)` → histogram; labels already formatted (`language="rust",outcome="ok"`).
    histograms: Mutex<BTreeMap<(&'static str, String), Histogram>>,
}

impl Metrics {
    /// Records one observation of histogram `name` with `labels` (`key="value",...`).
    pub fn observe(&self, name: &'static str, labels: String, elapsed: Duration) {
        let mut h = self.histograms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        h.entry((name, labels)).or_default().observe(elapsed.as_secs_f64());
    }

    /// The histograms in Prometheus text format, each with `# HELP` from `help`.
    pub fn render(&self, out: &mut String, help: &[(&str, &str)]) {
        let h = self.histograms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut last = "";
        for ((name, labels), hist) in h.iter() {
            if *name != last {
                let text = help.iter().find(|(n, _)| n == name).map_or("", |(_, t)| t);
                let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} histogram");
                last = name;
            }
            let sep = if labels.is_empty() { "" } else { "," };
            for (bound, n) in BUCKETS.iter().zip(hist.buckets) {
                let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", hist.count);
            let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
            let _ = writeln!(out, "{name}_sum{braces} {}", hist.sum);
            let _ = writeln!(out, "{name}_count{braces} {}", hist.count);
        }
    }
}

/// Prometheus labels, `key="value",...`, with each value escaped as the text format requires
/// (`\\`, `\"` and `\n`): a user's name is a label value, and may hold any of them.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        let value = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = write!(out, "{}{key}=\"{value}\"", if i == 0 { "" } else { "," });
    }
    out
}

/// A Prometheus gauge or counter with labels.
pub fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let m = Metrics::default();
        m.observe("t_seconds", "kind=\"a\"".into(), Duration::from_millis(3));
        m.observe("t_seconds", "kind=\"a\"".into(), Duration::from_secs(2));
        let mut out = String::new();
        m.render(&mut out, &[("t_seconds", "test")]);
        assert!(out.starts_with("# HELP t_seconds test\n# TYPE t_seconds histogram\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{kind=\"a\",le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{kind=\"a\",le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("t_seconds_count{kind=\"a\"} 2\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("a", "x"), ("b", "q\"b\\s\nn")]), "a=\"x\",b=\"q\\\"b\\\\s\\nn\"");
    }
}
