//! The Prometheus text exposition format 0.0.4: the one writer behind every family on the
//! agent's `/metrics` (host and node_exporter families, the balancer's, the DNS server's), so
//! escaping, number spelling and the HELP/TYPE header are decided once.
//!
//! This is the format node_exporter serves by default and the one `promtool check metrics`
//! reads. The Prometheus project's Rust client (`prometheus-client`) writes OpenMetrics
//! only, which Debian's promtool refuses (`unknown metric type "unknown"`) and which names
//! a counter's family without `_total`, unlike node_exporter's metadata: see
//! `docs/ARCHITECTURE.md`.

use std::fmt::Write as _;

/// The content type Prometheus expects for text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The TYPE of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (reset at restart); the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Of no known type (node_exporter's choice for raw kernel counters such as vmstat's).
    Untyped,
}

impl Kind {
    /// The word on the TYPE line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Untyped => "untyped",
        }
    }
}

/// A sample value: integers are written exactly, floats in Prometheus's spelling (`NaN`,
/// `+Inf`, `-Inf`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An exact count.
    Int(u64),
    /// Anything else.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(u64::from(v))
    }
}

/// One exposition text being written: a family's header ([`Exposition::family`]) then its
/// samples ([`Exposition::sample`]), family after family. Each family must be written once,
/// with all its samples together; the writer does not reorder.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

// Writing into a String cannot fail, so the `fmt::Result`s below are ignored.
impl Exposition {
    /// An empty exposition with room for `bytes` of text.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            out: String::with_capacity(bytes),
        }
    }

    /// Starts a family: its HELP (escaped) and TYPE lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the family begun last: its name, labels (values escaped) and value.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match value.into() {
            Value::Int(v) => {
                let _ = write!(self.out, "{v}");
            }
            Value::Float(v) if v.is_nan() => self.out.push_str("NaN"),
            Value::Float(v) if v == f64::INFINITY => self.out.push_str("+Inf"),
            Value::Float(v) if v == f64::NEG_INFINITY => self.out.push_str("-Inf"),
            Value::Float(v) => {
                let _ = write!(self.out, "{v}");
            }
        }
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// The finished text.
    pub fn into_text(self) -> String {
        self.out
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
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

    #[test]
    fn a_family_is_help_type_then_samples_with_escaped_labels() {
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "Lines \\ of\ntext.");
        e.sample("x_total", &[("path", "a\"b\\c\nd"), ("k", "v")], 3u64);
        e.sample("x_total", &[], true);
        assert_eq!(
            e.into_text(),
            "# HELP x_total Lines \\\\ of\\ntext.\n# TYPE x_total counter\n\
             x_total{path=\"a\\\"b\\\\c\\nd\",k=\"v\"} 3\nx_total 1\n"
        );
    }

    #[test]
    fn floats_are_spelled_as_prometheus_reads_them() {
        let mut e = Exposition::default();
        e.family("g", Kind::Gauge, "G.");
        for v in [0.25, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e21, 1e-7] {
            e.sample("g", &[], v);
        }
        e.single("u", Kind::Untyped, "U.", 18_446_744_073_709_551_615u64);
        let text = e.into_text();
        let values: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(' ').nth(1))
            .collect();
        assert_eq!(
            values,
            [
                "0.25",
                "NaN",
                "+Inf",
                "-Inf",
                "1000000000000000000000",
                "0.0000001",
                "18446744073709551615"
            ]
        );
        assert!(text.contains("# TYPE u untyped\n"));
    }
}
